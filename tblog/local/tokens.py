"""Access tokens of the local server: admin, append per datasource, read per datasource.

A token may carry a row filter (a SQL condition such as ``tenant_id = 'acme'``), as
Tinybird's tenant-scoped tokens do: appended rows must match it and reads only see
rows that match it.  Scopes are written as in Tinybird: ``ADMIN``,
``DATASOURCES:APPEND:<name>``, ``DATASOURCES:READ:<name>``.  Token values never
appear in a repr or an error message.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass, field

__all__ = ["Token", "TokenError", "Tokens"]

ADMIN = "ADMIN"
APPEND = "APPEND"
READ = "READ"


class TokenError(ValueError):
    """A scope that cannot be understood."""


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
    """The server's tokens, looked up in constant time per candidate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: list[Token] = []

    def add(
        self,
        name: str,
        scopes: list[str],
        *,
        row_filter: str | None = None,
        value: str | None = None,
    ) -> Token:
        admin, append, read = parse_scopes(scopes)
        if not (admin or append or read):
            raise TokenError("a token needs at least one scope")
        token = Token(
            name=name,
            value=value or f"p.local_{secrets.token_urlsafe(24)}",
            admin=admin,
            append=frozenset(append),
            read=frozenset(read),
            row_filter=(row_filter or "").strip() or None,
        )
        with self._lock:
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
