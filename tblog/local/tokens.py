"""Access tokens of the local server: admin, append per datasource, read per datasource.

A token may carry a row filter (a SQL condition such as ``tenant_id = 'acme'``), as
Tinybird's tenant-scoped tokens do: appended rows must match it and reads only see
rows that match it.  Scopes are written as in Tinybird: ``ADMIN``,
``DATASOURCES:APPEND:<name>``, ``DATASOURCES:READ:<name>``.  Token values never
appear in a repr or an error message.

``Tokens(path)`` keeps the tokens in ``path`` (``tokens.json`` in the data dir; JSON,
mode 0600, replaced atomically on each change) and loads them back, so a restarted
server accepts the same ones: the server's own admin token (``admin()``: a value the
caller gives wins for this run and is never written; else the saved one; else a new
one, saved) and every token created since.  ``Tokens()`` keeps them in memory only.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tblog.local.datadir import write_private

__all__ = ["TOKENS_FILE", "Token", "TokenError", "TokenFileError", "Tokens"]

#: The file in the data dir that holds the tokens.
TOKENS_FILE = "tokens.json"
_FORMAT = 1

ADMIN = "ADMIN"
APPEND = "APPEND"
READ = "READ"


class TokenError(ValueError):
    """A scope that cannot be understood."""


class TokenFileError(RuntimeError):
    """The saved tokens cannot be read (the message names the file, never a token)."""


@dataclass(frozen=True)
class Token:
    name: str
    value: str = field(repr=False)
    admin: bool = False
    append: frozenset[str] = frozenset()
    read: frozenset[str] = frozenset()
    row_filter: str | None = None

    def can_append(self, datasource: str) -> bool:
        return self.admin or datasource in self.append

    def can_read(self, datasource: str) -> bool:
        return self.admin or datasource in self.read

    def scopes(self) -> list[str]:
        if self.admin:
            return [ADMIN]
        return [f"DATASOURCES:APPEND:{d}" for d in sorted(self.append)] + [
            f"DATASOURCES:READ:{d}" for d in sorted(self.read)
        ]


def parse_scopes(scopes: list[str]) -> tuple[bool, set[str], set[str]]:
    admin = False
    append: set[str] = set()
    read: set[str] = set()
    for scope in scopes:
        parts = scope.strip().split(":", 2)
        kind = parts[0].upper()
        if kind == ADMIN and len(parts) == 1:
            admin = True
        elif kind == "DATASOURCES" and len(parts) == 3 and parts[1].upper() in (APPEND, READ):
            (append if parts[1].upper() == APPEND else read).add(parts[2].strip())
        else:
            raise TokenError(
                f"unknown scope {scope!r}: use ADMIN, DATASOURCES:APPEND:<name> or "
                "DATASOURCES:READ:<name>"
            )
    return admin, append, read


class Tokens:
    """The server's tokens, looked up in constant time per candidate; saved in ``path``
    when one is given (see the module's docstring)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self._tokens: list[Token] = []
        self._path = Path(path) if path is not None else None
        self._saved_admin: Token | None = None
        self._saved: list[Token] = []  # the tokens made by add(), as the file holds them
        if self._path is not None:
            self._saved_admin, self._saved = _load(self._path)
            self._tokens.extend(self._saved)

    def admin(self, value: str | None = None) -> Token:
        """The server's admin token: ``value`` (for this run only), else the saved one,
        else a new one (saved)."""
        if value:
            return self._put(_make("admin token", [ADMIN], None, value))
        if self._saved_admin is not None:
            return self._put(self._saved_admin)
        token = _make("admin token", [ADMIN], None, None)
        with self._lock:
            self._save(token, self._saved)
            self._saved_admin = token
            self._tokens.append(token)
        return token

    def add(
        self,
        name: str,
        scopes: list[str],
        *,
        row_filter: str | None = None,
        value: str | None = None,
    ) -> Token:
        """A new token, saved (when there is a file) before it is accepted: ``OSError``
        if it cannot be saved."""
        token = _make(name, scopes, row_filter, value)
        with self._lock:
            self._save(self._saved_admin, [*self._saved, token])
            self._saved.append(token)
            self._tokens.append(token)
        return token

    def find(self, value: str) -> Token | None:
        if not value:
            return None
        found = None
        with self._lock:
            for token in self._tokens:
                if hmac.compare_digest(token.value.encode(), value.encode()):
                    found = token
        return found

    def _put(self, token: Token) -> Token:
        with self._lock:
            self._tokens.append(token)
        return token

    def _save(self, admin: Token | None, tokens: list[Token]) -> None:
        """Write the file (caller holds the lock); nothing without a path."""
        if self._path is None:
            return
        data = {
            "format": _FORMAT,
            "admin": admin.value if admin is not None else None,
            "tokens": [
                {"name": t.name, "token": t.value, "scopes": t.scopes(), "filter": t.row_filter}
                for t in tokens
            ],
        }
        write_private(self._path, json.dumps(data, indent=1).encode() + b"\n")


def _make(name: str, scopes: list[str], row_filter: str | None, value: str | None) -> Token:
    admin, append, read = parse_scopes(scopes)
    if not (admin or append or read):
        raise TokenError("a token needs at least one scope")
    return Token(
        name=name,
        value=value or f"p.local_{secrets.token_urlsafe(24)}",
        admin=admin,
        append=frozenset(append),
        read=frozenset(read),
        row_filter=(row_filter or "").strip() or None,
    )


def _load(path: Path) -> tuple[Token | None, list[Token]]:
    """The saved admin token and the others; none when there is no file yet."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, []
    except (OSError, ValueError) as exc:
        raise TokenFileError(_unreadable(path, type(exc).__name__)) from None
    try:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise TypeError("not a tokens file of this tblog")
        admin_value = data.get("admin")
        admin = None
        if admin_value is not None:
            admin = _make("admin token", [ADMIN], None, _value(admin_value))
        tokens = [
            _make(str(t["name"]), [str(s) for s in t["scopes"]], t.get("filter"),
                  _value(t["token"]))
            for t in data.get("tokens", [])
        ]  # fmt: skip
    except (TypeError, KeyError, AttributeError, TokenError) as exc:
        raise TokenFileError(_unreadable(path, str(exc) if isinstance(exc, TypeError) else
                                         type(exc).__name__)) from None  # fmt: skip
    return admin, tokens


def _value(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("a token value is not a string")
    return value


def _unreadable(path: Path, why: str) -> str:
    return (f"cannot read the saved tokens in {path} ({why}); fix that file, or delete it "
            "to start with new tokens")  # fmt: skip
