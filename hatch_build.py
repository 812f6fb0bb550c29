"""Hatchling build hook: compiles tblog's optional C extension, ``tblog._speedups``.

Owns the build of ``tblog/_speedups.c`` (plain CPython C API) for the wheel target, with
setuptools' ``build_ext`` and the compiler Python was configured with (``CC``/``CFLAGS``
honoured; default optimisation flags, nothing machine-specific such as ``-march=native``).

- standard wheel: the module is built in a temporary directory and force-included as
  ``tblog/_speedups<EXT_SUFFIX>``; the wheel is then platform-specific (tags inferred).
- editable install (``pip install -e .``): the module is written in place, next to the ``.c``,
  so the editable install imports it; each Python minor has its own EXT_SUFFIX, so venvs of
  several minors share one tree.

The extension is optional: ``TBLOG_PURE_PYTHON=1`` at build time skips it, and any failure
(no setuptools, no compiler, no headers, a compile error) prints one warning line to stderr
and builds a pure-Python (``py3-none-any``) wheel instead; it never fails the install.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_MODULE = "tblog._speedups"
_SOURCE = Path("tblog") / "_speedups.c"
_PURE_ENV = "TBLOG_PURE_PYTHON"


def _reason(exc: BaseException) -> str:
    """Why the build failed, short: a failed command is named by its program and status."""
    text = " ".join(str(exc).split())
    # "command '[cc', ...]' failed with exit code 1" / "Command '[cc', ...]' returned
    # non-zero exit status 1.": the program and the status, not the whole command line
    failed = re.match(r"command '?\[?'?([^',\]]+).*(?:exit code|exit status) (-?\d+)", text, re.I)
    if failed:
        text = f"{failed[1]} failed with exit code {failed[2]}"
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _warn(reason: str) -> None:
    """One line on stderr: the wheel is pure Python, and why."""
    why = " ".join(reason.split()) or "unknown error"
    print(
        f"WARNING: tblog: building without the optional C extension {_MODULE} "
        f"(pure Python; set {_PURE_ENV}=1 to skip it quietly): {why}",
        file=sys.stderr,
        flush=True,
    )


def _compile(root: Path, out_dir: Path) -> Path:
    """Builds the extension into ``out_dir`` with setuptools; returns the built file."""
    from setuptools import Distribution, Extension  # noqa: PLC0415 (optional at build time)
    from setuptools.command.build_ext import build_ext  # noqa: PLC0415

    source = root / _SOURCE
    if not source.is_file():
        raise FileNotFoundError(f"{_SOURCE} is missing")
    ext = Extension(_MODULE, sources=[str(source)])
    # Not setup(): nothing is read from setup.cfg/pyproject.toml or the command line.
    dist = Distribution({"name": "tblog", "ext_modules": [ext]})
    cmd = build_ext(dist)
    cmd.build_lib = str(out_dir)
    cmd.build_temp = str(out_dir / "temp")
    cmd.inplace = False
    cmd.ensure_finalized()
    cmd.run()
    built = Path(cmd.get_ext_fullpath(_MODULE))
    if not built.is_file():
        raise FileNotFoundError(f"the compiler wrote no {built.name}")
    return built


def _ext_filename() -> str:
    """``_speedups<EXT_SUFFIX>`` of the Python that runs the build."""
    import sysconfig  # noqa: PLC0415

    return "_speedups" + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds ``tblog._speedups`` to the wheel (or the tree, for editable installs)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._tmp: str | None = None
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        editable = version == "editable"
        in_place = root / "tblog" / _ext_filename()
        if os.environ.get(_PURE_ENV, "").strip() not in ("", "0"):
            if editable:
                # An in-place module of this Python left by an earlier install would still be
                # imported: pure Python means removing it.
                in_place.unlink(missing_ok=True)
            return
        self._tmp = tempfile.mkdtemp(prefix="tblog-speedups-")
        try:
            built = _compile(root, Path(self._tmp))
        except Exception as exc:  # noqa: BLE001 (any failure means a pure wheel, never an error)
            _warn(_reason(exc))
            if editable:
                in_place.unlink(missing_ok=True)  # stale: it was built from another .c
            return
        if editable:
            # Replaced, not overwritten: a running process may have the old file mapped.
            staged = in_place.with_name(f".{in_place.name}.{os.getpid()}.tmp")
            shutil.copyfile(built, staged)
            os.replace(staged, in_place)
            return
        build_data["force_include"][str(built)] = f"tblog/{built.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(str(self._tmp), ignore_errors=True)
            self._tmp = None
