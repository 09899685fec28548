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
  access key id, a JWT (``FORMS``), a value that looks like a credential under a secret's name
  (``password=hunter2``, not ``auth: ok``: ``_credential``), or a match of one of
  ``redact_patterns`` anywhere in the text.

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
    "auth", "authorization", "credential", "credentials", "session_id", "cookie", "passphrase",
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

#: ``name=value``, ``name: value``, ``"name": "value"``, ``--name=value``: a name and the separator
#: of the value under it, in a text (a log line, a query string, a command line, JSON); ``quote`` is
#: the quote that opens the value. Only the name and its separator: the value is read
#: (``_value_span``) only under a secret's name, so that ``a=a=a=...`` is searched in linear time.
_ASSIGNMENT = re.compile(
    r"""(?<![\w.-])-{0,2}(?P<name>[A-Za-z_][\w.-]*+)(?P<sep>["']?[ \t]*+(?P<op>[=:])(?P<space>[ \t]*+))"""
    r"""(?P<quote>["']?)""")
#: An unquoted value, after its HTTP auth scheme if there is one (part of it: ``Basic dXNl...``).
_VALUE = re.compile(r"""(?P<scheme>(?i:basic|bearer|digest|token|negotiate)[ \t]++)?"""
                    r"""(?P<value>[^\s"'&,;(){}\]]*+)""")
#: Quoted values are taken up to their closing quote (``"hunter 2"``), at most this many characters.
_LONGEST_QUOTED = 1024
#: A quoted value's rest (escapes skipped) and its closing quote, per quote.
_QUOTED = {q: re.compile(rf"(?:[^{q}\\\r\n]|\\.){{0,{_LONGEST_QUOTED}}}+{q}") for q in "\"'"}
#: Values that say there is no secret (``password=None``, ``"token": null``), lower-cased.
_NO_VALUES = frozenset(("none", "null", "nil", "true", "false", "undefined", REDACTED))
#: A value shorter than this is a credential only when it is more than letters (``password=pw1``
#: is redacted, ``password=pw`` and ``auth: ok`` are not).
_SHORTEST_VALUE = 6
#: A plain word: letters (and ``_``) only.
_PLAIN_WORD = re.compile(r"[^\W\d]++")
#: A name in code, maybe dotted (``get_password``, ``self.get_token``).
_CODE_NAME = re.compile(r"[A-Za-z_][\w.]*+")

#: A PEM private key block: its BEGIN line, the lines of its body (base64, ``Proc-Type:``-style
#: headers, blank lines), and its END line if it is there. A line of anything else ends the block
#: (a BEGIN line quoted in a message is not followed by a key). Lines may be indented (YAML, a
#: quoted key in code), and broken by ``\n`` escapes as well as by line breaks (a key in a JSON
#: string).
_PEM_BODY = r"[ \t]*+(?>[A-Za-z-]++:[^\r\n\\]*+|[A-Za-z0-9+/=]*+)[ \t]*+"
_PEM_END_LINE = r"[ \t]*+-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----"
_PEM_BREAK = r"(?:\r?\n|(?:\\r)?\\n)"
_PEM_BLOCK = re.compile(FORMS["pem private key"] + r"(?:" + _PEM_BREAK + _PEM_BODY + r"(?![^\r\n\\]))*"
                        + r"(?:" + _PEM_BREAK + _PEM_END_LINE + r")?")
_PEM_END = re.compile(_PEM_END_LINE)
_PEM_BODY_LINE = re.compile(_PEM_BODY)
#: A block left open at the end of an IO event is closed after this many more characters.
_PEM_MOST = 16384
#: The IO Event kind of stdin (format.EventKind.READ; this module imports nothing of ours).
_STDIN = 3

#: What may end a prompt for a secret after its name (``Password: ``, ``API token? ``,
#: ``passphrase> ``), and what may come between the name and it (``Password for ann@host: ``).
_PROMPT_END = re.compile(r"[ \t]*+[:?>]?[ \t]*+\Z")
_PROMPT_FOR = re.compile(r"[ \t]+for[ \t]", re.IGNORECASE)
#: An argument that is an option's name (``--password``, ``-token``): its value may be the next.
_OPTION = re.compile(r"--?+(?P<name>[A-Za-z][\w.-]*+)")
#: An argument that is an option, not an option's value (``-5`` is a value, as argparse takes it).
_AN_OPTION = re.compile(r"-[^\d]")

