"""The ``tblog`` command run as users run it: ``python -m tblog`` in a subprocess whose
environment holds no ``TB_*``/``TINYBIRD*`` variable but the ones a test gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def clean_env(**more: str) -> dict[str, str]:
    """This process's environment without Tinybird variables, plus ``more``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TB_", "TINYBIRD"))}
    env.update(more)
    return env


def run_tblog(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str = "",
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m tblog ARGS``, with ``clean_env()`` unless ``env`` is given."""
    return subprocess.run(
        [sys.executable, "-m", "tblog", *args], input=stdin, capture_output=True, text=True,
        env=clean_env() if env is None else env, timeout=timeout, cwd=cwd, check=False,
    )  # fmt: skip
