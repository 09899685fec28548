"""Secret redaction: which names and which texts look like secrets (docs/redaction.md).

A value is recorded as ``<redacted>`` (a ``Raw`` record whose type is named for the value's own
type) instead of its text when

- its **name** looks like a secret: a variable, an argument, a global, an attribute, an exact-str
  dict key (the value under it is redacted, the key is shown), or a function (its return value)
  whose name holds one of the secret
  words (``NAME_TERMS``, plus ``redact_names``) *as a word*: names are split into words at ``_``,
  ``-``, ``.``, spaces, digits and camelCase humps (``db_password``, ``apiToken``, ``X-Api-Key``,
  ``HTTP_COOKIE``), compared case-insensitively, a term of two words matching the two words in a row
  or run together (``api_key``, ``apiKey``, ``apikey``), a term's plural too (``tokens``,
  ``api_keys``). A word that only *contains* a term is not it: ``author``, ``tokenize``,
  ``authority``, ``secretary``, ``passwordless_allowed``;
- or its **form** does (strings only): a PEM private key, an HTTP ``Bearer`` credential, an AWS
  access key id, a JWT (``FORMS``), or a match of one of ``redact_patterns`` anywhere in the text.

Where each rule is applied, and why it costs nothing where nothing is secret, is the business of
the modules that record (``codeinfo``: variables and return values, per code object; ``encoder``:
attributes, keys, strings; ``monitor.Recorder.io_event`` and ``exception_events``: event texts).
This module only decides, and remembers what it decided: a name is split
once per distinct name, a text is searched only when a cheap test of substrings (``_FORM_HINTS``)
says it could hold a form (user patterns have no such test: they are searched in every string that
is not in the encoder's caches of spelled strings, and in every IO event).

IO events (stdout, stderr, stdin) and exception messages are never redacted by name (they have
none), only by form: each match is replaced by ``<redacted>``, the rest of the text is kept. A PEM
block is cut from its ``BEGIN`` line to its ``END`` line, across the events of one stream if it is
written piece by piece.

Everything here is our own code over exact ``str`` objects: nothing of the program runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["NAME_TERMS", "FORMS", "REDACTED", "Redactor", "IORedactor", "words_of"]

#: The text of a redacted record (and what replaces a secret in IO).
REDACTED = "<redacted>"

#: The default secret words (a term of two words is written with ``_``).
NAME_TERMS = (
    "password", "passwd", "secret", "token", "api_key", "apikey", "access_key", "private_key",
    "auth", "authorization", "credential", "credentials", "session_id", "cookie",
)

#: The forms of secret texts: name -> pattern (searched anywhere in a text).
FORMS = {
    # The header line of any PEM private key: PRIVATE KEY, RSA/EC/DSA/OPENSSH/ENCRYPTED PRIVATE KEY,
    # PGP PRIVATE KEY BLOCK.
    "pem private key": r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----",
    # An HTTP bearer credential (RFC 6750's b64token), at least 8 characters of it; the scheme
    # in any case (RFC 7235: schemes are case-insensitive).
    "bearer credential": r"\b(?i:bearer) +[A-Za-z0-9._~+/-]{8,}=*",
    # The password of a URL's userinfo (scheme://user:password@host).
    "url password": r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",
    # An AWS access key id: long-term (AKIA) or temporary (ASIA).
    "aws access key id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    # A JWT (JWS compact form): base64url of a JSON header ({" -> eyJ), payload, signature.
    "jwt": r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]++\.[A-Za-z0-9_-]++\.[A-Za-z0-9_-]*+",
}
#: Substrings one of which every form holds: a text with none of them is no secret by form.
_FORM_HINTS = ("-----BEGIN", "earer", "EARER", "eyJ", "AKIA", "ASIA", "://")

#: ``name=value``, ``name: value``, ``"name": "value"``, ``--name=value``: a value under a name,
#: in a text (a log line, a query string, a command line, JSON). The value is a secret when the
#: name is a secret's (``password=...``); an HTTP auth scheme before it is part of it.
_ASSIGNMENT = re.compile(
    r"""(?<![\w.-])-{0,2}(?P<name>[A-Za-z_][\w.-]*+)(?P<sep>["']?[ \t]*[=:][ \t]*["']?)"""
    r"""(?P<value>(?:(?i:basic|bearer|digest|token|negotiate)[ \t]+)?[^\s"'&,;)}\]=:]+)""")
#: The rest of a secret's value after ``_ASSIGNMENT``'s (which stops at ``=`` and ``:`` so that
#: ``a=a=a=...`` is searched in linear time): up to the next delimiter.
_VALUE_REST = re.compile(r"""[^\s"'&,;)}\]]*""")

#: A PEM private key block: its BEGIN line, the lines of its body (base64, ``Proc-Type:``-style
#: headers, blank lines), and its END line if it is there. A line of anything else ends the block
#: (a BEGIN line quoted in a message is not followed by a key).
_PEM_BODY = r"(?:[A-Za-z0-9+/=]*|[A-Za-z-]+:[^\n]*)"
_PEM_END_LINE = r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----"
_PEM_BLOCK = re.compile(FORMS["pem private key"] + r"(?:\r?\n" + _PEM_BODY + r"(?![^\r\n]))*"
                        + r"(?:\r?\n" + _PEM_END_LINE + r")?")
_PEM_END = re.compile(_PEM_END_LINE)
_PEM_BODY_LINE = re.compile(_PEM_BODY)
#: A block left open at the end of an IO event is closed after this many more characters.
_PEM_MOST = 16384
#: The IO Event kind of stdin (format.EventKind.READ; this module imports nothing of ours).
_STDIN = 3

#: The words of a name: an all-capitals run (not the capital starting the next word), a word
#: (capital or not) of lower-case letters, or a run of digits. Anything else separates.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[^\W\dA-Z_]+|\d+")
#: Words spelled with capitals inside that are one word (``OAuthClient`` is oauth, client).
_ONE_WORD = (("OAuth", "Oauth"),)

#: Names longer than this are not names (and are not kept in the decisions).
_LONGEST_NAME = 256
#: No secret's text is shorter than this (``auth=x``).
_SHORTEST_FORM = 6
#: Decisions (names, texts) kept at most; the cache is emptied when full (a decision is cheap).
_CACHE_SIZE = 8192
#: The characters of the texts whose decisions are cached, at most, all together (a cached text is
#: kept alive by the cache: a str has no finalizer and no weak reference, so only its memory shows).
_CACHED_CHARACTERS = 4 << 20


def words_of(name: str) -> list[str]:
    """The words of a name, lower-cased: ``X-Api-Key`` -> x, api, key; ``APIToken`` -> api, token."""
    for spelled, word in _ONE_WORD:
        if spelled in name:
            name = name.replace(spelled, word)
    return [w.lower() for w in _WORD.findall(name)]


class Redactor:
    """The rules of one recording: which names and which texts are secret. Decisions are cached
    (bounded): ``names`` holds every name decided so far (name -> bool), which the encoder reads
    directly (``decide`` fills in a name it has no decision for)."""

    def __init__(self, names: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        single: set[str] = set()
        double: set[tuple[str, ...]] = set()
        longer: list[tuple[str, ...]] = []
        for term in (*NAME_TERMS, *names):
            words = tuple(words_of(term))
            if not words:
                continue
            # The term, run together, and their plurals.
            for variant in {words, words[:-1] + (words[-1] + "s",)}:
                if len(variant) == 1:
                    single.add(variant[0])
                else:
                    single.add("".join(variant))
                    (double.add(variant) if len(variant) == 2 else longer.append(variant))
        self._single = frozenset(single)
        #: The first word of every term: a text holding none of them (lower-cased) names no secret.
        self._name_hints = tuple(sorted({words_of(term)[0] for term in (*NAME_TERMS, *names)
                                         if words_of(term)}))
        self._double = frozenset(double)
        self._longer = tuple(longer)
        #: name -> is it secret, for every name decided so far.
        self.names: dict[str, bool] = {}
        self._forms = re.compile("|".join(f"(?:{p})" for p in FORMS.values()))
        self._patterns = tuple(re.compile(p) for p in patterns)
        self._texts: dict[str, bool] = {}
        self._cached_characters = 0
        #: Secrets cut out of event texts so far (IO, exception messages, the arguments).
        self.cut = 0

    # -- names ----------------------------------------------------------------------------------

    def secret_name(self, name: str) -> bool:
        """Does ``name`` (an exact str) look like the name of a secret? Cached. A text longer than
        ``_LONGEST_NAME`` is data, not a name (a dict keyed by sentences): never a secret's name
        (its form is still searched where it is a value or a key)."""
        decided = self.names.get(name)
        if decided is None:
            if len(name) > _LONGEST_NAME:
                return False
            decided = self.decide(name)
        return decided

    def decide(self, name: str) -> bool:
        """Decide ``name`` (an exact str), remember it, and say it."""
        words = words_of(name)
        single = self._single
        secret = any(w in single for w in words)
        if not secret and len(words) > 1:
            double = self._double
            secret = any(pair in double for pair in zip(words, words[1:]))
            if not secret:
                for term in self._longer:
                    n = len(term)
                    if any(tuple(words[i:i + n]) == term for i in range(len(words) - n + 1)):
                        secret = True
                        break
        names = self.names
        if len(names) >= _CACHE_SIZE:
            names.clear()
        names[name] = secret
        return secret

    # -- texts ----------------------------------------------------------------------------------

    def secret_text(self, text: str, limit: int | None = None) -> bool:
        """Does ``text`` (an exact str) look like a secret, or hold one (a form, a name's value, a
        user pattern) in its first ``limit`` characters (all of it if None)? Texts shorter than the
        shortest form are not searched (unless there are user patterns). Decisions are cached by
        text, for texts of any length (bounded by their characters all together)."""
        n = len(text)
        if n < _SHORTEST_FORM and not self._patterns:
            return False
        decided = self._texts.get(text)
        if decided is None:
            decided = self._search(text if limit is None or n <= limit else text[:limit])
            if self._cached_characters + n > _CACHED_CHARACTERS or len(self._texts) >= _CACHE_SIZE:
                self._texts.clear()
                self._cached_characters = 0
            self._texts[text] = decided
            self._cached_characters += n
        return decided

    def _search(self, text: str) -> bool:
        for hint in _FORM_HINTS:
            if hint in text:
                if self._forms.search(text) is not None:
                    return True
                break
        if ("=" in text or ":" in text) and self._assigns_secret(text):
            return True
        for pattern in self._patterns:
            if pattern.search(text) is not None:
                return True
        return False

    def _assigns_secret(self, text: str) -> bool:
        """Does ``text`` hold a value under a secret's name (``password=...``)?"""
        return bool(self._secret_values(text))

    def _secret_values(self, text: str) -> list[tuple[int, int]]:
        """The spans of the values under secrets' names in ``text``. A value under another name is
        searched too (``log: password=...`` is a value of ``log`` that holds one)."""
        spans: list[tuple[int, int]] = []
        lowered = text.lower()
        if not any(hint in lowered for hint in self._name_hints):
            return spans    # (one pass in C: a text of many a=b pairs needs no loop over them)
        at = 0
        search, secret_name = _ASSIGNMENT.search, self.secret_name
        while (match := search(text, at)) is not None:
            if secret_name(match.group("name")) and match.group("value") != REDACTED:
                end = _VALUE_REST.match(text, match.end()).end()
                spans.append((match.start("value"), end))
                at = end
            else:
                at = match.end("sep")
        return spans

    # -- texts in events (IO, exception messages, the metadata's arguments) --------------------------

    def redact_text(self, text: str) -> str:
        """``text`` with every secret in it replaced by ``<redacted>``: forms (a PEM private key
        from its BEGIN line to its END line, or to the end of its body), values under secrets'
        names (``password=<redacted>``), user patterns. Counted in ``cut``."""
        if any(hint in text for hint in _FORM_HINTS) and self._forms.search(text) is not None:
            text, n = _PEM_BLOCK.subn(_pem_block, text)
            self.cut += n
            text, n = self._forms.subn(REDACTED, text)
            self.cut += n
        if "=" in text or ":" in text:
            spans = self._secret_values(text)
            if spans:
                pieces, at = [], 0
                for start, end in spans:
                    pieces += (text[at:start], REDACTED)
                    at = end
                text = "".join(pieces) + text[at:]
                self.cut += len(spans)
        for pattern in self._patterns:
            text, n = pattern.subn(REDACTED, text)
            self.cut += n
        return text

    def io(self) -> IORedactor:
        """The redaction of one recording's IO events."""
        return IORedactor(self)


class IORedactor:
    """The redaction of IO event contents (``Redactor.redact_text``), which also follows a PEM
    block written over several events: per stream kind, it remembers a block whose BEGIN line
    ended an event with no END line, and redacts the lines of its body that follow (whitespace
    is kept, so that the lines still show), up to its END line, the first line that is not body,
    or ``_PEM_MOST`` characters. The block is counted once."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        #: stream kind -> characters of the open block's body seen so far.
        self._open_pem: dict[int, int] = {}
        #: The last output was a prompt for a secret (``Password: ``, no line break after it).
        self._secret_prompt = False

    def redact(self, kind: int, text: str) -> str:
        """``text`` (one IO event's content, of the stream of ``kind``) with its secrets replaced."""
        if kind == _STDIN:
            if self._secret_prompt and text.strip():
                # What is typed at input("Password: ") or at getpass() reading stdin (no terminal).
                self._secret_prompt = False
                self._redactor.cut += 1
                return REDACTED + ("\n" if text.endswith("\n") else "")
        elif text:
            last_line = text[text.rfind("\n") + 1:]
            self._secret_prompt = (0 < len(last_line) <= _LONGEST_NAME and bool(last_line.strip())
                                   and self._redactor.secret_name(last_line))
        head = ""
        seen = self._open_pem.pop(kind, None)
        if seen is not None:
            n, still_open = _pem_continuation(text)
            body, text = text[:n], text[n:]
            head = (REDACTED + ("\n" if body.endswith("\n") else "")) if body.strip() else body
            if still_open and seen + n < _PEM_MOST:
                self._open_pem[kind] = seen + n
                return head
        if "-----BEGIN" in text:
            last = None
            for last in _PEM_BLOCK.finditer(text):
                pass
            # A key's BEGIN line starts a line; one quoted in a message ("must start with
            # -----BEGIN ...") is cut out as a form, and opens nothing.
            if (last is not None and last.end() == len(text) and _PEM_END.search(last.group()) is None
                    and (last.start() == 0 or text[last.start() - 1] == "\n")):
                self._open_pem[kind] = 0    # its body goes on in the next event
        return head + self._redactor.redact_text(text)


def _pem_block(match: re.Match) -> str:
    """What a PEM block is replaced with: ``<redacted>``, and the line break it ended with."""
    return REDACTED + ("\n" if match.group().endswith("\n") else "")


def _pem_continuation(text: str) -> tuple[int, bool]:
    """How much of ``text`` goes on an open PEM block (body lines, then its END line), and whether
    the block is still open after it."""
    at = 0
    while at <= len(text):
        newline = text.find("\n", at)
        line = text[at:newline if newline >= 0 else len(text)].rstrip("\r")
        end = _PEM_END.match(line)
        if end is not None:
            return at + end.end(), False
        if _PEM_BODY_LINE.fullmatch(line) is None:
            return at, False    # not a key's line: the block is over
        if newline < 0:
            return len(text), True  # the end of the event, in the body
        at = newline + 1
    return len(text), True
