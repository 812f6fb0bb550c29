"""tblog's web view: the static page (``static/``: HTML, vanilla JS, CSS; no build step)
and the headers it is served with.

The page reads through the SQL API (``/v0/sql``) with a read token sent in the
``Authorization`` header only: live tail, trace view and charts.  ``tblog local`` serves it
at ``/`` (same origin as its API); ``tblog ui`` (``tblog.ui.server``) serves it locally for
another API, Tinybird's included.  ``asset(path)`` is what both serve: the page's files,
with a Content-Security-Policy that allows the page's own scripts only and API calls to
``connect`` (besides its own origin).  The page first reads ``/ui/config``: the API's
address and, from ``tblog ui`` only, the token it was given (``{}`` from ``tblog local``:
same origin, and the page asks for a token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

__all__ = ["ASSETS", "SAME_ORIGIN_CONFIG", "Asset", "asset", "security_headers"]

#: URL path -> (file in ``static/``, Content-Type); ``/ui/config`` is no file.
ASSETS: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/app.css": ("app.css", "text/css; charset=utf-8"),
    "/ui/config": ("", "application/json"),
}
#: What the page reads from ``/ui/config`` when its own server holds the API (tblog local):
#: no ``api`` (same origin) and no token (the page asks for one).
SAME_ORIGIN_CONFIG = b"{}"


@dataclass(frozen=True)
class Asset:
    """One file of the page as served: its bytes and headers (Content-Type included)."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def security_headers(connect: str = "") -> dict[str, str]:
    """Headers of every page file: no inline script runs (log text cannot become code),
    the page calls only its own origin and ``connect``, it is not framed, cached or
    sent as a referrer."""
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{' ' + connect if connect else ''}; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def asset(path: str, connect: str = "") -> Asset | None:
    """The page's file at URL ``path`` (``/``, ``/ui/app.js``...), or None."""
    found = ASSETS.get(path or "/")
    if found is None:
        return None
    name, ctype = found
    if not name:
        body = SAME_ORIGIN_CONFIG
    else:
        body = resources.files("tblog.ui").joinpath("static").joinpath(name).read_bytes()
    return Asset(body, {"Content-Type": ctype, **security_headers(connect)})
