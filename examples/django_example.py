"""Django with ``TinybirdDjangoMiddleware``, in one file (settings, a view, two requests).

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/django_example.py
In a project, put the middleware in settings.MIDDLEWARE and the options in TBLOG_HTTP.
"""

from __future__ import annotations

import logging
import os
import sys

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

import tblog

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/django_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)

settings.configure(
    DEBUG=False,
    SECRET_KEY="example-only",
    ALLOWED_HOSTS=["testserver", "127.0.0.1"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["tblog.integrations.django.TinybirdDjangoMiddleware"],
    TBLOG_HTTP={"skip_paths": ["/health"], "log_requests": False},
    LOGGING_CONFIG=None,
)
django.setup()

handler = tblog.TinybirdLoggingHandler(API_URL, TOKEN, "django-example")
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("django_example")


def invoice(request: HttpRequest, number: int) -> JsonResponse:
    log.info("rendering invoice %d", number)  # carries the request's trace id
    return JsonResponse({"invoice": number})


urlpatterns = [path("invoices/<int:number>/", invoice)]


def main() -> int:
    from django.test import Client  # noqa: PLC0415 - needs the settings above

    client = Client()
    for number in (1, 2):
        resp = client.get(f"/invoices/{number}/")
        print(resp.status_code, "X-Request-ID:", resp["X-Request-ID"])
    delivered = handler.flush(10)
    print("delivered:", delivered, handler.stats())
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
