"""Integrations: web frameworks (one event per request, a trace id for every log line in it)
and Celery's prefork pool.

Each framework has its own module, imported on its own (importing this package
imports no framework):

* ``tblog.integrations.wsgi.TinybirdWSGIMiddleware``: any WSGI application.
* ``tblog.integrations.flask.TinybirdFlask``: Flask (``TinybirdFlask(app)`` or ``init_app``).
* ``tblog.integrations.django.TinybirdDjangoMiddleware``: Django, in ``MIDDLEWARE``.
* ``tblog.integrations.asgi.TinybirdASGIMiddleware``: FastAPI, Starlette, any ASGI app.

They log through the standard ``logging`` module (the ``http.requests`` logger by
default), so a ``TinybirdLoggingHandler`` on that logger or on the root logger
ships the request events together with the application's own log lines.

``tblog.integrations.celery.connect()`` delivers what a Celery prefork child logged
before billiard ends it with ``os._exit``; tblog connects it by itself once Celery is
loaded, so nothing is to be configured.
"""

from __future__ import annotations

__all__: list[str] = []
