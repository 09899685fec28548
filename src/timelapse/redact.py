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
    # An HTTP bearer credential (RFC 6750's b64token), at least 8 characters of it.
    "bearer credential": r"\bBearer +[A-Za-z0-9._~+/-]{8,}=*",
    # An AWS access key id: long-term (AKIA) or temporary (ASIA).
    "aws access key id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    # A JWT (JWS compact form): base64url of a JSON header ({" -> eyJ), payload, signature.
    "jwt": r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
}
#: Substrings one of which every form holds: a text with none of them is no secret by form.
_FORM_HINTS = ("-----BEGIN", "Bearer", "eyJ", "AKIA", "ASIA")

#: In IO, a PEM block from its BEGIN line to its END line (or to the end of the event).
_PEM_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|\Z)",
    re.DOTALL)
_PEM_BEGIN = re.compile(FORMS["pem private key"])
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")

#: The words of a name: an all-capitals run (not the capital starting the next word), a word
#: (capital or not) of lower-case letters, or a run of digits. Anything else separates.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[^\W\dA-Z_]+|\d+")

#: No form is shorter than this (``Bearer`` and 8 characters of a credential; a JWT of 1-character
#: parts is not one).
_SHORTEST_FORM = 15
#: Decisions (names, texts) kept at most; the cache is emptied when full (a decision is cheap).
_CACHE_SIZE = 8192
#: Texts up to this length have their decision cached (longer ones are tested each time).
_CACHED_TEXT = 256


def words_of(name: str) -> list[str]:
    """The words of a name, lower-cased: ``X-Api-Key`` -> x, api, key; ``APIToken`` -> api, token."""
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
        self._double = frozenset(double)
        self._longer = tuple(longer)
        #: name -> is it secret, for every name decided so far.
        self.names: dict[str, bool] = {}
        self._forms = re.compile("|".join(f"(?:{p})" for p in FORMS.values()))
        self._patterns = tuple(re.compile(p) for p in patterns)
        self._texts: dict[str, bool] = {}
        #: Secrets cut out of event texts so far (IO, exception messages).
        self.cut = 0

    # -- names ----------------------------------------------------------------------------------

    def secret_name(self, name: str) -> bool:
        """Does ``name`` (an exact str) look like the name of a secret? Cached."""
        decided = self.names.get(name)
        if decided is None:
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

    def secret_text(self, text: str) -> bool:
        """Does ``text`` (an exact str) look like a secret, or hold one (a form, a user pattern)?
        Texts shorter than the shortest form are not searched (unless there are user patterns);
        texts up to ``_CACHED_TEXT`` characters have their decision cached."""
        n = len(text)
        if n < _SHORTEST_FORM and not self._patterns:
            return False
        if n > _CACHED_TEXT:
            return self._search(text)
        decided = self._texts.get(text)
        if decided is None:
            decided = self._search(text)
            texts = self._texts
            if len(texts) >= _CACHE_SIZE:
                texts.clear()
            texts[text] = decided
        return decided

    def _search(self, text: str) -> bool:
        for hint in _FORM_HINTS:
            if hint in text:
                if self._forms.search(text) is not None:
                    return True
                break
        for pattern in self._patterns:
            if pattern.search(text) is not None:
                return True
        return False

    # -- texts in events (IO, exception messages) ------------------------------------------------

    def redact_text(self, text: str) -> str:
        """``text`` with every secret in it, by form or user pattern, replaced by ``<redacted>``
        (a PEM private key from its BEGIN line to its END line, or to the end of the text).
        Counted in ``cut``."""
        if any(hint in text for hint in _FORM_HINTS) and self._forms.search(text) is not None:
            text, n = _PEM_BLOCK.subn(REDACTED, text)
            self.cut += n
            text, n = self._forms.subn(REDACTED, text)
            self.cut += n
        for pattern in self._patterns:
            text, n = pattern.subn(REDACTED, text)
            self.cut += n
        return text

    def io(self) -> IORedactor:
        """The redaction of one recording's IO events."""
        return IORedactor(self)


class IORedactor:
    """The redaction of IO event contents, by form only (``Redactor.redact_text``), which also
    follows a PEM block written piece by piece: per stream kind, it remembers a block still open at
    the end of the last event, and redacts what follows up to the block's END line (whitespace is
    kept, so that the lines still show; the block is counted once)."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._open_pem: set[int] = set()

    def redact(self, kind: int, text: str) -> str:
        """``text`` (written to or read from the stream of ``kind``) with its secrets replaced."""
        open_pem = self._open_pem
        if kind in open_pem:
            end = _PEM_END.search(text)
            if end is None:
                return text if text.isspace() or not text else REDACTED
            open_pem.discard(kind)
            cut, text = text[:end.end()], text[end.end():]
            head = REDACTED if cut.strip() else cut
        else:
            head = ""
        if "-----BEGIN" in text:
            begins = list(_PEM_BEGIN.finditer(text))
            if begins and _PEM_END.search(text, begins[-1].end()) is None:
                open_pem.add(kind)  # its last BEGIN line has no END line after it: still open
        return head + self._redactor.redact_text(text)
