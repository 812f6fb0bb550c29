"""The one way tblog makes an HTTP session: every client's ``requests.Session`` comes from here.

A session that trusts the environment (requests' default) lets a ``~/.netrc`` (or
``$NETRC``) entry for the host replace the ``Authorization: Bearer`` header with Basic
credentials, and reads proxies and the CA bundle again on every request.  Sessions made
here have ``trust_env=False``: the token we set is the token that is sent.  What the
environment should still decide is read explicitly by ``environment_settings``, as
requests would: ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` choose the
proxy; with ``verify=True``, ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` name the CA
bundle.  ``session_for(url)`` is a session for one destination with those settings in
place (the read clients, the REST API client, the CLI); the Events API transport, which
posts to several destinations, calls ``new_session`` and ``environment_settings`` itself.
"""

from __future__ import annotations

import os

import requests
from requests.adapters import HTTPAdapter

from tblog._version import __version__

__all__ = ["USER_AGENT", "environment_settings", "new_session", "session_for"]

USER_AGENT = f"tblog/{__version__}"


def new_session(
    *,
    user_agent: str = USER_AGENT,
    pool_connections: int = 4,
    pool_maxsize: int = 8,
    adapter: HTTPAdapter | None = None,
) -> requests.Session:
    """A pooled session that ignores the environment (no ``.netrc``, no implicit proxies).

    ``adapter`` (mounted for ``http://`` and ``https://``) defaults to an ``HTTPAdapter``
    with ``pool_connections``/``pool_maxsize`` and no retries of its own (callers retry).
    """
    session = requests.Session()
    session.trust_env = False
    if adapter is None:
        adapter = HTTPAdapter(
            pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0
        )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


def environment_settings(url: str, verify: bool | str = True) -> tuple[dict[str, str], bool | str]:
    """Proxies and TLS verification for ``url``, from the environment, as requests reads them.

    ``verify`` given as ``False`` or a path stays as it is; ``True`` becomes
    ``$REQUESTS_CA_BUNDLE`` or ``$CURL_CA_BUNDLE`` when one is set.
    """
    try:
        proxies = dict(requests.utils.get_environ_proxies(url))
    except Exception:  # noqa: BLE001 - a malformed environment means no proxy
        proxies = {}
    chosen = verify
    if verify is True:
        chosen = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return proxies, chosen


def session_for(
    url: str,
    *,
    verify: bool | str = True,
    user_agent: str = USER_AGENT,
    pool_connections: int = 4,
    pool_maxsize: int = 8,
) -> requests.Session:
    """``new_session`` for requests to ``url``'s host, with its proxies and CA bundle set."""
    session = new_session(
        user_agent=user_agent, pool_connections=pool_connections, pool_maxsize=pool_maxsize
    )
    proxies, session.verify = environment_settings(url, verify)
    session.proxies.update(proxies)
    return session
