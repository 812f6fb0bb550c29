"""The ``tblog`` command line: its parser and ``main``; each subcommand lives in a module.

``serve`` (``local``, ``demo``), ``read`` (``query``, ``tail``, ``stats``, ``series``),
``write`` (``send``, ``datasource``) and ``ui`` each add their parsers; ``output`` prints;
``args`` holds the options they share.  Commands that talk to an API take
``--host``/``--token`` and fall back to ``TB_API_URL``/``TB_HOST`` and the token variables
of ``tblog._config``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from tblog._version import __version__
from tblog.cli import read, serve, ui, write
from tblog.cli.http import ApiError
from tblog.cli.output import err

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

AddParser = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

#: Each subcommand's ``add_parser(subparsers)``, in the order ``tblog --help`` lists them.
SUBCOMMANDS: tuple[AddParser, ...] = (
    serve.add_demo,
    serve.add_local,
    read.add_query,
    read.add_tail,
    read.add_stats,
    read.add_series,
    write.add_send,
    write.add_datasource,
    ui.add_ui,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tblog", description="Ship Python logs to Tinybird, and look at them."
    )
    parser.add_argument("--version", action="version", version=f"tblog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
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
        err(str(exc))
        return 1
    except BrokenPipeError:  # the reader of our output left (``| head``)
        return 0
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except OSError as exc:  # a file that is not there, a port in use: one line, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        err(f"{exc.strerror or exc}{where}")
        return 1
