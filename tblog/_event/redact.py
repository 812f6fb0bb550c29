"""Redaction: secrets scrubbed from an event or a row before it leaves the process.

``Redactor.event`` takes an event dict that tblog built (its own dict, so it may be
changed in place) and replaces, in ``extra`` (the record's extras and the bound fields,
at any depth), the exception, the message, the formatted message and the stack:

* the value of every key that names a secret.  A key is split into words (``-``, ``_``,
  ``.``, spaces and camelCase all separate: ``userPassword``, ``user-password`` and
  ``USER_PASSWORD`` are the same key) and judged by its last word, the noun that says
  what it holds: ``db_password``, ``access_token``, ``X-Api-Key``, ``session_id``,
  ``csrftoken``, ``aws_secret_access_key`` are secrets; ``token_count``,
  ``completion_tokens``, ``password_reset_sent``, ``cookie_consent`` and ``api_key_id``
  are not.  Trailing words that only say how a secret is written (``password_hash``,
  ``auth_header``, ``password2``) are skipped first.  The user's ``redact_keys`` also
  match as the first or last words of a longer key.
* every match of the value patterns in any text: ``Bearer``/``Basic`` credentials (a
  token-shaped value: "Basic understanding" stays), ``Authorization: <scheme> ...``
  headers, JWTs and Tinybird tokens, ``key=value`` / ``"key": "value"`` pairs whose key
  names a secret (judged as above; a session id must look like one: ``session: 3 of 5``
  stays), AWS access key ids, GitHub, GitLab, Slack, Stripe, OpenAI, Google API, Logfire,
  npm, Hugging Face and SendGrid keys, Slack webhook URLs, PEM private key blocks, the
  password of a URL or DSN (``postgres://user:...@host``), card numbers (15 to 19
  digits starting with 3 to 6 that pass the Luhn check), and the user's own regular
  expressions.

The rows of the other producers get the same treatment: ``Redactor.row`` for tblog's own
rows (the tracker's, LiteLLM's, the traces'; their column names are never judged),
``mapping``/``flat`` for a ``Datasource`` dict row and ``line`` for an NDJSON one, and
``json_text`` for a column holding JSON text (keys judged as in a dict).  Containers the
caller owns (nested dicts and lists) are never modified: scrubbing builds new ones.  A
text without a hint of any of these (a cheap substring pre-check) skips the regular
expressions.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"
CIRCULAR = "<circular reference>"  # the encoder's own marker (tblog._event.encode.jsonable)

#: Words that make a key secret when they are its last word (its head noun).
_SECRET_WORDS = frozenset((
    "password", "passwd", "passphrase", "pwd", "secret", "secrets", "token", "auth",
    "authorization", "cookie", "cookies", "credential", "credentials", "session", "sessionid",
    "phpsessid", "csrftoken", "xsrftoken", "csrf", "xsrf", "jwt", "ssn", "apikey",
    "privatekey", "symfony", "cvv", "cvc",
))  # fmt: skip
#: Pairs of last words that make a key secret (``api_key``, ``x_real_ip``...).
_SECRET_PAIRS = frozenset((
    ("api", "key"), ("private", "key"), ("secret", "key"), ("access", "key"),
    ("signing", "key"), ("encryption", "key"), ("master", "key"), ("session", "id"),
    ("session", "key"), ("connect", "sid"), ("social", "security"), ("security", "number"),
    ("credit", "card"), ("card", "number"), ("ip", "address"), ("remote", "addr"),
    ("forwarded", "for"), ("real", "ip"), ("account", "key"),
))  # fmt: skip
#: Triples of last words that make a key secret (``private_key_id``: not ``api_key_id``).
_SECRET_TRIPLES = frozenset((("private", "key", "id"),))
#: Last words of a key naming a session id: its text value must look like one (``session:
#: 3 of 5`` is a count, not an id).
_SESSION_WORDS = frozenset(("session", "sessionid", "sessid", "phpsessid"))
#: ``<word>_token`` keys that count or page, not authenticate (``completion_token``...).
_NOT_SECRET_TOKENS = frozenset((
    "completion", "prompt", "input", "output", "total", "max", "min", "cached", "cache",
    "reasoning", "num", "n", "count", "audio", "text", "image", "page", "next", "previous",
    "prev", "continuation", "pagination", "cancellation", "sync", "cursor", "start", "end",
    "stop", "eos", "bos", "pad", "unk", "sep", "special", "mask",
))  # fmt: skip
#: Trailing words that say how a secret is written, not what it is (``password_hash``).
_FORM_WORDS = frozenset((
    "value", "val", "hash", "hashed", "plain", "plaintext", "raw", "str", "string", "text",
    "b64", "base64", "hex", "encoded", "enc", "encrypted", "bytes", "data", "header",
    "headers", "confirm", "confirmation", "again", "repeat", "old", "new", "current",
))  # fmt: skip

#: Kept for compatibility: the words of the default secret keys.
DEFAULT_KEYS = tuple(sorted(_SECRET_WORDS))

#: Values of a secret ``key: value`` pair in text that hold no secret ("Session: expired").
_STATUS_VALUES = frozenset((
    "true", "false", "null", "none", "nil", "yes", "no", "on", "off", "set", "unset", "empty",
    "missing", "required", "invalid", "expired", "ok", "failed", "present", "redacted",
    "***", "[redacted]", "undefined", "n/a", "valid", "revoked",
))  # fmt: skip

_CAMEL_LOWER = re.compile(r"([a-z0-9])([A-Z])")
#: Between the capitals of an acronym and the word after it (``HTTPServer``): fixed-width
#: lookarounds, so a long run of capitals is not rescanned from each of them.
_CAMEL_UPPER = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def _words(key: str) -> list[str]:
    """``userPassword``, ``user-password``, ``USER_PASSWORD`` -> ``["user", "password"]``."""
    key = _CAMEL_UPPER.sub("_", _CAMEL_LOWER.sub(r"\1_\2", key)).lower()
    return [w for w in _NOT_ALNUM.split(key) if w]


def _default_secret(words: list[str]) -> bool:
    while len(words) > 1 and (words[-1] in _FORM_WORDS or words[-1].isdigit()):
        words = words[:-1]
    if not words:
        return False
    last = words[-1].rstrip("0123456789") or words[-1]
    if len(words) > 2 and (words[-3], words[-2], last) in _SECRET_TRIPLES:
        return True
    if last in _SECRET_WORDS:
        return not (last == "token" and len(words) > 1 and words[-2] in _NOT_SECRET_TOKENS)
    return len(words) > 1 and (words[-2], last) in _SECRET_PAIRS


# -- value patterns ----------------------------------------------------------------------

#: PEM private key blocks (to the end of the text when the END line is missing).
_PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)"
)
#: "Bearer <token>" / "Basic <base64>" anywhere (``_replace_bearer`` wants a token shape).
_BEARER = re.compile(
    r"(?P<scheme>\b(?i:bearer|basic))[ \t]+(?P<value>[A-Za-z0-9_~+/-][A-Za-z0-9._~+/-]*=*)"
)
#: URL / DSN credentials: ``scheme://user:<password>@host`` keeps all but the password.
_DSN = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/?#@\"'<>]*:)[^\s@/?#\"'<>]+(?=@)"
)
#: JWTs and Tinybird tokens (p.eyJ...).
_JWT = re.compile(r"\b(?:p\.)?eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]+)*")
#: Well-known key formats: AWS access key ids, GitHub, GitLab, Slack (tokens and webhook
#: URLs' secret path), Stripe, Google API keys, Logfire write tokens, npm, Hugging Face,
#: SendGrid.
_KNOWN = re.compile(
    r"\b(?:(?:AKIA|ASIA)[A-Z0-9]{16}\b"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|(?<=hooks\.slack\.com/services/)T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]{16,}"
    r"|[rs]k_(?:live|test)_[A-Za-z0-9]{10,}"
    r"|AIza[0-9A-Za-z_-]{30,}"
    r"|pylf_v[0-9]+_[A-Za-z0-9_]{16,}"
    r"|npm_[A-Za-z0-9]{36,}|hf_[A-Za-z0-9]{30,}"
    r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,})"
)
#: OpenAI/Anthropic keys (``sk-`` and a run holding a digit, checked by ``_replace_sk``: a
#: lookahead for the digit would rescan the run from every ``sk-`` in it).
_SK = re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")
_DIGIT = re.compile(r"[0-9]")
#: Card numbers: 15-19 digits starting with 3-6 (Amex, Visa, Mastercard, Discover...),
#: optionally grouped by spaces or dashes, that pass the Luhn check; millisecond
#: timestamps (13 digits) and snowflake ids (starting with 1) are left alone.
_CARD = re.compile(r"\b[3-6](?:[ -]?\d){14,18}\b")
#: ``key=value`` / ``"key": "value"`` / ``Authorization: Bearer ...``: found from the
#: separator back to the key (judged by ``secret_key``), then forward to the value.
_SEPARATOR = re.compile(r"[=:]")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_AFTER_SEPARATOR = re.compile(
    r"[ \t]*(?P<quote>[\"']?)"
    r"(?P<scheme>(?i:bearer|basic|token|digest|negotiate|apikey|sso-key)[ \t]+)?"
)
_BARE_VALUE = re.compile(r"[^\s\"',;&]+")
#: A ``Bearer`` value that is the key of the next pair (``expires_in=3600``, and with a
#: ``:`` only a snake_case name: ``Bearer 8f14e45f...: rejected`` is a token).
_ASSIGNMENT = re.compile(r"=[A-Za-z0-9]")
_SNAKE = re.compile(r"[a-z]+(?:_[a-z]+)+")
_MAX_KEY = 64

#: The batch pre-check (``screen``): a text with none of these (lowercased), none of
#: ``_CASED_HINTS`` and no run of 15 digits (spaces and dashes between them ignored)
#: cannot match any pattern.  ``_may_match_defaults`` is the same test for one text, a
#: little finer (the words of a secret key count only next to a ``=`` or ``:``).
_HINT_WORDS = (
    "pass", "key", "token", "secret", "auth", "earer", "basic", "pwd", "sess", "cookie",
    "credential", "srf", "jwt", "ssn", "cvv", "cvc", "://", "sk-", "xox", "k_live", "k_test",
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat", "pylf_", "connect.sid", "glpat-",
    "npm_", "hf_", "hooks.slack.com",
)  # fmt: skip
_CASED_HINTS = ("AKIA", "ASIA", "AIza", "eyJ", "SG.")
_NON_DIGITS = bytes(b for b in range(256) if not 48 <= b <= 57)
_CARD_DIGITS = 15
_CARD_MAP = bytes(48 if 48 <= b <= 57 else 46 for b in range(256))  # digits to "0", else "."
_CARD_RUN = b"0" * _CARD_DIGITS


def _has_card_digits(value: str) -> bool:
    return len(value.encode("utf-8", "replace").translate(None, _NON_DIGITS)) >= _CARD_DIGITS


def _may_match_defaults(value: str) -> bool:
    """False when no default pattern can match ``value`` (a few substring scans)."""
    if "=" in value or ":" in value:
        low = value.lower()
        if (
            "pass" in low or "key" in low or "token" in low or "secret" in low or "auth" in low
            or "pwd" in low or "sess" in low or "cookie" in low or "credential" in low
            or "srf" in low or "jwt" in low or "ssn" in low or "cvv" in low or "cvc" in low
            or "connect.sid" in low or ("://" in value and "@" in value)
        ):  # fmt: skip
            return True
    return (
        "earer" in value or "EARER" in value or "asic" in value or "ASIC" in value
        or "eyJ" in value or "KEY-----" in value or _known_hint(value)
        or _has_card_digits(value)
    )  # fmt: skip


def _json_hint(text: str) -> bool:
    """``_may_match_defaults``, and the keys a JSON text may hold that no pattern has a hint of."""
    if _may_match_defaults(text):
        return True
    low = text.lower()
    return (
        "addr" in low or "forwarded" in low or "real" in low or "card" in low
        or "social" in low or "symfony" in low
    )  # fmt: skip


def _known_hint(value: str) -> bool:
    return (
        "sk-" in value or "xox" in value or "AKIA" in value or "ASIA" in value
        or "AIza" in value or "glpat-" in value or "SG." in value or "hooks.slack.com" in value
        or ("_" in value and ("gh" in value or "k_live" in value or "k_test" in value
                              or "pylf" in value or "npm_" in value or "hf_" in value))
    )  # fmt: skip


def _token_shaped(value: str) -> bool:
    """A credential, not a word: a digit, a ``+/=_~``, or a capital after a small letter."""
    if any(c.isdigit() or c in "+/=_~" for c in value):
        return True
    return any(value[i].islower() and value[i + 1].isupper() for i in range(len(value) - 1))


def _replace_bearer(match: re.Match[str]) -> str:
    value = match["value"]
    bare = value.rstrip(".")  # the end of a sentence is not part of the token
    core = bare.rstrip("=")  # nor is base64's padding a sign of one ("Basic realm=")
    if len(core) < 8 or not _token_shaped(core):
        return match.group()
    after = match.start("value") + len(core)
    if _ASSIGNMENT.match(match.string, after) or (
        match.string.startswith(":", after) and _SNAKE.fullmatch(core)
    ):
        return match.group()  # "token_type=bearer expires_in=3600": the next pair's key
    return f"{match['scheme']} {REDACTED}{value[len(bare) :]}"


def _replace_sk(match: re.Match[str]) -> str:
    return REDACTED if _DIGIT.search(match.group()) else match.group()


def _session_shaped(value: str) -> bool:
    """A session id, not a count or a word: 8 characters or more, no blank, token-shaped."""
    return len(value) >= 8 and not any(c.isspace() for c in value) and _token_shaped(value)


def _replace_card(match: re.Match[str]) -> str:
    text = match.group()
    return REDACTED if _luhn(text.replace(" ", "").replace("-", "")) else text


_SCALARS = frozenset((int, float, bool, type(None)))
_MAX_DEPTH = 32
_KEY_CACHE_MAX = 4096


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _session_key(key: str) -> bool:
    """``session``, ``session_id``, ``PHPSESSID``: a key naming a session id (not a cookie)."""
    words = _words(key)
    while len(words) > 1 and (words[-1] in _FORM_WORDS or words[-1].isdigit()):
        words = words[:-1]
    if not words:
        return False
    if words[-1] in _SESSION_WORDS:
        return True
    return len(words) > 1 and words[-2] == "session" and words[-1] in ("id", "key")


def _normal(key: str) -> str:
    return "_".join(_words(key))


class Redactor:
    """Scrubs secret keys and secret-looking values from tblog's event dicts and rows."""

    def __init__(self, keys: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self.keys = frozenset(k for k in (_normal(k) for k in keys) if k)
        self._suffixes = tuple("_" + k for k in self.keys)
        self._prefixes = tuple(k + "_" for k in self.keys)
        self._user = tuple(re.compile(p) for p in patterns)
        self._key_cache: dict[str, bool] = {}

    # -- keys --------------------------------------------------------------------------

    def secret_key(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        known = self._key_cache.get(key)
        if known is None:
            words = _words(key)
            known = _default_secret(words)
            if not known and self.keys:
                k = "_".join(words)
                known = k in self.keys or k.endswith(self._suffixes) or k.startswith(self._prefixes)
            if len(self._key_cache) >= _KEY_CACHE_MAX:
                self._key_cache.clear()
            self._key_cache[key] = known
        return known

    # -- values ------------------------------------------------------------------------

    def text(self, value: str) -> str:
        """``value`` with every secret-looking match replaced."""
        if len(value) < 8:
            return value
        if _may_match_defaults(value):
            value = self._scrub(value)
        for pattern in self._user:
            value = pattern.sub(REDACTED, value)
        return value

    def screen(self, texts: list[str]) -> list[bool] | None:
        """Which of ``texts`` ``text()`` might change; None when it would change none of them.

        A few C-level scans over all of them joined find the hints of a secret; only the
        texts that hold one are flagged, so a batch of ordinary log messages costs no
        per-message work.  A text flagged True may still come out unchanged (the patterns
        decide); one flagged False surely does.
        """
        if self._user:
            return [len(t) >= 8 for t in texts]
        unique = dict.fromkeys(texts)
        if len(unique) < len(texts):
            # repeated messages (a constant one, logged in a loop) are scanned once: a text's
            # flag depends only on it and on what the batch holds, which repeats do not change
            flags = self._screen(list(unique))
            if flags is None:
                return None
            judged = dict(zip(unique, flags, strict=True))
            return [judged[t] for t in texts]
        return self._screen(texts)

    def _screen(self, texts: list[str]) -> list[bool] | None:
        """``screen`` without the user's patterns, for ``texts`` as given."""
        joined = "\x00".join(texts)
        low = joined.lower()
        found = [w for w in _HINT_WORDS if w in low]
        found_cased = [w for w in _CASED_HINTS if w in joined]
        runs = joined.encode("utf-8", "replace").translate(_CARD_MAP, b" -")
        if _CARD_RUN in runs or len(low) != len(joined):
            # a card-like run, or lowercasing moved offsets: judge each text on its own
            each = [len(t) >= 8 and _may_match_defaults(t) for t in texts]
            return each if any(each) else None
        if not found and not found_cased:
            return None
        starts: list[int] = []
        offset = 0
        for t in texts:
            starts.append(offset)
            offset += len(t) + 1
        flags = [False] * len(texts)
        for haystack, words in ((low, found), (joined, found_cased)):
            for word in words:
                at = haystack.find(word)
                while at >= 0:
                    i = bisect_right(starts, at) - 1
                    flags[i] = len(texts[i]) >= 8
                    at = haystack.find(word, starts[i + 1] if i + 1 < len(starts) else offset)
        return flags if any(flags) else None

    def flat(self, mapping: dict[Any, Any]) -> dict[Any, Any]:
        """``mapping`` itself when it surely holds no secret, else ``self.mapping(mapping)``.

        The common ``extra``: a few keys (each judged once) with scalar or short values.
        """
        cache = self._key_cache
        for k, v in mapping.items():
            hidden = cache.get(k) if type(k) is str else None
            if hidden is None:
                hidden = self.secret_key(k)
            if hidden:
                return self.mapping(mapping)
            t = type(v)
            if t is str:
                if len(v) >= 8 and (self._user or _may_match_defaults(v)):
                    return self.mapping(mapping)
            elif t not in _SCALARS:
                return self.mapping(mapping)
        return mapping

    def _scrub(self, value: str) -> str:
        """Every default pattern whose hint is in ``value``, in turn."""
        if "PRIVATE KEY-----" in value:
            value = _PEM.sub(REDACTED, value)
        if "=" in value or ":" in value:
            value = self._pairs(value)
        low = value.lower()
        if "earer" in low or "basic" in low:
            value = _BEARER.sub(_replace_bearer, value)
        if "://" in value and "@" in value:
            value = _DSN.sub(r"\g<head>" + REDACTED, value)
        if "eyJ" in value:
            value = _JWT.sub(REDACTED, value)
        if _known_hint(value):
            if "sk-" in value:
                value = _SK.sub(_replace_sk, value)
            value = _KNOWN.sub(REDACTED, value)
        if _has_card_digits(value):
            value = _CARD.sub(_replace_card, value)
        return value

    def _pairs(self, text: str) -> str:
        """``text`` with the value of every ``key=value``/``key: value`` of a secret key hidden.

        From each ``=`` or ``:`` back over an optional quote and blanks to the key (up to
        ``_MAX_KEY`` characters, and the word before it after one space: ``API key: ...``,
        ``next token: ...``), judged like a dict key; then forward over blanks, an
        optional quote and an optional scheme (``Bearer``, ``token``...) to the value: up
        to the closing quote, else to a blank or one of ``"',;&``.
        """
        out: list[str] = []
        done = 0  # text[:done] is in out
        for sep in _SEPARATOR.finditer(text):
            i = sep.start()
            if i < done:
                continue
            j = i
            while j > done and text[j - 1] in " \t":
                j -= 1
            if j > done and text[j - 1] in "\"'":
                j -= 1
            k = j
            while k > done and j - k < _MAX_KEY and text[k - 1] in _KEY_CHARS:
                k -= 1
            if k == j:
                continue
            if k - 1 > done and text[k - 1] == " ":
                # "API key: ...", "next token: ...": the word before is part of the key
                w = k - 1
                while w > done and k - w < _MAX_KEY and text[w - 1] in _KEY_CHARS:
                    w -= 1
                if w < k - 1:
                    k = w
            if not self.secret_key(text[k:j]):
                continue
            after = _AFTER_SEPARATOR.match(text, i + 1)
            if after is None:  # pragma: no cover - the pattern matches the empty string
                continue
            start = after.end()
            quote = after["quote"]
            if quote:
                end = text.find(quote, start)
                if end < 0:
                    end = len(text)
            else:
                bare = _BARE_VALUE.match(text, start)
                end = bare.end() if bare is not None else start
            if end == start or text[start:end].lower() in _STATUS_VALUES:
                continue
            if _session_key(text[k:j]) and not _session_shaped(text[start:end]):
                continue
            out.append(text[done:start])
            out.append(REDACTED)
            done = end
        if not out:
            return text
        out.append(text[done:])
        return "".join(out)

    def value(self, value: Any, depth: int = 0, path: frozenset[int] = frozenset()) -> Any:
        """A scrubbed copy of ``value`` (scalars and unknown objects are returned as they are)."""
        if isinstance(value, str):
            return self.text(value)
        if depth >= _MAX_DEPTH:
            return value
        if isinstance(value, (Mapping, list, tuple)):
            if id(value) in path:
                return CIRCULAR
            path = path | {id(value)}
            if isinstance(value, Mapping):
                return self.mapping(value, depth + 1, path)
            return [self.value(v, depth + 1, path) for v in value]
        return value

    def mapping(
        self, mapping: Mapping[Any, Any], depth: int = 0, path: frozenset[int] = frozenset()
    ) -> dict[Any, Any]:
        """A scrubbed copy of ``mapping``: secret keys' values hidden, texts scrubbed."""
        try:
            items = list(mapping.items())
        except Exception:  # noqa: BLE001 - a broken mapping is left to the encoder's fallbacks
            return dict(mapping) if isinstance(mapping, dict) else {}
        path = path | {id(mapping)}
        cache = self._key_cache
        out: dict[Any, Any] = {}
        for k, v in items:
            hidden = cache.get(k) if isinstance(k, str) else False
            if hidden is None:
                hidden = self.secret_key(k)
            if hidden:
                out[k] = REDACTED
            elif type(v) in _SCALARS:
                out[k] = v
            elif type(v) is str:
                out[k] = self.text(v) if len(v) >= 8 else v
            else:
                out[k] = self.value(v, depth, path)
        return out

    # -- events and rows ---------------------------------------------------------------

    def event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Scrub an event tblog built (in place: the dict is tblog's own) and return it.

        Both schemas: ``tblog`` (``exception``) and the Tinybird Python SDK's (``exc_info``,
        ``formatted_message``, ``args``).
        """
        extra = event.get("extra")
        if extra:
            event["extra"] = self.mapping(extra) if isinstance(extra, Mapping) else extra
        for key in ("message", "formatted_message", "stack_info"):
            text = event.get(key)
            if type(text) is str and len(text) >= 8:
                event[key] = self.text(text)
        for key in ("exception", "exc_info"):
            exc = event.get(key)
            if isinstance(exc, dict):
                event[key] = {k: self.text(v) if isinstance(v, str) else v for k, v in exc.items()}
        args = event.get("args")
        if args:
            event["args"] = self.value(args)
        return event

    def row(self, row: Mapping[str, Any], json_columns: Iterable[str] = ()) -> dict[str, Any]:
        """A scrubbed copy of one of tblog's own rows (the tracker's, LiteLLM's, a trace's).

        Its columns are tblog's, so their names are never judged (``prompt_tokens`` and
        LiteLLM's masked ``api_key`` stay); their values are: texts scrubbed, dicts and
        lists as in ``extra`` (keys judged at any depth), and the ``json_columns`` (JSON
        text) as the data they encode.
        """
        as_json = frozenset(json_columns)
        out: dict[str, Any] = {}
        for k, v in row.items():
            t = type(v)
            if t in _SCALARS:
                out[k] = v
            elif t is str:
                out[k] = self.json_text(v) if k in as_json else self.text(v)
            else:
                out[k] = self.value(v)
        return out

    def json_text(self, text: str) -> str:
        """JSON ``text`` scrubbed as the data it encodes (keys judged); other text as ``text()``.

        Re-encoded only when something was hidden; parsed only when a hint of a secret (or
        of a key that names one) is in it.
        """
        if len(text) < 8 or not (self._user or self.keys or _json_hint(text)):
            return text
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return self.text(text)
        scrubbed = self.value(data)
        if scrubbed == data:
            return text
        return json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":"), default=str)

    def line(self, line: bytes) -> bytes:
        """One NDJSON line (a ``Datasource`` row given as text) scrubbed like a dict row."""
        text = line.decode("utf-8", "replace")
        if len(text) < 8 or not (self._user or self.keys or _json_hint(text)):
            return line
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # not JSON (the server will quarantine it)
            scrubbed_text = self.text(text)
            return line if scrubbed_text == text else scrubbed_text.encode("utf-8")
        scrubbed = self.value(data)
        if scrubbed == data:
            return line
        return json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def build_redactor(enabled: bool, keys: Iterable[str], patterns: Iterable[str]) -> Redactor | None:
    """The producer's redactor, or None when ``redact=False``."""
    return Redactor(keys, patterns) if enabled else None
