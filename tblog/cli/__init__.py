"""The ``tblog`` command line: ``local``, ``demo``, ``query``, ``tail``, ``send``, ``datasource``.

Subcommands are registered, not hard-wired: ``register(name, add_parser)`` adds one,
where ``add_parser(subparsers)`` creates its ``argparse`` parser and sets
``func=callable(args) -> exit code``.  Modules named in ``EXTENSIONS`` are imported
before parsing so they can register theirs (a missing one is skipped).  Commands that
talk to an API take ``--host``/``--token`` and fall back to ``TB_API_URL``/``TB_HOST``
and ``TB_TOKEN`` (and the other token variables of ``tblog._config``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from tblog._version import __version__
from tblog.cli.http import ApiClient, ApiError

__all__ = [
    "COMMANDS",
    "DATASOURCES_DIR",
    "EXTENSIONS",
    "add_connection_args",
    "build_parser",
    "client_from",
    "main",
    "parse_since",
    "print_table",
    "register",
    "tail_query",
]

AddParser = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

#: (name, add_parser) in the order ``tblog --help`` lists them.
COMMANDS: list[tuple[str, AddParser]] = []
#: Modules imported by ``main`` so they can ``register`` their subcommands.
EXTENSIONS: list[str] = ["tblog.cli.read"]

DATASOURCES_DIR = Path(__file__).resolve().parent.parent / "datasources"
_SEND_BATCH_BYTES = 4 * 1024 * 1024
_SEND_BATCH_ROWS = 10_000


def register(name: str, add_parser: AddParser) -> None:
    """Add (or replace) the subcommand ``name``."""
    for i, (existing, _) in enumerate(COMMANDS):
        if existing == name:
            COMMANDS[i] = (name, add_parser)
            return
    COMMANDS.append((name, add_parser))


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    """``--host`` and ``--token``, with their environment fallbacks."""
    parser.add_argument(
        "--host", help="API URL (default: $TB_API_URL, $TB_HOST, else https://api.tinybird.co)"
    )
    parser.add_argument(
        "--token", help="token (default: $TB_TOKEN, $TB_WRITE_TOKEN or $TINYBIRD_TOKEN)"
    )


def client_from(args: argparse.Namespace) -> ApiClient:
    return ApiClient(getattr(args, "host", None), getattr(args, "token", None))


def _err(message: str) -> None:
    print(f"tblog: {message}", file=sys.stderr)


# -- output ---------------------------------------------------------------------------


def _cell(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(result: dict[str, Any], out: IO[str] | None = None, width: int = 60) -> None:
    """A Tinybird JSON result as an aligned text table."""
    out = out or sys.stdout
    names = [m["name"] for m in result.get("meta", [])]
    rows = [[_cell(row.get(n), width) for n in names] for row in result.get("data", [])]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    print(f"({result.get('rows', len(rows))} rows)", file=out)


# -- local ----------------------------------------------------------------------------


def _add_local(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("local", help="run a Tinybird-compatible API on embedded ClickHouse")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=7181, help="port (7181; 0 picks a free one)")
    p.add_argument("--data-dir", default=".tblog-local", help="where the data lives")
    p.add_argument("--datasources", help="folder of .datasource files (tblog's by default)")
    p.add_argument("--token", help="admin token to accept (default: a new random one)")
    p.add_argument("--rate-limit", type=int, help="answer 429 above N event requests/s")
    p.add_argument(
        "--query-timeout", type=float, default=10.0, help="seconds one /v0/sql query may run (10)"
    )
    p.add_argument(
        "--query-max-memory",
        type=int,
        default=2 * 1024**3,
        help="bytes of memory one /v0/sql query may use (2 GiB)",
    )
    p.add_argument(
        "--query-max-rows",
        type=int,
        default=1_000_000,
        help="rows one /v0/sql answer may hold; more is an error (1000000)",
    )
    p.add_argument(
        "--query-max-bytes",
        type=int,
        default=256 * 1024**2,
        help="bytes one /v0/sql answer may hold; more is an error (256 MiB)",
    )
    p.add_argument(
        "--max-server-memory",
        type=int,
        default=0,
        help="bytes the embedded ClickHouse may use in all (0: half of this machine's memory)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=10 * 1024**2,
        help="bytes one request body may hold, as sent (10 MiB; more is a 413)",
    )
    p.add_argument(
        "--max-line-bytes",
        type=int,
        default=10 * 1024**2,
        help="bytes one NDJSON row may hold; a longer one is quarantined (10 MiB)",
    )
    p.add_argument(
        "--max-decoded-bytes",
        type=int,
        default=128 * 1024**2,
        help="bytes one /v0/events body may hold once gunzipped (128 MiB; 413)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a request; then it is dropped (30)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=32,
        help="connections served at once; more get a quick 503 (32)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name to answer besides loopback and --host (repeatable; "
        "'*' for any); others get 421, against DNS rebinding",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser Origin allowed to call the API, with CORS (repeatable); "
        "requests from other origins get 403",
    )
    p.set_defaults(func=_run_local)


def _run_local(args: argparse.Namespace) -> int:
    try:
        from tblog.local.server import LocalServer  # noqa: PLC0415 - needs the local extra
    except ImportError as exc:
        _err(f"tblog local needs chDB: pip install 'tblog[local]' ({exc})")
        return 2
    server = LocalServer(
        args.data_dir,
        host=args.host,
        port=args.port,
        datasources=args.datasources,
        admin_token=args.token,
        rate_limit=args.rate_limit,
        query_timeout=args.query_timeout,
        query_max_memory=args.query_max_memory,
        query_max_rows=args.query_max_rows,
        query_max_bytes=args.query_max_bytes,
        max_server_memory=args.max_server_memory or None,
        max_request_bytes=args.max_body_bytes,
        max_line_bytes=args.max_line_bytes,
        max_decoded_bytes=args.max_decoded_bytes,
        timeout=args.timeout or None,
        max_connections=args.max_connections,
        allowed_hosts=args.allowed_host,
        allowed_origins=args.allowed_origin,
    )
    print(f"tblog local {__version__}: serving {server.url}", flush=True)
    for name, error in server.load_errors:
        _err(f"skipped {name}: {error}")
    print(f"  data dir:    {Path(args.data_dir).resolve()}")
    print(f"  datasources: {', '.join(sorted(server.store.datasources))}")
    print(f"  admin token: {server.admin_token}")
    print(f"  try: export TB_HOST={server.url} TB_TOKEN={server.admin_token}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\ntblog local: stopped", file=sys.stderr)
    finally:
        server.close()
    return 0


# -- query ----------------------------------------------------------------------------


def _add_query(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("query", help="run a SQL query (SELECT, WITH, DESCRIBE)")
    p.add_argument("sql", help="the query; end it with FORMAT X to get that format verbatim")
    p.add_argument("--json", action="store_true", help="print the JSON answer as is")
    add_connection_args(p)
    p.set_defaults(func=_run_query)


def _run_query(args: argparse.Namespace) -> int:
    client = client_from(args)
    try:
        if re.search(r"\bFORMAT\s+\w+\s*;?\s*$", args.sql, re.IGNORECASE):
            sys.stdout.write(client.sql_text(args.sql))
            return 0
        result = client.sql(args.sql)
    finally:
        client.close()
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result)
    return 0


# -- tail -----------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")


def parse_since(text: str) -> float:
    """``30s``, ``10m``, ``2h``, ``1d`` (or plain seconds) -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"--since takes a duration like 30s, 10m, 2h: {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * unit


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _add_tail(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tail", help="print recent log rows, then follow new ones")
    p.add_argument("--app", help="only this app_name")
    p.add_argument("--level", help="only this level or above (DEBUG, INFO, WARNING, ...)")
    p.add_argument("--since", type=parse_since, default=600.0, help="start this far back (10m)")
    p.add_argument("--datasource", default="tb_logs", help="the logs datasource (tb_logs)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (1)")
    p.add_argument("--once", action="store_true", help="print what is there and exit")
    add_connection_args(p)
    p.set_defaults(func=_run_tail)


_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


def tail_query(args: argparse.Namespace, after: str | None) -> str:
    ds = args.datasource
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ds):
        raise ValueError(f"bad datasource name {ds!r}")
    where = [
        f"timestamp > {_quote(after)}"
        if after
        else f"timestamp >= now64(6) - toIntervalMillisecond({int(args.since * 1000)})"
    ]
    if args.app:
        where.append(f"app_name = {_quote(args.app)}")
    if args.level:
        level = args.level.upper()
        if level in _LEVELS:
            where.append(f"level_no >= {_LEVELS[level]}")
        else:
            where.append(f"level = {_quote(args.level)}")
    return (
        "SELECT toString(timestamp) AS ts, level, app_name, logger, message, trace_id "  # noqa: S608
        f"FROM {ds} WHERE {' AND '.join(where)} ORDER BY timestamp LIMIT 1000"
    )