#: The words of a name: an all-capitals run (not the capital starting the next word), a word
#: (capital or not) of lower-case letters, or a run of digits. Anything else separates.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[^\W\dA-Z_]+|\d+")
#: Words spelled with capitals inside that are one word (``OAuthClient`` is oauth, client).
_ONE_WORD = (("OAuth", "Oauth"),)

#: Names longer than this are not names (and are not kept in the decisions).
_LONGEST_NAME = 256
#: No secret's text is shorter than this (``auth=1``).
_SHORTEST_FORM = 6
#: Decisions (names, texts) kept at most; the cache is emptied when full (a decision is cheap).
_CACHE_SIZE = 8192
#: A text this short that no hint of a secret is in is not kept in the decisions: deciding it again
#: costs less than keeping it (the texts of a loop, ``f"{i}: {x}"``, never repeat), and the encoder
#: keeps the records of the strings this short that it shows (``encoder._SHORT_STRING``).
_UNKEPT_TEXT = 64
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
        #: The first word of every term: a text holding none of them (lower-cased) names no secret
        #: (a word holding another is not needed: ``apikey`` holds ``api``).
        firsts = {words_of(term)[0] for term in (*NAME_TERMS, *names) if words_of(term)}
        self._name_hints = tuple(sorted(w for w in firsts if not any(o != w and o in w for o in firsts)))
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
        secret = self._holds_term(words_of(name))
        names = self.names
        if len(names) >= _CACHE_SIZE:
            names.clear()
        names[name] = secret
        return secret

    def _holds_term(self, words: list[str], at_end: bool = False) -> bool:
        """Do ``words`` (of a name) hold a secret's term (as their last words, if ``at_end``)?"""
        single, double = self._single, self._double
        if at_end:
            return bool(words) and (words[-1] in single or tuple(words[-2:]) in double
                                    or any(tuple(words[-len(term):]) == term for term in self._longer))
        if any(w in single for w in words):
            return True
        if len(words) > 1:
            if any(pair in double for pair in zip(words, words[1:])):
                return True
            for term in self._longer:
                n = len(term)
                if any(tuple(words[i:i + n]) == term for i in range(len(words) - n + 1)):
                    return True
        return False

    def secret_prompt(self, line: str) -> bool:
        """Is ``line`` (the last line written before a read of stdin) a prompt for a secret? It
        ends with a secret's name, then maybe ``:``, ``?`` or ``>`` and spaces (``Password: ``,
        ``Enter your API token:``, ``passphrase> ``), or with a secret's name and what it is for
        (``Password for ann@host: ``); ``Enter token count: `` is not one."""
        if not 0 < len(line) <= _LONGEST_NAME:
            return False
        name = line[:_PROMPT_END.search(line).start()]
        return any(self._holds_term(words_of(part), at_end=True)
                   for part in {name, _PROMPT_FOR.split(name, 1)[0]})

    # -- texts ----------------------------------------------------------------------------------

    def secret_text(self, text: str, limit: int | None = None) -> bool:
        """Does ``text`` (an exact str) look like a secret, or hold one (a form, a name's value, a
        user pattern) in its first ``limit`` characters (all of it if None)? Texts shorter than the
        shortest form are not searched (unless there are user patterns). Decisions are cached by
        text, for texts of any length (bounded by their characters all together), but for short
        texts that hold no hint of a secret (``_UNKEPT_TEXT``)."""
        n = len(text)
        if n < _SHORTEST_FORM and not self._patterns:
            return False
        decided = self._texts.get(text)
        if decided is None:
            decided = self._search(text if limit is None or n <= limit else text[:limit])
            if decided is None:     # no hint of a secret in it
                if n <= _UNKEPT_TEXT:
                    return False
                decided = False
            if self._cached_characters + n > _CACHED_CHARACTERS or len(self._texts) >= _CACHE_SIZE:
                self._texts.clear()
                self._cached_characters = 0
            self._texts[text] = decided
            self._cached_characters += n
        return decided

    def _search(self, text: str) -> bool | None:
        """Does ``text`` hold a secret? None: no, and not even a hint of one was in it (a decision
        cheaper to make again than to keep)."""
        hinted = False
        for hint in _FORM_HINTS:
            if hint in text:
                if self._forms.search(text) is not None:
                    return True
                hinted = True
                break
        if self._names_in(text):
            if self._value_spans(text, True):
                return True
            hinted = True
        for pattern in self._patterns:
            if pattern.search(text) is not None:
                return True
            hinted = True
        return False if hinted else None

    def _names_in(self, text: str) -> bool:
        """Could ``text`` hold a value under a secret's name: has it a ``=`` or a ``:``, and the
        first word of a secret's term in some case? (One pass in C each: a text of many ``a=b``
        pairs needs no loop over them.)"""
        if "=" in text or ":" in text:
            lowered = text.lower()
            for hint in self._name_hints:
                if hint in lowered:
                    return True
        return False

    def _value_spans(self, text: str, first: bool = False) -> list[tuple[int, int]]:
        """The spans of the values under secrets' names in ``text`` (only the first if ``first``).
        A value under another name is searched too (``log: password=...`` is a value of ``log``
        that holds one)."""
        spans: list[tuple[int, int]] = []
        at = 0
        search, secret_name = _ASSIGNMENT.search, self.secret_name
        while (match := search(text, at)) is not None:
            at = match.end()
            if secret_name(match.group("name")):
                span = _value_span(text, match)
                if span is not None:
                    spans.append(span)
                    if first:
                        break
                    at = span[1]
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
        if self._names_in(text):
            spans = self._value_spans(text)
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

    def redact_args(self, args: Iterable[str]) -> list[str]:
        """A program's arguments with their secrets replaced: each as a text (``--token=...``), and
        the argument after an option named like a secret (``--password hunter2``, ``-token x``),
        unless it is an option itself (as argparse takes it). Counted in ``cut``."""
        redacted: list[str] = []
        value_of_secret = False
        for arg in args:
            if value_of_secret and _AN_OPTION.match(arg) is None:
                redacted.append(REDACTED)
                self.cut += 1
                value_of_secret = False
                continue
            option = _OPTION.fullmatch(arg)
            value_of_secret = option is not None and self.secret_name(option.group("name"))
            redacted.append(self.redact_text(arg))
        return redacted

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
            self._secret_prompt = self._redactor.secret_prompt(text[text.rfind("\n") + 1:])
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
            # A key's BEGIN line starts a line (maybe indented); one quoted in a message ("must
            # start with -----BEGIN ...") is cut out as a form, and opens nothing.
            if (last is not None and last.end() == len(text) and _PEM_END.search(last.group()) is None
                    and not text[text.rfind("\n", 0, last.start()) + 1:last.start()].strip(" \t")):
                self._open_pem[kind] = 0    # its body goes on in the next event
        return head + self._redactor.redact_text(text)


