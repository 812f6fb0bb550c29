"""Workspace and token discovery of ``tblog local``, as Tinybird's API serves them.

* ``GET /v0/workspace``: the one workspace a ``tblog local`` is (``id`` stable per data
  dir, ``name`` ``tblog_local``); any valid token may ask, as on Tinybird (the classic
  ``tb`` calls it on every command, ``tb auth`` keeps ``id`` and ``name``).
* ``GET /v0/tokens`` and ``GET /v0/tokens/NAME`` (NAME or id): the tokens, with Tinybird's
  fields (``id``, ``name``, ``description``, ``token``, ``scopes`` as ``{"type",
  "resource", "filter"}`` objects, ``origin``); ADMIN tokens only, since the answer holds
  token values.  Creation (``POST /v0/tokens``, form or JSON) is ``LocalServer.new_token``.
"""

from __future__ import annotations

import hashlib
import re
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from tblog.local.server import LocalServer, PatternRoute
    from tblog.local.tokens import Token

__all__ = ["WORKSPACE_NAME", "routes", "scope_objects", "workspace_id"]

#: The name of the workspace a ``tblog local`` serves.
WORKSPACE_NAME = "tblog_local"
_USER_EMAIL = "local@tblog.invalid"


def _uuid(text: str) -> str:
    d = hashlib.sha256(text.encode()).hexdigest()
    return f"{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:32]}"


def workspace_id(server: LocalServer) -> str:
    """A stable id for the server's workspace (derived from its data dir's path)."""
    return _uuid(f"tblog-local-workspace\0{server.store.data_dir.resolve()}")


def scope_objects(token: Token) -> list[dict[str, Any]]:
    """The token's scopes as Tinybird lists them: ``{"type", "resource", "filter"}``."""
    out: list[dict[str, Any]] = []
    for scope in token.scopes():
        kind, _, resource = scope.partition(":")
        if kind in {"DATASOURCES", "PIPES"}:
            verb, _, resource = resource.partition(":")
            kind = f"{kind}:{verb}"
        item: dict[str, Any] = {"type": kind}
        if resource:
            item["resource"] = resource
        if token.row_filter and kind == "DATASOURCES:READ":
            item["filter"] = token.row_filter
        out.append(item)
    return out


def _token_json(token: Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "description": token.description,
        "token": token.value,
        "scopes": scope_objects(token),
        "origin": {"type": "C"},
        "host": None,
    }


def routes(server: LocalServer) -> list[PatternRoute]:
    """The routes of this module, for ``LocalServer.pattern_routes``."""
    from tblog.local.server import _HTTPError  # noqa: PLC0415 - server.py imports us

    def workspace(h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Any]:
        token = server.authenticate(h, params)
        return 200, {
            "id": workspace_id(server),
            "name": WORKSPACE_NAME,
            "user_id": _uuid(f"tblog-local-user\0{server.store.data_dir.resolve()}"),
            "user_email": _USER_EMAIL,
            "scope": "admin" if token.admin else "guest",
            "role": "admin" if token.admin else "guest",
            "main": None,
            "is_branch": False,
            "plan": "local",
        }

    def admin(h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> None:
        if not server.authenticate(h, params).admin:
            raise _HTTPError(403, "listing tokens needs an ADMIN token")

    def list_tokens(h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Any]:
        admin(h, params)
        return 200, {"tokens": [_token_json(t) for t in server.tokens.all()]}

    def get_token(
        h: BaseHTTPRequestHandler, params: dict[str, list[str]], name: str
    ) -> tuple[int, Any]:
        admin(h, params)
        name = unquote(name)
        for token in server.tokens.all():
            if name in (token.name, token.id):
                return 200, _token_json(token)
        raise _HTTPError(404, f"token '{name}' not found")

    return [
        ("GET", re.compile(r"/v0/workspace"), workspace),
        ("GET", re.compile(r"/v0/tokens"), list_tokens),
        ("GET", re.compile(r"/v0/tokens/([^/]+)"), get_token),
    ]