def _run_tail(args: argparse.Namespace) -> int:
    client = client_from(args)
    after: str | None = None
    try:
        while True:
            result = client.sql(tail_query(args, after))
            for row in result.get("data", []):
                trace = f" trace={row['trace_id']}" if row.get("trace_id") else ""
                print(f"{row['ts']} {row['level']:<8} {row['app_name']} {row['logger']}: "
                      f"{row['message']}{trace}", flush=True)  # fmt: skip
                after = row["ts"]
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


# -- send -----------------------------------------------------------------------------


def _add_send(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("send", help="send NDJSON rows from a file or stdin to a datasource")
    p.add_argument("datasource")
    p.add_argument("file", nargs="?", default="-", help="an NDJSON file, or - for stdin")
    p.add_argument("--batch-rows", type=int, default=_SEND_BATCH_ROWS, help="rows per request")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_connection_args(p)
    p.set_defaults(func=_run_send)


def _batches(stream: IO[bytes], max_rows: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for raw in stream:
        line = raw.strip()
        if not line:
            continue
        if batch and (len(batch) >= max_rows or size + len(line) > _SEND_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield batch


def _progress(counts: tuple[int, int, int, int], started: float, total: int) -> None:
    sent, ok, bad, nbytes = counts
    rate = sent / max(time.monotonic() - started, 1e-6)
    if total:
        done = min(1.0, nbytes / total)
        bar = "#" * int(done * 30)
        head = f"[{bar:<30}] {done:4.0%} "
    else:
        head = ""
    sys.stderr.write(f"\r{head}{sent} rows sent, {ok} ok, {bad} quarantined ({rate:,.0f}/s)")
    sys.stderr.flush()


def _run_send(args: argparse.Namespace) -> int:
    client = client_from(args)
    sent = ok = bad = nbytes = 0
    started = time.monotonic()
    failed = False
    with contextlib.ExitStack() as stack:
        stack.callback(client.close)
        if args.file == "-":
            stream: IO[bytes] = sys.stdin.buffer
            total = 0
        else:
            stream = stack.enter_context(open(args.file, "rb"))
            total = os.path.getsize(args.file)
        for batch in _batches(stream, max(1, args.batch_rows)):
            try:
                answer = client.append(args.datasource, batch)
            except ApiError as exc:
                _err(f"\nbatch of {len(batch)} rows failed: {exc}")
                failed = True
                break
            sent += len(batch)
            nbytes += sum(len(line) + 1 for line in batch)
            ok += int(answer.get("successful_rows", 0) or 0)
            bad += int(answer.get("quarantined_rows", 0) or 0)
            if answer.get("error"):
                _err(f"\n{answer['error']}")
            if not args.quiet:
                _progress((sent, ok, bad, nbytes), started, total)
    if not args.quiet:
        sys.stderr.write("\n")
    print(f"sent {sent} rows to {args.datasource}: {ok} ok, {bad} quarantined")
    if bad:
        table = f"{args.datasource}_quarantine"
        print(f"see them with: tblog query 'SELECT * FROM {table}'")  # noqa: S608
    return 1 if failed else 0


# -- datasource -----------------------------------------------------------------------


def _add_datasource(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("datasource", help="list tblog's .datasource files, or print one")
    p.add_argument("name", nargs="?", help="print this datasource's file")
    p.add_argument("--path", action="store_true", help="print the file's path instead")
    p.set_defaults(func=_run_datasource)


def _run_datasource(args: argparse.Namespace) -> int:
    files = {p.stem: p for p in sorted(DATASOURCES_DIR.glob("*.datasource"))}
    if not args.name:
        for name, path in files.items():
            print(path if args.path else name)
        print("print one with: tblog datasource NAME > NAME.datasource; "
              "then push it with Tinybird's CLI", file=sys.stderr)  # fmt: skip
        return 0
    found = files.get(args.name.removesuffix(".datasource"))
    if found is None:
        _err(f"no datasource {args.name!r}; there are: {', '.join(files)}")
        return 1
    if args.path:
        print(found)
    else:
        sys.stdout.write(found.read_text(encoding="utf-8"))
    return 0


# -- demo -----------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="ship a realistic burst of logs to a local server")
    p.add_argument("--events", type=int, default=20_000, help="log records to ship (20000)")
    p.add_argument("--threads", type=int, default=4, help="threads logging at once (4)")
    p.add_argument("--keep", help="keep the data in this folder instead of a temporary one")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    try:
        from tblog.cli.demo import run_demo  # noqa: PLC0415 - needs the local extra
    except ImportError as exc:
        _err(f"tblog demo needs chDB: pip install 'tblog[local]' ({exc})")
        return 2
    if args.keep:
        return run_demo(args.events, args.threads, args.keep)
    with tempfile.TemporaryDirectory(prefix="tblog-demo-") as tmp:
        return run_demo(args.events, args.threads, tmp)


for _name, _add in (
    ("demo", _add_demo),
    ("local", _add_local),
    ("query", _add_query),
    ("tail", _add_tail),
    ("send", _add_send),
    ("datasource", _add_datasource),
):
    register(_name, _add)


def build_parser() -> argparse.ArgumentParser:
    for module in EXTENSIONS:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="tblog", description="Ship Python logs to Tinybird, and look at them."
    )
    parser.add_argument("--version", action="version", version=f"tblog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _, add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except (ApiError, ValueError) as exc:
        _err(str(exc))
        return 1
    except BrokenPipeError:
        return 0
