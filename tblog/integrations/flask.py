"""Flask integration: ``TinybirdFlask(app)`` (or ``TinybirdFlask().init_app(app)``).

It wraps ``app.wsgi_app`` in ``TinybirdWSGIMiddleware`` (one event per request,
the request's trace id on every log line and in a response header), records the
matched URL rule as the event's ``route``, and logs an error event with the
exception when a view raises (Flask's ``got_request_exception`` signal), before
Flask turns it into a 500 response.
"""

from __future__ import annotations

from typing import Any

try:
    import flask
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("tblog.integrations.flask needs Flask: pip install 'tblog[flask]'") from _exc

from tblog.integrations._http import HttpLogging, RequestState
from tblog.integrations.wsgi import ROUTE_KEY, STATE_KEY, TinybirdWSGIMiddleware

__all__ = ["TinybirdFlask"]


class TinybirdFlask:
    """Request logging and trace context for a Flask app.

    Options are those of every tblog web integration: ``logger``, ``skip_paths``,
    ``log_requests``, ``log_responses``, ``response_header``, ``trust_headers``;
    they are checked here, at set-up.
    """

    def __init__(self, app: flask.Flask | None = None, **options: Any) -> None:
        HttpLogging(**options)  # bad options fail now, not at the first request
        self.options = options
        self.middleware: TinybirdWSGIMiddleware | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Install the middleware and the hooks on ``app``."""
        middleware = TinybirdWSGIMiddleware(app.wsgi_app, **self.options)
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.before_request(_record_route)
        flask.got_request_exception.connect(self._on_exception, app, weak=False)
        self.middleware = middleware
        app.extensions["tblog"] = self

    def _on_exception(self, sender: Any, exception: BaseException, **_: Any) -> None:
        state = flask.request.environ.get(STATE_KEY)
        if isinstance(state, RequestState) and self.middleware is not None:
            state.route = state.route or str(flask.request.environ.get(ROUTE_KEY) or "")
            self.middleware.http.failed(state, exception)


def _record_route() -> None:
    rule = flask.request.url_rule
    if rule is not None:
        flask.request.environ[ROUTE_KEY] = rule.rule
