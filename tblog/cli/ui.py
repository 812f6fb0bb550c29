"""``tblog ui``: the web view (live tail, traces, charts) on a loopback port, reading from
``--host`` (Tinybird, or a ``tblog local``) with a read token; see ``tblog.ui.server``."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

from tblog._sql import resolve_read_token
from tblog._version import __version__
from tblog.cli.args import add_connection_args
from tblog.cli.output import err
from tblog.cli.serve import serve_until_stopped

__all__ = ["add_ui"]


def add_ui(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ui", help="a web view of the logs (live tail, traces, charts) on a local port"
    )
    add_connection_args(p, read=True)
    p.add_argument("--port", type=int, default=7182, help="port (7182; 0 picks a free one)")
    p.add_argument("--datasource", default="tb_logs", help="the logs datasource (tb_logs)")
    p.add_argument("--traces", default="traces", help="the LLM traces datasource (traces)")
    p.set_defaults(func=_run_ui)


def _run_ui(args: argparse.Namespace) -> int:
    from tblog.ui.server import UiServer  # noqa: PLC0415 - only this command needs it

    try:
        token: str | None = resolve_read_token(args.token)
    except ValueError:
        if args.token is not None:
            raise
        token = None  # the page asks for one
    try:
        server = UiServer(args.host, token, port=args.port, logs=args.datasource,
                          traces=args.traces)  # fmt: skip
    except OSError as exc:
        err(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}")
        return 1
    print(f"tblog ui {__version__}: open {server.url}/", flush=True)
    print(f"  reading from: {server.api_url}")
    if token is None:
        print("  no read token given: the page asks for one")
    else:
        print("  the read token goes to the first page that opens (kept in its tab only)")
    if urlsplit(server.api_url).scheme == "http":
        print(f"  a tblog local there must allow this page: --allowed-origin {server.url}")
    sys.stdout.flush()
    return serve_until_stopped(server, "tblog ui")
