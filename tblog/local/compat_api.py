"""What Tinybird's Forward CLI (``tb --local``) needs of ``tblog local`` beyond the API.

Tinybird Local (the Docker image) tells the CLI its tokens at ``GET /tokens`` with no
token asked: ``{"user_token", "admin_token", "workspace_admin_token"}``.  ``tb --local``
reads it from ``http://$TB_LOCAL_HOST:$TB_LOCAL_PORT`` (localhost:7181, tblog local's
default address) before every command.  ``tblog local`` has one workspace and one admin
token, so all three are that token.

As the answer hands out the admin token, it goes only to a client on a loopback address
(127.0.0.0/8, ::1) of a server bound to loopback; the server's checks of every request
still apply (a Host header that names the server, no ``Origin`` unless allowed: a web page
cannot read it).  Anyone else gets a 404.  On a machine shared with untrusted users,
any local process can read it, as with Tinybird Local.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tblog.local.server import LocalServer, PatternRoute


#: The one workspace of tblog local, as ``/v1/user/workspaces`` lists it.
WORKSPACE_NAME = "tblog_local"
WORKSPACE_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "tblog-local"))
_WORKSPACE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def routes(server: LocalServer) -> list[PatternRoute]:
    """The routes to add to ``server.pattern_routes``."""
    from tblog.local.server import _HTTPError  # noqa: PLC0415 - server.py imports us

    def local_tokens(h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Any]:
        peer = str(h.client_address[0]) if h.client_address else ""
        if not (_loopback(server.bind_host) and _loopback(peer)):
            raise _HTTPError(404, f"no such endpoint: {h.command} /tokens")
        token = server.admin_token
        return 200, {
            "user_token": token,
            "admin_token": token,
            "workspace_admin_token": token,
        }

    # The workspaces `tb --local` made (one per project folder, named by it): names of the
    # one workspace tblog local has, kept for this run of the server only.
    names: dict[str, str] = {}

    def admin(h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> None:
        if not server.authenticate(h, params).admin:
            raise _HTTPError(403, "the admin token is required")

    def entry(name: str, ws_id: str) -> dict[str, Any]:
        return {"id": ws_id, "name": name, "token": server.admin_token, "role": "admin"}

    def list_workspaces(h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Any]:
        admin(h, params)
        found = [entry(WORKSPACE_NAME, WORKSPACE_ID)]
        found += [entry(name, ws_id) for ws_id, name in sorted(names.items())]
        return 200, {"organization_id": "", "workspaces": found}

    def create_workspace(
        h: BaseHTTPRequestHandler, params: dict[str, list[str]]
    ) -> tuple[int, Any]:
        admin(h, params)
        name = (params.get("name") or [""])[0]
        if not _WORKSPACE_NAME.fullmatch(name):
            raise _HTTPError(400, "name: letters, digits and underscores, up to 128")
        ws_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tblog-local/{name}"))
        names[ws_id] = name
        return 200, entry(name, ws_id)

    def delete_workspace(
        h: BaseHTTPRequestHandler, params: dict[str, list[str]], ws_id: str
    ) -> tuple[int, Any]:
        admin(h, params)
        if names.pop(ws_id, None) is None:
            raise _HTTPError(404, "no such workspace")
        return 200, {"ok": True}

    return [
        ("GET", re.compile(r"/tokens"), local_tokens),
        ("GET", re.compile(r"/v[01]/user/workspaces"), list_workspaces),
        ("POST", re.compile(r"/v[01]/workspaces"), create_workspace),
        ("DELETE", re.compile(r"/v[01]/workspaces/([0-9a-f-]{36})"), delete_workspace),
    ]
