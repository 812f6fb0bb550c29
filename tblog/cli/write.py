"""The write side's subcommands: ``tblog send`` (NDJSON rows to a datasource) and
``tblog datasource`` (tblog's ``.datasource`` files).

``send`` posts batches with ``wait=true``; a batch answered 429/503 is sent again after
the server's ``Retry-After`` (or a backoff; ``tblog._delivery.foreground``).  When it stops (an
error, Ctrl-C) it prints the rows confirmed and how to go on: ``--skip N``, or, with
``--resume``, the same command again: ``--resume`` keeps the count (and a hash of those
rows, so an input that changed is refused) in ``<input>.tblog-offset`` after each
batch, and removes that file once every row is sent.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tblog.cli.args import add_connection_args, client_from
from tblog.cli.http import ApiError
from tblog.cli.output import err, progress

__all__ = ["DATASOURCES_DIR", "OFFSET_SUFFIX", "add_datasource", "add_send"]

DATASOURCES_DIR = Path(__file__).resolve().parent.parent / "datasources"
_SEND_BATCH_BYTES = 4 * 1024 * 1024
_SEND_BATCH_ROWS = 10_000
#: ``send --resume`` keeps its place in ``<input><OFFSET_SUFFIX>``, next to the input.
OFFSET_SUFFIX = ".tblog-offset"


def add_send(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("send", help="send NDJSON rows from a file or stdin to a datasource")
    p.add_argument("datasource")
    p.add_argument("file", nargs="?", default="-", help="an NDJSON file, or - for stdin")
    p.add_argument("--batch-rows", type=int, default=_SEND_BATCH_ROWS, help="rows per request")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--skip", type=int, default=0, metavar="N",
        help="skip the first N rows (to go on after an interruption: it prints N)",
    )  # fmt: skip
    where.add_argument(
        "--resume", action="store_true",
        help=f"keep the count of rows confirmed in FILE{OFFSET_SUFFIX} and start after them; "
        "the file is removed once every row is sent",
    )  # fmt: skip
    add_connection_args(p, read=False)
    p.set_defaults(func=_run_send)


class _ResumeError(Exception):
    """The offset file cannot be used for this input (one line for the user)."""


class _Offset:
    """``--resume``'s file: the rows confirmed so far and a hash of them (the input must
    still start with those rows), for one datasource on one host; written atomically."""

    def __init__(self, path: Path, datasource: str, host: str) -> None:
        self.path = path
        self.datasource = datasource
        self.host = host

    def load(self) -> tuple[int, str]:
        """(rows, sha256 of them) saved; no rows when there is no file yet."""
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            rows, digest = int(saved["rows"]), str(saved["sha256"])
            datasource, host = saved["datasource"], saved["host"]
        except FileNotFoundError:
            return 0, hashlib.sha256().hexdigest()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _ResumeError(f"cannot read {self.path} ({type(exc).__name__}); "
                               "delete it to send from the top") from None  # fmt: skip
        if (datasource, host) != (self.datasource, self.host):
            raise _ResumeError(
                f"{self.path} is for {datasource} on {host}, not {self.datasource} on "
                f"{self.host}; delete it to send from the top"
            )
        return max(0, rows), digest

    def save(self, rows: int, digest: str) -> None:
        data = json.dumps({"datasource": self.datasource, "host": self.host, "rows": rows,
                           "sha256": digest}).encode()  # fmt: skip
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The input's rows: its lines without surrounding blanks, empty ones left out."""
    for raw in stream:
        line = raw.strip()
        if line:
            yield line


def _skip(rows: Iterator[bytes], n: int, seen: Any) -> int:
    """Read past ``n`` rows, hashing them into ``seen``; how many there were."""
    skipped = 0
    while skipped < n:
        line = next(rows, None)
        if line is None:
            break
        seen.update(line + b"\n")
        skipped += 1
    return skipped


def _batches(rows: Iterator[bytes], max_rows: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for line in rows:
        if batch and (len(batch) >= max_rows or size + len(line) > _SEND_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield batch


def _run_send(args: argparse.Namespace) -> int:
    if args.resume and args.file == "-":
        err("--resume needs a file: rows read from stdin cannot be read again "
            "(use --skip N with the count printed)")  # fmt: skip
        return 2
    client = client_from(args, read=False)
    sent = ok = bad = nbytes = 0
    started = time.monotonic()
    failed = False
    interrupted = False
    shown = [False]  # a progress line is on screen: a message starts on a new line

    def note(message: str) -> None:
        if shown[0]:
            sys.stderr.write("\n")
            shown[0] = False
        err(message)

    client.on_retry = lambda reason, delay, attempt: note(
        f"{reason} from {args.datasource} (attempt {attempt}): sending the batch again "
        f"in {delay:.1f}s"
    )
    offset = None
    if args.resume:
        offset = _Offset(Path(f"{args.file}{OFFSET_SUFFIX}"), args.datasource, client.host)
    seen = hashlib.sha256()
    skip = max(0, args.skip)
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(client.close)
            if args.file == "-":
                stream: IO[bytes] = sys.stdin.buffer
                total = 0
            else:
                stream = stack.enter_context(open(args.file, "rb"))
                total = os.path.getsize(args.file)
            rows = _lines(stream)
            if offset is not None:
                try:
                    skip, digest = offset.load()
                    if _skip(rows, skip, seen) < skip or seen.hexdigest() != digest:
                        raise _ResumeError(
                            f"{args.file} changed since {offset.path} was written (its first "
                            f"{skip} rows differ); delete that file to send from the top"
                        )
                except _ResumeError as exc:
                    err(str(exc))
                    return 2
                if skip:
                    note(f"resuming after the {skip} rows confirmed in {offset.path}")
            else:
                skip = _skip(rows, skip, seen)
            for batch in _batches(rows, max(1, args.batch_rows)):
                try:
                    answer = client.append(args.datasource, batch)
                except ApiError as exc:
                    note(f"batch of {len(batch)} rows failed: {exc}")
                    failed = True
                    break
                sent += len(batch)
                nbytes += sum(len(line) + 1 for line in batch)
                ok += int(answer.get("successful_rows", 0) or 0)
                bad += int(answer.get("quarantined_rows", 0) or 0)
                if offset is not None:
                    for line in batch:
                        seen.update(line + b"\n")
                    try:
                        offset.save(skip + sent, seen.hexdigest())
                    except OSError as exc:  # the count is printed below instead
                        note(f"cannot keep the count in {offset.path}: {exc.strerror or exc}")
                        offset = None
                        failed = True
                        break
                if answer.get("error"):
                    note(str(answer["error"]))
                if not args.quiet:
                    shown[0] = progress((sent, ok, bad, nbytes), started, total)
    except KeyboardInterrupt:
        interrupted = True
    if shown[0]:
        sys.stderr.write("\n")
    print(f"sent {sent} rows to {args.datasource}: {ok} ok, {bad} quarantined")
    if bad:
        table = f"{args.datasource}_quarantine"
        print(f"see them with: tblog query 'SELECT * FROM {table}'")  # noqa: S608
    done = skip + sent
    stopped = "interrupted" if interrupted else "stopped"
    if (interrupted or failed) and offset is not None:
        err(f"{stopped}: {done} rows confirmed (kept in {offset.path}); to go on: "
            f"tblog send {args.datasource} {args.file} --resume")  # fmt: skip
    elif interrupted or failed:
        err(f"{stopped}: {done} rows confirmed; to go on: "
            f"tblog send {args.datasource} {args.file} --skip {done}")  # fmt: skip
    elif offset is not None:
        offset.remove()
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
