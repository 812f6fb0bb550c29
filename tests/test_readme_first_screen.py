"""The README's first screen, followed literally in a fresh venv (issue 16.8).

The commands are read from the README itself, not copied here: its ``pip install`` line (with
``tblog`` replaced by this checkout's path, so the code under test is what gets installed, with
its ``[local]`` extra, from pip's cache), its ``tblog local`` line (on a free port), its
``export`` lines (their names must be the ones ``tblog local`` prints; the values are the ones
it printed), its Python snippet (run with that venv's python as ``hello.py``, in an environment
holding no Tinybird variable but the exported ones) and its ``tblog tail`` line (with
``--once``). The snippet's message must come back from ``tblog tail``. A wrong variable name, a
snippet that does not ship, or an install line that does not bring the server fails here.
"""

from __future__ import annotations

import ast
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cliutil import clean_env

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIRST_SCREEN = 60

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of ``text``: (language, body)."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def commands(text: str) -> list[str]:
    """Shell command lines of the sh blocks, comments removed."""
    out = []
    for lang, body in blocks(text):
        if lang in ("sh", "bash", "console", "shell"):
            for raw in body.splitlines():
                line = raw.split("  #")[0].split(" # ")[0].strip()
                if line and not line.startswith("#"):
                    out.append(line)
    return out


def first_screen() -> dict[str, object]:
    text = "\n".join(README.read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN])
    lines = commands(text)
    install = [c for c in lines if c.startswith("pip install ")]
    local = [c for c in lines if c.startswith("tblog local")]
    exports = [c for c in lines if c.startswith("export ")]
    tail = [c for c in lines if c.startswith("tblog tail")]
    python = [body for lang, body in blocks(text) if lang == "python"]
    assert len(install) == 1, lines
    assert len(local) == 1, lines
    assert len(tail) == 1, lines
    assert exports, lines
    assert len(python) == 1, "one Python snippet on the first screen"
    return {
        "install": shlex.split(install[0]),
        "local": shlex.split(local[0]),
        "exports": [shlex.split(e)[1:] for e in exports],
        "tail": shlex.split(tail[0]),
        "python": python[0],
    }


def message_of(snippet: str) -> str:
    """The text of the snippet's logging call (the first string given to a log method)."""
    for node in ast.walk(ast.parse(snippet)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("debug", "info", "warning", "error", "critical", "exception")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            return node.args[0].value
    raise AssertionError("the snippet logs no message")


def venv_env(venv: Path, **more: str) -> dict[str, str]:
    env = clean_env(**more)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def read_lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


def test_first_screen_followed_literally_in_a_fresh_venv(tmp_path: Path) -> None:
    screen = first_screen()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_ = venv / "bin"

    # pip install 'tblog[local]' -> pip install '<checkout>[local]'
    install = screen["install"]
    assert isinstance(install, list)
    assert install[:2] == ["pip", "install"], install
    specs = [a for a in install[2:] if re.fullmatch(r"tblog(\[[\w,]+\])?", a)]
    assert specs, f"the install line installs no tblog: {install}"
    args = [re.sub(r"^tblog", str(ROOT), a) if a in specs else a for a in install[2:]]
    pip = subprocess.run(
        [str(bin_ / "python"), "-m", "pip", "install", "--quiet", *args],
        capture_output=True, text=True, timeout=900, env=venv_env(venv), cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    where = subprocess.run(
        [str(bin_ / "python"), "-c", "import tblog, chdb; print(tblog.__file__)"],
        capture_output=True, text=True, timeout=120, env=venv_env(venv), cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), "not the venv's"

    # tblog local, on a free port; it prints the exports to make.
    local = screen["local"]
    assert isinstance(local, list)
    assert local[:2] == ["tblog", "local"], local
    server = subprocess.Popen(
        [str(bin_ / "tblog"), *local[1:], "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=venv_env(venv),
        cwd=tmp_path,
    )  # fmt: skip
    printed: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(server.stdout, printed), daemon=True).start()
    try:
        seen: list[str] = []
        offered: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while not offered and time.monotonic() < deadline:
            try:
                line = printed.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            match = re.search(r"export (.+)$", line)
            if match:
                offered = dict(a.split("=", 1) for a in shlex.split(match.group(1)))
        assert offered, "tblog local printed no export line:\n" + "".join(seen)

        # export NAME=VALUE lines: the names tblog local prints, with its values.
        exported: dict[str, str] = {}
        for words in screen["exports"]:  # type: ignore[attr-defined]
            for word in words:
                name, _, readme_value = word.partition("=")
                assert name in offered, f"README exports {name}; tblog local prints {offered}"
                if readme_value.startswith("http"):  # the same URL but for the free port
                    assert re.sub(r":\d+", ":PORT", readme_value) == re.sub(
                        r":\d+", ":PORT", offered[name]
                    )
                exported[name] = offered[name]
        assert set(exported) == set(offered), (exported.keys(), offered.keys())
        env = venv_env(venv, **exported)

        # The snippet, as hello.py, with that venv's python.
        snippet = screen["python"]
        assert isinstance(snippet, str)
        (tmp_path / "hello.py").write_text(snippet, encoding="utf-8")
        ran = subprocess.run(
            [str(bin_ / "python"), "hello.py"], capture_output=True, text=True, timeout=60,
            env=env, cwd=tmp_path, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "tblog:" not in ran.stderr, ran.stderr  # no delivery failure told

        # tblog tail (--once, so that it returns): the snippet's message is there.
        tail = screen["tail"]
        assert isinstance(tail, list)
        assert tail[:2] == ["tblog", "tail"], tail
        shown = subprocess.run(
            [str(bin_ / "tblog"), *tail[1:], "--once"], capture_output=True, text=True,
            timeout=60, env=env, cwd=tmp_path, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert message_of(snippet) in shown.stdout, shown.stdout + shown.stderr
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
