"""Redaction: secrets scrubbed from an event before it leaves the process (sender thread).

``Redactor.event`` takes an event dict that tblog built (its own dict, so it may be
changed in place) and replaces, in ``extra`` (the record's extras and the bound fields,
at any depth), the exception text, the message and the formatted message:

* the value of every key that names a secret (``password``, ``passwd``, ``secret``,
  ``token``, ``api_key``, ``authorization``, ``cookie``, ``set-cookie`` and the user's
  own keys), matched case-insensitively with ``-`` and ``_`` alike, also as the first or
  last word of a longer key (``db_password``, ``access_token``, ``X-Api-Key``), but not
  inside another word (``tokens``, ``prompt_tokens`` are left alone);
* every match of the value patterns in any text: bearer/basic credentials, JWTs and
  Tinybird tokens, ``password=...``-style pairs, card numbers (15 to 19 digits starting
  with 3 to 6 that pass the Luhn check), and the user's own regular expressions.

Containers the caller owns (nested dicts and lists in ``extra``) are never modified:
scrubbing builds new ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"
CIRCULAR = "<circular reference>"  # the encoder's own marker (tblog._encode.jsonable)

DEFAULT_KEYS = (
    "password", "passwd", "secret", "token", "api_key", "apikey", "authorization",
    "cookie", "set_cookie",
)  # fmt: skip

_DEFAULT_PATTERNS = (
    # "Authorization: Bearer abc..." / "Basic dXNlcjpwYXNz": keep the scheme, hide the secret
    r"(?P<scheme>\b(?:[Bb]earer|BEARER|[Bb]asic|BASIC))\s+[A-Za-z0-9._~+/=-]{8,}",
    # JWTs, Tinybird tokens (p.eyJ...)
    r"\b(?:p\.)?eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]+)*",
    # password=hunter2, "api_key": "..." in free text
    r"(?P<key>(?i:\b(?:password|passwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)))"
    r"(?P<sep>[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]+",
    # card numbers: 15-19 digits starting with 3-6 (Amex, Visa, Mastercard, Discover...),
    # optionally grouped by spaces or dashes, that pass the Luhn check; millisecond
    # timestamps (13 digits) and snowflake ids (starting with 1) are left alone
    r"(?P<card>\b[3-6](?:[ -]?\d){14,18}\b)",
)

#: Texts that contain none of "earer", "basic", "eyj", "pass", "secret", "key", "token"
#: and fewer than 15 digits cannot match the default patterns: they skip the regexes.
_NON_DIGITS = bytes(b for b in range(256) if not 48 <= b <= 57)
_CARD_DIGITS = 15

#: The pre-check of the default patterns: a text with none of these words (lowercased) and
#: no run of 15 digits (spaces and dashes between them ignored) cannot match any of them.
_HINT_WORDS = ("earer", "basic", "eyj", "pass", "secret", "key", "token")
_CARD_MAP = bytes(48 if 48 <= b <= 57 else 46 for b in range(256))  # digits to "0", else "."
_CARD_RUN = b"0" * _CARD_DIGITS


def _may_match_defaults(value: str) -> bool:
    low = value.lower()
    return (
        "earer" in low or "basic" in low or "eyj" in low or "pass" in low
        or "secret" in low or "key" in low or "token" in low
        or len(value.encode("utf-8", "replace").translate(None, _NON_DIGITS)) >= _CARD_DIGITS
    )  # fmt: skip


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


def _normal(key: str) -> str:
    return key.lower().replace("-", "_").strip("_")


class Redactor:
    """Scrubs secret keys and secret-looking values from tblog's event dicts."""

    def __init__(self, keys: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self.keys = frozenset(_normal(k) for k in (*DEFAULT_KEYS, *keys))
        self._suffixes = tuple("_" + k for k in self.keys)
        self._prefixes = tuple(k + "_" for k in self.keys)
        self._pattern = re.compile("|".join(f"(?:{p})" for p in _DEFAULT_PATTERNS))
        self._user = tuple(re.compile(p) for p in patterns)
        self._key_cache: dict[str, bool] = {}

    # -- keys --------------------------------------------------------------------------

    def secret_key(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        known = self._key_cache.get(key)
        if known is None:
            k = _normal(key)
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
            value = self._pattern.sub(self._replace, value)
        for pattern in self._user:
            value = pattern.sub(REDACTED, value)
        return value

    def screen(self, texts: list[str]) -> list[bool] | None:
        """Which of ``texts`` ``text()`` might change; None when it would change none of them.

        One pass over all of them joined: a batch of ordinary log messages costs a few
        C-level scans instead of one pre-check per message.  A text flagged True may still
        come out unchanged (the patterns decide); one flagged False surely does.
        """
        if self._user:
            return [len(t) >= 8 for t in texts]
        joined = "\x00".join(texts)
        low = joined.lower()
        if not any(word in low for word in _HINT_WORDS):
            runs = joined.encode("utf-8", "replace").translate(_CARD_MAP, b" -")
            if _CARD_RUN not in runs:
                return None
        return [len(t) >= 8 and _may_match_defaults(t) for t in texts]

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

    @staticmethod
    def _replace(match: re.Match[str]) -> str:
        groups = match.groupdict()
        card = groups.get("card")
        if card is not None:
            digits = card.replace(" ", "").replace("-", "")
            return REDACTED if _luhn(digits) else card
        if groups.get("scheme"):
            return f"{groups['scheme']} {REDACTED}"
        if groups.get("key"):
            return f"{groups['key']}{groups['sep']}{REDACTED}"
        return REDACTED

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

    # -- events ------------------------------------------------------------------------

    def event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Scrub an event tblog built (in place: the dict is tblog's own) and return it."""
        extra = event.get("extra")
        if extra:
            event["extra"] = self.mapping(extra) if isinstance(extra, Mapping) else extra
        text = event.get("message")
        if type(text) is str and len(text) >= 8:
            event["message"] = self.text(text)
        if len(event) > 20:  # the rarer fields: formatted message, exception, stack, args
            for key in ("formatted_message", "stack_info"):
                text = event.get(key)
                if isinstance(text, str):
                    event[key] = self.text(text)
            for key in ("exception", "exc_info"):
                exc = event.get(key)
                if isinstance(exc, dict):
                    event[key] = {
                        k: self.text(v) if isinstance(v, str) else v for k, v in exc.items()
                    }
            args = event.get("args")
            if args:
                event["args"] = self.value(args)
        return event


def build_redactor(enabled: bool, keys: Iterable[str], patterns: Iterable[str]) -> Redactor | None:
    """The producer's redactor, or None when ``redact=False``."""
    return Redactor(keys, patterns) if enabled else None