def _value_span(text: str, match: re.Match) -> tuple[int, int] | None:
    """The span of the value after ``match`` (of ``_ASSIGNMENT``, under a secret's name), if it is
    a credential's (docs/redaction.md, "A value under a secret's name"). A value that is refused
    holds no ``=`` or ``:`` or is short, so that the search goes on from its start in linear time."""
    start = match.end()
    quote = match.group("quote")
    if quote:
        closed = _QUOTED[quote].match(text, start)
        if closed is not None:
            end = closed.end() - 1
            return (start, end) if _credential(text[start:end], False) else None
    value = _VALUE.match(text, start)
    word, end = value.group("value"), value.end()
    if text[end:end + 1] == "(" and _CODE_NAME.fullmatch(word) is not None:
        return None     # code: password=get_password(...)
    strict = None if quote or match.group("op") == "=" else bool(match.group("space"))
    return (start, end) if _credential(word, strict) else None


def _credential(value: str, strict: bool | None) -> bool:
    """Could ``value`` be a credential: after ``=`` or in quotes (``strict`` None), after ``:``
    (False), after ``: `` (True)? A value that says there is none (``None``, ``null``) is not;
    after ``=`` or in quotes, letters only need ``_SHORTEST_VALUE`` of them (``password=pw``,
    ``"auth": "ok"`` are not); after ``:``, every value needs them and digits only are not one
    (``Token: 42``); after ``: ``, neither is a word of letters in one case or capitalized
    (``token: expired``, ``auth: FAILED``), as the words of a message are."""
    if not value or value.lower() in _NO_VALUES:
        return False
    if strict is None:
        return len(value) >= _SHORTEST_VALUE or _PLAIN_WORD.fullmatch(value) is None
    if len(value) < _SHORTEST_VALUE or value.isdigit():
        return False
    return not (strict and _PLAIN_WORD.fullmatch(value) is not None
                and (value.islower() or value.isupper() or value[1:].islower()))


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
