"""Access tokens of the local server: admin, append per datasource, read per datasource.

A token may carry a row filter (a SQL condition such as ``tenant_id = 'acme'``), as
Tinybird's tenant-scoped tokens do: appended rows must match it and reads only see
rows that match it.  Scopes are written as in Tinybird: ``ADMIN``,
``DATASOURCES:APPEND:<name>``, ``DATASOURCES:READ:<name>`` (or Tinybird's suffix form
``DATASOURCES:READ:<name>:<sql_filter>``, which sets the token's row filter),
``DATASOURCES:CREATE`` (create datasources, append to and truncate any) and
``PIPES:READ:<pipe>``.  Token values never appear in a repr or an error message.

``Tokens(path)`` keeps the tokens in ``path`` (``tokens.json`` in the data dir; JSON,
mode 0600, replaced atomically on each change) and loads them back, so a restarted
server accepts the same ones: the server's own admin token (``admin()``: a value the
caller gives wins for this run and is never written; else the saved one; else a new
one, saved) and every token created since.  ``Tokens()`` keeps them in memory only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tblog.local.datadir import write_private

__all__ = [
    "TOKENS_FILE",
    "Scopes",
    "Token",
    "TokenError",
    "TokenFileError",
    "Tokens",
    "json_request",
]

#: The file in the data dir that holds the tokens.
TOKENS_FILE = "tokens.json"
_FORMAT = 1

ADMIN = "ADMIN"
CREATE = "DATASOURCES:CREATE"
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
    create: bool = False  # DATASOURCES:CREATE
    pipes: frozenset[str] = frozenset()  # PIPES:READ:<pipe>
    description: str = ""
    expires: int | None = None  # Unix time after which the token is refused

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (time.time() if now is None else now) >= self.expires

    @property
    def id(self) -> str:
        """A stable id (uuid-shaped, derived from the value by a one-way hash)."""
        digest = hashlib.sha256(b"tblog-token-id\0" + self.value.encode()).hexdigest()
        return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"

    def can_append(self, datasource: str) -> bool:
        return self.admin or self.create or datasource in self.append

    def can_read(self, datasource: str) -> bool:
        return self.admin or datasource in self.read

    def can_read_pipe(self, pipe: str) -> bool:
        return self.admin or pipe in self.pipes

    def scopes(self) -> list[str]:
        if self.admin:
            return [ADMIN]
        return (
            ([CREATE] if self.create else [])
            + [f"DATASOURCES:APPEND:{d}" for d in sorted(self.append)]
            + [f"DATASOURCES:READ:{d}" for d in sorted(self.read)]
            + [f"PIPES:READ:{p}" for p in sorted(self.pipes)]
        )


@dataclass
class Scopes:
    """What a list of scope strings grants (see ``parse_scopes``)."""

    admin: bool = False
    create: bool = False
    append: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)
    pipes: set[str] = field(default_factory=set)
    #: The ``:sql_filter`` suffixes of ``DATASOURCES:READ:<name>:<filter>`` scopes.
    filters: set[str] = field(default_factory=set)


def parse_scopes(scopes: list[str]) -> Scopes:
    out = Scopes()
    for scope in scopes:
        parts = scope.strip().split(":", 3)
        kind = parts[0].upper()
        verb = parts[1].upper() if len(parts) > 1 else ""
        if kind == ADMIN and len(parts) == 1:
            out.admin = True
        elif scope.strip().upper() == CREATE:
            out.create = True
        elif kind == "DATASOURCES" and len(parts) >= 3 and verb in (APPEND, READ) and parts[2]:
            if len(parts) == 4:  # Tinybird's DATASOURCES:READ:<name>:<sql_filter>
                if verb != READ or not parts[3].strip():
                    raise TokenError(f"unknown scope {scope!r}: only DATASOURCES:READ takes a "
                                     ":<sql_filter> suffix")  # fmt: skip
                out.filters.add(parts[3].strip())
            (out.append if verb == APPEND else out.read).add(parts[2].strip())
        elif kind == "PIPES" and len(parts) == 3 and verb == READ and parts[2].strip():
            out.pipes.add(parts[2].strip())
        else:
            raise TokenError(
                f"unknown scope {scope!r}: use ADMIN, DATASOURCES:CREATE, "
                "DATASOURCES:APPEND:<name>, DATASOURCES:READ:<name>[:<sql_filter>] or "
                "PIPES:READ:<pipe>"
            )
    return out


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
        description: str = "",
        expires: int | None = None,
    ) -> Token:
        """A new token, saved (when there is a file) before it is accepted: ``OSError``
        if it cannot be saved."""
        token = _make(name, scopes, row_filter, value, description=description, expires=expires)
        with self._lock:
            self._save(self._saved_admin, [*self._saved, token])
            self._saved.append(token)
            self._tokens.append(token)
        return token

    def find(self, value: str) -> Token | None:
        """The token of ``value``; None when there is none or it has expired."""
        if not value:
            return None
        found = None
        with self._lock:
            for token in self._tokens:
                if hmac.compare_digest(token.value.encode(), value.encode()):
                    found = token
        return None if found is None or found.expired() else found

    def all(self) -> list[Token]:
        """Every token the server accepts (expired ones left out), in creation order."""
        seen: set[str] = set()
        out: list[Token] = []
        with self._lock:
            for token in self._tokens:
                if token.value not in seen and not token.expired():
                    seen.add(token.value)
                    out.append(token)
        return out

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
                {
                    "name": t.name,
                    "token": t.value,
                    "scopes": t.scopes(),
                    "filter": t.row_filter,
                    "description": t.description,
                    "expires": t.expires,
                }
                for t in tokens
            ],
        }
        write_private(self._path, json.dumps(data, indent=1).encode() + b"\n")


def _make(name: str, scopes: list[str], row_filter: str | None, value: str | None, *,
          description: str = "", expires: int | None = None) -> Token:  # fmt: skip
    parsed = parse_scopes(scopes)
    if not (parsed.admin or parsed.create or parsed.append or parsed.read or parsed.pipes):
        raise TokenError("a token needs at least one scope")
    row_filter = (row_filter or "").strip() or None
    if parsed.filters:  # one row filter per token: the suffixes must agree with it
        filters = parsed.filters | ({row_filter} if row_filter else set())
        if len(filters) > 1:
            raise TokenError("a token takes one row filter: its :sql_filter suffixes and "
                             "its filter differ")  # fmt: skip
        row_filter = filters.pop()
    if row_filter and (parsed.admin or parsed.create):
        raise TokenError("a row filter cannot limit an ADMIN or DATASOURCES:CREATE token")
    return Token(
        name=name,
        value=value or f"p.local_{secrets.token_urlsafe(24)}",
        admin=parsed.admin,
        append=frozenset(parsed.append),
        read=frozenset(parsed.read),
        row_filter=row_filter,
        create=parsed.create,
        pipes=frozenset(parsed.pipes),
        description=description,
        expires=expires,
    )


def json_request(body: Any) -> tuple[str, list[str], str | None, str]:
    """(name, scopes, row filter, description) of a JSON token request, as Tinybird's
    API and SDKs send it: ``{"name": ..., "scopes": [...], "description": ...}`` where a
    scope is a string (``DATASOURCES:READ:logs``) or an object (``{"type":
    "DATASOURCES:READ", "resource": "logs", "filter": "..."}``).  ``TokenError`` when
    it is not one, or asks for what the local server cannot enforce (``fixed_params``)."""
    if not isinstance(body, dict):
        raise TokenError("the token request must be a JSON object")
    name, description = body.get("name", "token"), body.get("description", "")
    raw = body.get("scopes", body.get("scope", []))
    if not isinstance(name, str) or not isinstance(description, str):
        raise TokenError("name and description must be strings")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise TokenError("scopes must be a list")
    scopes: list[str] = []
    filters: set[str] = set()
    for item in raw:
        if isinstance(item, str):
            scopes.append(item)
            continue
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise TokenError("each scope is a string or an object with a type")
        if item.get("fixed_params"):
            raise TokenError("fixed_params are not supported by tblog local: the token "
                             "would read more than it should")  # fmt: skip
        resource = item.get("resource")
        scopes.append(item["type"] + (f":{resource}" if resource else ""))
        if item.get("filter"):
            filters.add(str(item["filter"]))
    if len(filters) > 1:
        raise TokenError("a token takes one row filter: its scopes' filters differ")
    return name, scopes, (filters.pop() if filters else None), description


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
                  _value(t["token"]), description=str(t.get("description") or ""),
                  expires=int(t["expires"]) if t.get("expires") is not None else None)
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
