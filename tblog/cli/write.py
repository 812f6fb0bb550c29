"""The write side's subcommands: ``tblog send`` (NDJSON rows to a datasource) and
``tblog datasource`` (tblog's ``.datasource`` files)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tblog.cli.args import add_connection_args, client_from
from tblog.cli.http import ApiError
from tblog.cli.output import err, progress

__all__ = ["DATASOURCES_DIR", "add_datasource", "add_send"]

DATASOURCES_DIR = Path(__file__).resolve().parent.parent / "datasources"
_SEND_BATCH_BYTES = 4 * 1024 * 1024
_SEND_BATCH_ROWS = 10_000


def add_send(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("send", help="send NDJSON rows from a file or stdin to a datasource")
    p.add_argument("datasource")
    p.add_argument("file", nargs="?", default="-", help="an NDJSON file, or - for stdin")
    p.add_argument("--batch-rows", type=int, default=_SEND_BATCH_ROWS, help="rows per request")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--skip", type=int, default=0, metavar="N",
        help="skip the first N rows (to go on after an interruption: it prints N)",
    )  # fmt: skip
    add_connection_args(p, read=False)
    p.set_defaults(func=_run_send)


def _batches(stream: IO[bytes], max_rows: int, skip: int = 0) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for raw in stream:
        line = raw.strip()
        if not line:
            continue
        if skip > 0:
            skip -= 1
            continue
        if batch and (len(batch) >= max_rows or size + len(line) > _SEND_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield batch


def _run_send(args: argparse.Namespace) -> int:
    client = client_from(args, read=False)
    sent = ok = bad = nbytes = 0
    started = time.monotonic()
    failed = False
    interrupted = False
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(client.close)
            if args.file == "-":
                stream: IO[bytes] = sys.stdin.buffer
                total = 0
            else:
                stream = stack.enter_context(open(args.file, "rb"))
                total = os.path.getsize(args.file)
            for batch in _batches(stream, max(1, args.batch_rows), max(0, args.skip)):
                try:
                    answer = client.append(args.datasource, batch)
                except ApiError as exc:
                    err(f"\nbatch of {len(batch)} rows failed: {exc}")
                    failed = True
                    break
                sent += len(batch)
                nbytes += sum(len(line) + 1 for line in batch)
                ok += int(answer.get("successful_rows", 0) or 0)
                bad += int(answer.get("quarantined_rows", 0) or 0)
                if answer.get("error"):
                    err(f"\n{answer['error']}")
                if not args.quiet:
                    progress((sent, ok, bad, nbytes), started, total)
    except KeyboardInterrupt:
        interrupted = True
    if not args.quiet:
        sys.stderr.write("\n")
    print(f"sent {sent} rows to {args.datasource}: {ok} ok, {bad} quarantined")
    if bad:
        table = f"{args.datasource}_quarantine"
        print(f"see them with: tblog query 'SELECT * FROM {table}'")  # noqa: S608
    if interrupted or failed:
        done = max(0, args.skip) + sent
        err(f"{'interrupted' if interrupted else 'stopped'}: {done} rows confirmed; to go on: "
            f"tblog send {args.datasource} {args.file} --skip {done}")  # fmt: skip
    if interrupted:
        return 130
    return 1 if failed else 0


# -- datasource -----------------------------------------------------------------------


def add_datasource(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        err(f"no datasource {args.name!r}; there are: {', '.join(files)}")
        return 1
    if args.path:
        print(found)
    else:
        sys.stdout.write(found.read_text(encoding="utf-8"))
    return 0
