"""What the ``tblog`` subcommands parse alike: connection options, durations, times."""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime, timezone

from tblog._config import TOKEN_ENV
from tblog._sql import READ_TOKEN_ENV
from tblog.cli.http import ApiClient

__all__ = [
    "LEVELS",
    "add_connection_args",
    "client_from",
    "parse_level",
    "parse_since",
    "parse_time",
]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")


def add_connection_args(parser: argparse.ArgumentParser, *, read: bool) -> None:
    """``--host`` and ``--token``, with their environment fallbacks (``read``: a read token)."""
    parser.add_argument(
        "--host", help="API URL (default: $TB_API_URL, $TB_HOST, else https://api.tinybird.co)"
    )
    names = READ_TOKEN_ENV if read else TOKEN_ENV
    tokens = ", else ".join(f"${name}" for name in names)
    parser.add_argument("--token", help=f"token (default: {tokens})")


def client_from(args: argparse.Namespace, *, read: bool) -> ApiClient:
    """The API client of a subcommand; ``read``: its token comes from the read variables."""
    return ApiClient(getattr(args, "host", None), getattr(args, "token", None), read=read)


def parse_since(text: str) -> float:
    """``30s``, ``10m``, ``2h``, ``1d`` (or plain seconds) -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"--since takes a duration like 30s, 10m, 2h: {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * unit


#: ``--level`` names (case-insensitive) and what they mean: that level and above.
LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "WARN": "WARNING",
          "ERROR": "ERROR", "CRITICAL": "CRITICAL", "FATAL": "CRITICAL"}  # fmt: skip


def parse_level(text: str) -> str:
    """``--level``'s value as its canonical name (``warn`` -> ``WARNING``); ``query`` and
    ``tail`` both read it as "this level and above".  A ValueError for other names."""
    level = LEVELS.get(text.strip().upper())
    if level is None:
        raise ValueError(
            f"unknown level {text!r}: use DEBUG, INFO, WARNING (or WARN), ERROR or CRITICAL"
        )
    return level


def parse_time(text: str, now: float | None = None) -> datetime:
    """An ISO 8601 time (naive = UTC) or a duration ago (``30m``, ``2h``, ``1d``)."""
    try:
        seconds = parse_since(text)
    except argparse.ArgumentTypeError:
        try:
            ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an ISO time or a duration like 2h: {text!r}"
            ) from None
        return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp((time.time() if now is None else now) - seconds, timezone.utc)
