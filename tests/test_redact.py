"""Secret redaction (redact.py, docs/redaction.md): which names and texts are secrets', and that a
recording shows them as ``<redacted>`` everywhere a value or an event text is recorded — variables,
arguments, globals, attributes, dict entries, return values of functions named like secrets, IO and
exception messages — with the type kept, counted exactly in the metadata, switchable off and
extendable, the same with the compiled signature and without, in both formats."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import CONSOLE_SCRIPT, PROGRAMS, checked_trace, run_python
from timelapse.encoder import ValueEncoder
from timelapse.reader import iter_events
from timelapse.redact import REDACTED, Redactor, words_of

# -- names ---------------------------------------------------------------------------------------

#: Names of secrets: each default word, as a word in snake_case, camelCase, kebab and capitals,
#: two-word terms written every way, plurals.
SECRET_NAMES = [
    "password", "passwd", "secret", "token", "api_key", "apikey", "access_key", "private_key",
    "auth", "credential", "credentials", "session_id", "cookie",
    "db_password", "PASSWORD", "user_passwd", "client_secret", "apiToken", "access_token",
    "refreshToken", "X-Api-Key", "x-auth-token", "HTTP_COOKIE", "Set-Cookie", "apiKey", "API_KEY",
    "aws_access_key_id", "awsAccessKey", "privateKey", "PRIVATE_KEY", "sessionId", "SessionID",
    "auth_header", "basic-auth", "tokens", "api_keys", "secrets", "cookies", "password2",
    "github.token", "OAuthToken", "my password", "Authorization", "proxy_authorization",
]
#: Names that only contain a secret word (or are near one): shown.
PLAIN_NAMES = [
    "author", "authors", "tokenize", "tokenizer", "authority", "authenticate", "authorized",
    "secretary", "passwordless_allowed", "passport", "keyword", "session", "session_key",
    "access", "key", "api", "private", "cookiejar", "credentialing", "oauth", "tok", "pass",
    "id", "x", "_", "", "__dict__", "privacy_policy", "monkey", "tokenization",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert Redactor().secret_name(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_plain_names(name):
    assert not Redactor().secret_name(name)


def test_the_words_of_a_name():
    assert words_of("X-Api-Key") == ["x", "api", "key"]
    assert words_of("APIToken") == ["api", "token"]
    assert words_of("db_password2") == ["db", "password", "2"]
    assert words_of("getHTTPCookie") == ["get", "http", "cookie"]


def test_more_names_from_the_user():
    redactor = Redactor(names=["ssn", "card_number"])
    assert redactor.secret_name("user_ssn") and redactor.secret_name("cardNumber")
    assert redactor.secret_name("card_numbers") and not redactor.secret_name("card")
    assert redactor.secret_name("password")     # the defaults stay


def test_decisions_are_cached_and_bounded(monkeypatch):
    import timelapse.redact as redact

    monkeypatch.setattr(redact, "_CACHE_SIZE", 4)
    redactor = Redactor()
    for i in range(10):
        redactor.secret_name(f"name{i}")
    assert len(redactor.names) <= 4
    assert redactor.secret_name("password") and redactor.names["password"] is True


# -- forms ---------------------------------------------------------------------------------------

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
SECRET_TEXTS = [
    PEM,
    "-----BEGIN PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn",
    "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    "Bearer abcdefgh12345678",
    "Authorization: Bearer eyJ0eXAi.abc.def",
    "AKIAIOSFODNN7EXAMPLE",
    "key id ASIAIOSFODNN7EXAMPLE here",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "x" * 300 + " Bearer abcdefgh12345678",     # longer than the cached texts
]
PLAIN_TEXTS = [
    "", "hello", "Bearer", "the Bearer of bad news", "Bearer short", "AKIA", "AKIAshort",
    "AKIAIOSFODNN7EXAMPLEX",     # 17 characters after AKIA: not an access key id
    "eyJ", "eyJhbGciOiJIUzI1NiJ9", "-----BEGIN CERTIFICATE-----", "-----BEGIN PUBLIC KEY-----",
    "an ordinary sentence about tokens and passwords",
]


@pytest.mark.parametrize("text", SECRET_TEXTS)
def test_secret_texts(text):
    assert Redactor().secret_text(text)


@pytest.mark.parametrize("text", PLAIN_TEXTS)
def test_plain_texts(text):
    assert not Redactor().secret_text(text)


def test_user_patterns_match_texts_of_any_length():
    redactor = Redactor(patterns=[r"\b\d{3}-\d{2}-\d{4}\b"])
    assert redactor.secret_text("ssn 078-05-1120") and redactor.secret_text("078-05-1120")
    assert not redactor.secret_text("078-05-112")


def test_redact_text_cuts_only_the_secret():
    redactor = Redactor(patterns=["hunter2"])
    text = f"before {PEM} middle Bearer abcdefgh12345678 and hunter2 after"
    assert redactor.redact_text(text) == f"before {REDACTED} middle {REDACTED} and {REDACTED} after"
    assert redactor.cut == 3
    assert redactor.redact_text("nothing here") == "nothing here" and redactor.cut == 3


def test_io_follows_a_pem_block_written_piece_by_piece():
    redactor = Redactor()
    io = redactor.io()
    pieces = ["key:\n-----BEGIN EC PRIVATE KEY-----", "\n", "MHcCAQEEIB", "\n",
              "-----END EC PRIVATE KEY-----", " tail\n", "after\n"]
    out = [io.redact(1, piece) for piece in pieces]
    # The block's lines are cut, its line breaks kept; what follows its END line is shown.
    assert out == [f"key:\n{REDACTED}", "\n", REDACTED, "\n", REDACTED, " tail\n", "after\n"]
    assert redactor.cut == 1    # one block
    # Streams are followed apart: stdout's open block does not swallow stderr.
    io.redact(1, "-----BEGIN PRIVATE KEY-----")
    assert io.redact(2, "c3RpbGwga2V5\n") == "c3RpbGwga2V5\n"
    assert io.redact(1, "c3RpbGwga2V5\n") == REDACTED + "\n"
    # A line that is not a key's ends the block: a BEGIN line quoted in a message swallows nothing.
    assert io.redact(1, "retrying in 5 s\n") == "retrying in 5 s\n"
    assert io.redact(1, "c3RpbGwga2V5\n") == "c3RpbGwga2V5\n"


# -- the encoder -----------------------------------------------------------------------------------

def _encoder(**kw) -> ValueEncoder:
    types: list = []

    def register(kind, lang, fields=None):
        types.append((kind, lang, fields))
        return len(types) - 1

    enc = ValueEncoder(register, redactor=Redactor(**kw))
    enc.types = types   # type: ignore[attr-defined]
    return enc


def _texts(record) -> list:
    out = []
    stack = [record]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, str):
            out.append(x)
    return out


class Account:
    def __init__(self):
        self.owner = "ann"
        self.password = "pw-1"
        self.history = [("deposit", 3)]


class Slots:
    __slots__ = ("name", "api_key")

    def __init__(self):
        self.name = "s"
        self.api_key = "pw-2"


def _redacted_types(enc: ValueEncoder, record) -> list:
    """The type names of the redacted records in ``record``, depth first."""
    found = []
    stack = [record]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            if x.get("kind") == "Raw" and x.get("r") == REDACTED:
                found.append(enc.types[x["type_id"]][1])
            stack.extend(reversed(list(x.values())))
        elif isinstance(x, list):
            stack.extend(reversed(x))
    return found


def test_fields_and_dict_entries_named_like_secrets_are_redacted_with_their_type():
    enc = _encoder()
    value = {"user": Account(), "slots": Slots(), "Cookie": 12, "auth": {"token": "pw-3"},
             "plain": "shown", 7: "pw-not-a-name"}
    record = enc.encode(value)
    texts = _texts(record)
    assert not any(t.startswith("pw-") and t != "pw-not-a-name" for t in texts), texts
    assert "shown" in texts and "ann" in texts and "pw-not-a-name" in texts
    # The type is the value's own: the int under "Cookie" is a Raw record of type int, the dict
    # under "auth" one of type dict (nothing inside it is looked at).
    assert sorted(_redacted_types(enc, record)) == ["dict", "int", "str", "str"]
    assert enc.redactions == 4


def test_a_secret_dict_key_stops_the_fast_way_and_is_counted_once():
    enc = _encoder()
    # The Bearer value comes first: the fast way spells (and redacts) it, then meets the secret
    # key and gives up; the slow way spells it again. Counted once.
    value = {"Header": "Bearer abcdefgh12345678", "X-Api-Key": "k", "n": 1}
    texts = _texts(enc.encode(value))
    assert texts.count(REDACTED) == 2 and enc.redactions == 2
    assert "k" not in texts and "Header" in texts and "X-Api-Key" in texts


def test_a_reused_value_counts_its_redactions_at_each_step():
    enc = _encoder()
    account = Account()
    first = enc.encode_json(account)
    for _ in range(5):
        assert enc.encode_json(account) == first
    assert enc.reused > 0 and enc.redactions == 6


def test_without_a_redactor_nothing_is_redacted():
    enc = ValueEncoder(lambda *a: 0)
    assert REDACTED not in _texts(enc.encode({"password": "pw", "t": "Bearer abcdefgh12345678"}))
    assert enc.redactions == 0


def test_long_texts_are_searched_where_they_could_be_shown():
    enc = _encoder()
    far = "x" * 10_000 + " Bearer abcdefgh12345678"
    near = "x" * 100 + " Bearer abcdefgh12345678" + "y" * 10_000
    assert REDACTED not in _texts(enc.encode(far))      # clipped away: never shown
    texts = _texts(enc.encode(near))
    assert REDACTED in texts and not any("Bearer" in t for t in texts)


# -- recordings -------------------------------------------------------------------------------------

SECRET = re.compile(r"S3CRET-\d+")
SHOWN = {f"shown-{n}" for n in range(1, 8)}


def _record(tmp_path, fmt, *options, env=None, name="trace"):
    out = tmp_path / name
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "record", "-q", "--format", fmt, "-o", str(out), *options,
         str(PROGRAMS / "secrets_app.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONHASHSEED="0", **(env or {})))
    checked_trace(out)
    events = list(iter_events(out))
    metadata = json.loads((out / "trace_metadata.json").read_text())
    return result, events, metadata


def _redacted_in_values(events) -> int:
    # Each record once: a Call's arguments are written in the Call only (no Values repeat them).
    return sum(json.dumps(e).count(json.dumps(REDACTED)) for e in events
               if "Value" in e or "Return" in e or "Call" in e)


@pytest.mark.parametrize("fmt", ["json", "bin"])
def test_a_recording_holds_no_secret_and_counts_what_it_redacted(tmp_path, fmt):
    expected = run_python([str(PROGRAMS / "secrets_app.py")])
    result, events, metadata = _record(tmp_path, fmt)
    # The program sees its own secrets: what it prints is what it prints without the recorder.
    assert (result.returncode, result.stdout, result.stderr) == (0, expected.stdout, expected.stderr)
    assert "S3CRET15" in result.stdout
    text = json.dumps(events)
    assert SECRET.findall(text) == [] and "S3CRET15" not in text
    assert set(re.findall(r"shown-\d+", text)) == SHOWN    # names that only look like secrets'
    counts = metadata["redacted"]
    assert counts["values"] == _redacted_in_values(events) > 0
    io = [e["Event"]["content"] for e in events if "Event" in e]
    assert "token <redacted> ends\n" in io and "auth: <redacted>\n" in io and "after the key\n" in io
    assert "ValueError: could not log in with <redacted>" in io
    assert counts["in_events"] == 5     # AKIA, the PEM block, Bearer on stderr, the message twice
    # Every sort of place is covered: an argument, a global, an attribute, a key, a return value.
    names = {i: n for i, n in enumerate(e["VariableName"] for e in events if "VariableName" in e)}
    redacted_names = set()
    for e in events:
        if "Value" in e and e["Value"]["value"].get("r") == REDACTED:
            redacted_names.add(names[e["Value"]["variable_id"]])
    assert {"API_TOKEN", "db_password", "apiToken", "session_id", "password"} <= redacted_names
    # get_token() returns a secret: a function named like a secret's has its return value redacted.
    returns = [e["Return"]["return_value"] for e in events if "Return" in e]
    assert any(r.get("r") == REDACTED for r in returns)


def test_the_type_of_a_redacted_value_is_kept(tmp_path):
    _, events, _ = _record(tmp_path, "json")
    types = [e["Type"] for e in events if "Type" in e]
    names = [e["VariableName"] for e in events if "VariableName" in e]
    session_id = names.index("session_id")
    values = [e["Value"]["value"] for e in events if "Value" in e and e["Value"]["variable_id"] == session_id]
    assert values and all(v["r"] == REDACTED and types[v["type_id"]]["lang_type"] == "int" for v in values)


def test_no_redact_records_the_secrets(tmp_path):
    _, events, metadata = _record(tmp_path, "json", "--no-redact")
    assert "S3CRET-9" in json.dumps(events) and REDACTED not in json.dumps(events)
    assert "redacted" not in metadata and metadata["options"]["values"]["redact"] is False


@pytest.mark.parametrize("how", ["env", "config"])
def test_redaction_is_switched_off_in_every_layer(tmp_path, how):
    if how == "env":
        _, events, _ = _record(tmp_path, "json", env={"TIMELAPSE_REDACT": "0"})
    else:
        (tmp_path / "pyproject.toml").write_text("[tool.timelapse]\nredact = false\n")
        _, events, _ = _record(tmp_path, "json")
    assert "S3CRET-9" in json.dumps(events)


def test_user_names_and_patterns(tmp_path):
    _, events, metadata = _record(tmp_path, "json", "--redact-name", "user", "--redact-pattern", r"shown-[12]\b")
    text = json.dumps(events)
    assert "alice" not in text and "bob" not in text        # login(user, ...), Client(user, ...)
    assert "shown-1" not in text and "shown-2" not in text and "shown-3" in text
    assert SECRET.findall(text) == []


def test_compiled_and_pure_signatures_record_the_same(tmp_path):
    _, compiled, meta_c = _record(tmp_path, "json", name="c", env={"TIMELAPSE_PURE": "0"})
    _, pure, meta_p = _record(tmp_path, "json", name="p", env={"TIMELAPSE_PURE": "1"})
    assert compiled == pure and meta_c["redacted"] == meta_p["redacted"]


# -- what the first review found ---------------------------------------------------------------------

PIECES = '''
import os, sys
from enum import Enum

P = "SENT"
class Keys(Enum):
    API_KEY = P + "-enum"
    PLAIN = "shown-enum"

def main():
    k = Keys.API_KEY
    plain = Keys.PLAIN
    env = os.environ                   # its _data dict has bytes keys: names all the same
    has_password = False               # a bool or None under a secret's name holds no secret
    auth_required = None
    OAuthClient = "shown-oauth"        # OAuth is one word
    query = "user=ann&password=" + P + "-query"
    url = "https://ann:" + P + "-url@example.com/x"
    low = "bearer abcdef" + P + "-lower"
    print("Authorization:", "Bearer", "abcdef" + P + "-print")     # one event, four writes
    w = sys.stdout.write; w("-----BEGIN RSA PRIV"); w("ATE KEY-----\\nMIIEow" + P + "pem\\n-----END RSA PRIVATE KEY-----\\n")
    sys.stderr.write("Bearer "); sys.stderr.write("abcdefgh" + P + "-stderr\\n")    # one step each
    print("error: a key must start with -----BEGIN RSA PRIVATE KEY-----")
    print("retrying")
    print("done, shown-after")
    print("log: password=" + P + "-log token: " + P + "-log2 user=shown-user")
    raise ValueError("auth failed: Bearer abcdefgh" + P + "-uncaught")

main()
'''


def test_what_the_first_review_found(tmp_path):
    program = tmp_path / "pieces.py"
    program.write_text(PIECES)
    out = tmp_path / "trace"
    env = dict(os.environ, GITHUB_TOKEN="SENT-env1", AWS_SECRET_ACCESS_KEY="SENT-env2")
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "record", "-q", "--format", "json", "-o", str(out),
         "--redact-pattern", "SENT-pattern", str(program), "--token=SENT-arg1", "Bearer abcdefghSENT-arg2",
         "SENT-pattern"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1 and "SENT-uncaught" in result.stderr    # the program's own
    checked_trace(out)
    text = json.dumps(list(iter_events(out)))
    metadata_text = (out / "trace_metadata.json").read_text()
    leaked = re.compile(r"SENT(?:-[\w-]+|pem)")    # (P itself, "SENT", is shown: it is no secret)
    assert leaked.findall(text) == [], re.findall(r".{60}" + leaked.pattern, text)
    assert leaked.findall(metadata_text) == [] and "SENT-pattern" not in metadata_text
    assert "--token=<redacted>" in metadata_text
    assert json.loads(metadata_text)["options"]["values"]["redact_patterns"] == [REDACTED]
    for shown in ("shown-enum", "shown-oauth", "shown-after", "retrying", "shown-user"):
        assert shown in text, shown
    events = list(iter_events(out))
    io = [e["Event"]["content"] for e in events if "Event" in e]
    assert "Authorization: <redacted>\n" in io
    assert "error: a key must start with <redacted>\n" in io and "retrying\n" in io
    assert "log: password=<redacted> token: <redacted> user=shown-user\n" in io
    names = [e["VariableName"] for e in events if "VariableName" in e]
    shown_values = {names[e["Value"]["variable_id"]]: e["Value"]["value"] for e in events if "Value" in e}
    assert shown_values["has_password"]["kind"] == "Bool" and shown_values["auth_required"]["kind"] == "None"


def test_a_pattern_matching_an_empty_text_is_refused(tmp_path):
    program = tmp_path / "p.py"
    program.write_text("print('hello')\n")
    result = subprocess.run([str(CONSOLE_SCRIPT), "record", "-o", str(tmp_path / "t"), "--redact-pattern", "z*",
                             str(program)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "matches an empty text" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


@pytest.mark.parametrize("text, expected", [
    ("GET /?password=hunter22&x=1", "GET /?password=<redacted>&x=1"),
    ('{"token": "abcdefgh", "user": "ann"}', '{"token": "<redacted>", "user": "ann"}'),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: <redacted>"),
    ("--api-key=k123 --verbose", "--api-key=<redacted> --verbose"),
    ("postgres://ann:hunter22@db/x", "postgres://<redacted>@db/x"),
    ("authority: example.org", "authority: example.org"),
    ("time: 12:30", "time: 12:30"),
])
def test_values_under_secret_names_in_texts(text, expected):
    assert Redactor().redact_text(text) == expected
    assert Redactor().secret_text(text) == (text != expected)


def test_long_texts_are_decided_once(monkeypatch):
    redactor = Redactor()
    text = "x" * 5000 + " password=hunter22"
    calls = []
    search = redactor._search
    monkeypatch.setattr(redactor, "_search", lambda t: calls.append(1) or search(t))
    assert all(redactor.secret_text(text) for _ in range(5)) and len(calls) == 1


def test_what_is_typed_at_a_prompt_for_a_secret_is_redacted(tmp_path):
    from timelapse.format import EventKind
    import timelapse.redact as redact

    assert redact._STDIN == EventKind.READ
    program = tmp_path / "prompt.py"
    program.write_text("a = input('Password: ')\nb = input('Name: ')\nprint(len(a), b)\n")
    out = tmp_path / "trace"
    result = subprocess.run([str(CONSOLE_SCRIPT), "record", "-q", "--format", "json", "-o", str(out),
                             str(program)], input="hunter2\nann\n", capture_output=True, text=True,
                            timeout=60)
    assert result.stdout == "Password: Name: 7 ann\n"
    checked_trace(out)
    io = [e["Event"]["content"] for e in iter_events(out) if "Event" in e]
    assert io == ["Password: ", REDACTED + "\n", "Name: ", "ann\n", "7 ann\n"]


def test_long_texts_are_not_names_and_are_not_kept_as_names():
    redactor = Redactor()
    long_key = "password " + "x" * 300
    assert not redactor.secret_name(long_key) and long_key not in redactor.names
    io = redactor.io()
    io.redact(1, "é" * 70000)       # an event ending in a long line: no prompt, nothing kept
    assert not redactor.names


@pytest.mark.parametrize("text", ["a=" * 500_000, "--a=" * 250_000, "x:" * 500_000, "token=x " * 100_000,
                                  "password x: " + "a-" * 200_000, "eyJa-" * 80_000])
def test_searching_a_text_takes_time_in_proportion_to_it(text):
    # A guard against quadratic searches (a=a=a=... once took hours for 1 MB), not a timing test:
    # the bound is hundreds of times what a linear search takes.
    import time

    started = time.process_time()
    Redactor().redact_text(text)
    Redactor().secret_text(text)
    assert time.process_time() - started < 20


# -- what the second review found ------------------------------------------------------------------

#: A secret's name and a value that is no credential: a message, code, a number, a placeholder.
NOT_CREDENTIALS = [
    "auth: ok", "Token: 42 parsed", "password: must be 8 chars", "def f(password=None)",
    "token: expired", "auth: FAILED", "password: Required", "{'password': None}", '{"token": null}',
    "password=pw", "auth=true", '"auth": "ok"', "token:123456789", "secret:abc",
    "login(user, password=get_password())", "password = getpass.getpass('Password: ')",
    "auth: Token expired",
]
#: Values under secrets' names: cut out, whole (a quoted one up to its closing quote).
CREDENTIALS = [
    ("password=hunter2", "password=<redacted>"),
    ("password: hunter2xyz", "password: <redacted>"),
    ('"password": "s3cr3t!"', '"password": "<redacted>"'),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: <redacted>"),
    ("--token=abc123def", "--token=<redacted>"),
    ('password: "hunter 2" tail', 'password: "<redacted>" tail'),
    ("{'token': 'two words'}", "{'token': '<redacted>'}"),
    ('login password="a \\" b" ok', 'login password="<redacted>" ok'),    # an escaped quote
    ("password=hunter", "password=<redacted>"),        # letters, six of them
    ("password = s3cret", "password = <redacted>"),
    ("token:abcdef1", "token:<redacted>"),
    ("auth: HunterTwo", "auth: <redacted>"),           # mixed case: not a word of a message
    ("session_id=12345678", "session_id=<redacted>"),
    ('password="unterminated value', 'password="<redacted> value'),
]


@pytest.mark.parametrize("text", NOT_CREDENTIALS)
def test_a_secret_name_before_a_value_that_is_no_credential_is_shown(text):
    redactor = Redactor()
    assert redactor.redact_text(text) == text and redactor.cut == 0
    assert not redactor.secret_text(text)


@pytest.mark.parametrize("text, expected", CREDENTIALS)
def test_credentials_under_secret_names_are_cut_out_whole(text, expected):
    assert Redactor().redact_text(text) == expected
    assert Redactor().secret_text(text)


def test_string_values_get_the_same_rule():
    # A string value is redacted whole when it holds a credential under a secret's name; a message
    # that only names one ("auth: ok") is shown.
    enc = _encoder()
    texts = _texts(enc.encode({"msg": "auth: ok", "note": "Token: 42 parsed", "q": "password=hunter2"}))
    assert "auth: ok" in texts and "Token: 42 parsed" in texts
    assert "password=hunter2" not in texts and enc.redactions == 1


def test_the_argument_after_an_option_named_like_a_secret_is_redacted():
    redactor = Redactor()
    args = ["--password", "hunter2", "-token", "abc", "--verbose", "--auth", "--user", "ann",
            "--api-key", "-5", "--secret=s3cr3t", "x", "--secret"]
    assert redactor.redact_args(args) == [
        "--password", REDACTED, "-token", REDACTED, "--verbose", "--auth", "--user", "ann",
        "--api-key", REDACTED, f"--secret={REDACTED}", "x", "--secret"]
    assert redactor.cut == 4


def test_the_metadata_args_hide_the_value_after_a_secret_option(tmp_path):
    program = tmp_path / "p.py"
    program.write_text("import sys\nprint(len(sys.argv))\n")
    out = tmp_path / "trace"
    subprocess.run([str(CONSOLE_SCRIPT), "record", "-q", "--format", "json", "-o", str(out), str(program),
                    "--password", "hunter2", "--user", "ann"], check=True, capture_output=True, timeout=60)
    metadata = json.loads((out / "trace_metadata.json").read_text())
    assert metadata["args"] == ["--password", REDACTED, "--user", "ann"]
    assert metadata["redacted"]["in_events"] == 1


PEM_BODY = ["MIIEowIBAAKCAQEA", "Proc-Type: 4,ENCRYPTED", "", "c3RpbGwga2V5=="]


@pytest.mark.parametrize("break_, indent", [("\\n", ""), ("\\r\\n", ""), ("\n", "    "), ("\\n", "  ")])
def test_a_pem_body_is_cut_when_escaped_or_indented(break_, indent):
    lines = ["-----BEGIN RSA PRIVATE KEY-----", *PEM_BODY, "-----END RSA PRIVATE KEY-----"]
    block = break_.join(indent + line for line in lines)
    redacted = Redactor().redact_text(f'key: "{block}"{break_}after')
    assert redacted == f'key: "{indent}{REDACTED}"{break_}after'


def test_io_follows_an_indented_pem_block():
    io = Redactor().io()
    assert io.redact(1, "key: |\n  -----BEGIN EC PRIVATE KEY-----") == f"key: |\n  {REDACTED}"
    assert io.redact(1, "\n  MHcCAQEEIB\n") == REDACTED + "\n"
    assert io.redact(1, "  -----END EC PRIVATE KEY-----\nafter\n") == REDACTED + "\nafter\n"


@pytest.mark.parametrize("prompt, secret", [
    ("Password: ", True), ("Enter your API token:", True), ("passphrase> ", True), ("API key? ", True),
    ("Password for ann@example.org: ", True), ("Tokens >", True),
    ("Enter token count: ", False), ("password reset for: ", False), ("Name: ", False),
    ("token: 3 left, name: ", False),
])
def test_a_prompt_for_a_secret_ends_with_its_name(prompt, secret):
    io = Redactor().io()
    io.redact(1, "banner\n" + prompt)
    assert io.redact(3, "answer\n") == (REDACTED + "\n" if secret else "answer\n")


def test_texts_without_a_hint_of_a_secret_are_not_kept():
    redactor = Redactor()
    for i in range(1000):
        assert not redactor.secret_text(f"{i}: hello") and not redactor.secret_text(f"{i}: a value")
    assert not redactor._texts      # decided again, if they come again: cheaper than keeping them
    long_text = "a value " * 20     # longer than the encoder's cached strings: kept
    hinted = "user=ann auth ok"     # a hint was there, the search ran: kept
    assert not redactor.secret_text(long_text) and not redactor.secret_text(hinted)
    assert redactor.secret_text("password=hunter2")
    assert redactor._texts == {long_text: False, hinted: False, "password=hunter2": True}


def test_a_secret_name_is_found_in_any_case():
    assert Redactor().redact_text("PASSWORD=abc123 Password=abc123") == f"PASSWORD={REDACTED} Password={REDACTED}"


@pytest.mark.parametrize("text", [
    'password="' + "a" * 1_000_000, 'password="' * 100_000, "password='' " * 100_000,
    'password="a password=\'' * 50_000, "password: " + "a" * 1_000_000, "password: token: auth: " * 50_000,
    "password=get_password(" * 50_000, "password:" + "1" * 1_000_000, "Authorization: Basic " * 50_000,
    "-----BEGIN RSA PRIVATE KEY-----\\n" + " " * 1_000_000 + "!",
    "-----BEGIN RSA PRIVATE KEY-----" + "\\nAAAA" * 200_000,
    ("-----BEGIN RSA PRIVATE KEY-----\n" + " \t" * 1000 + "x!\n") * 100,
    "-----BEGIN RSA PRIVATE KEY-----\n" + "Proc-Type:" * 100_000, "-----BEGIN RSA PRIVATE KEY-----" + "\\" * 1_000_000,
    "--password " * 100_000,
])
def test_the_second_reviews_searches_take_time_in_proportion_to_the_text(text):
    import time

    started = time.process_time()
    redactor = Redactor()
    redactor.redact_text(text)
    redactor.secret_text(text)
    redactor.io().redact(1, text)
    redactor.redact_args(text.split(" "))
    assert time.process_time() - started < 20
