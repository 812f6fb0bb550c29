"""The optional C extension ``tblog._speedups`` as the packaging builds it (hatch_build.py).

Wheels are built for real, with ``python -m pip wheel`` (an isolated build env with the
``[build-system]`` requirements), from a copy of the checkout: the files git tracks plus the
untracked ones it does not ignore, as they are in the working tree.  The copy also holds a
module built in place for another Python (``_speedups.cpython-39-...so``, as an editable
install of another minor leaves), which no wheel or sdist may pick up.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
EXT_SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))
#: The module this Python builds, as a wheel member.
SPEEDUPS = f"tblog/_speedups{EXT_SUFFIX}"
#: An in-place module of another minor (3.9 is not supported, so never this Python's).
OTHER_MINOR = "tblog/_speedups.cpython-39-x86_64-linux-gnu.so"
WARNING = "WARNING: tblog: building without the optional C extension tblog._speedups"
_BINARY = (".so", ".pyd")


def _env(**more: str) -> dict[str, str]:
    """This environment without the build's knobs (pure switch, compiler), plus ``more``."""
    drop = {"TBLOG_PURE_PYTHON", "CC", "CXX", "LDSHARED", "CFLAGS", "LDFLAGS", "CPPFLAGS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(more)
    return env


def _copy_tree(dest: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    if listed.returncode != 0:
        pytest.skip("not a git checkout: no source tree to copy")
    for name in listed.stdout.decode().split("\0"):
        src = ROOT / name
        if name and src.is_file():  # deleted in the working tree: not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / OTHER_MINOR).write_bytes(b"\x7fELF not a module of this Python")
    return dest


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding pyproject's ``[build-system] requires`` (hatchling, setuptools)
    and ``editables`` (what hatchling asks pip for before an editable build), for the builds
    pip has no command for (sdist, editable wheel)."""
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    found = re.search(r"^\[build-system\].*?^requires = (\[[^\]]*\])", text, re.M | re.S)
    assert found, "pyproject.toml has no [build-system] requires"
    target = tmp_path_factory.mktemp("backend")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(target),
         *ast.literal_eval(found[1]), "editables"],
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot install the build backend: {done.stderr.strip()[-300:]}")
    return target


def _pip_wheel(source: Path, out: Path, **env: str) -> tuple[Path, str]:
    """``pip wheel SOURCE``: the one wheel built, and pip's verbose output (the backend's)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-v", "-w", str(out)],
        capture_output=True, text=True, env=_env(**env), timeout=500, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    wheels = list(out.glob("tblog-*.whl"))
    assert len(wheels) == 1, (wheels, output[-3000:])
    return wheels[0], output


def _binaries(names: list[str]) -> list[str]:
    return sorted(n for n in names if n.endswith(_BINARY))


def _hatchling(backend: Path, source: Path, target: str, out: Path, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(out)],
        cwd=source, capture_output=True, text=True, timeout=500, check=False,
        env=_env(PYTHONPATH=str(backend), **env),
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output


def _load(path: Path) -> str:
    """Loads the file as ``tblog._speedups`` in a fresh interpreter; what it printed."""
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('tblog._speedups', sys.argv[1])\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "print(mod.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_default_wheel_is_platform_specific_with_this_pythons_module_only(
    tree: Path, tmp_path: Path
) -> None:
    assert (tree / OTHER_MINOR).is_file()
    wheel, output = _pip_wheel(tree, tmp_path / "dist")
    assert not wheel.name.endswith("-any.whl"), wheel.name
    assert not wheel.name.endswith("-none-any.whl"), wheel.name
    major, minor = sys.version_info[:2]
    assert f"-cp{major}{minor}-" in wheel.name, wheel.name
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name.endswith(f"_{platform}.whl") or wheel.name.endswith(f"-{platform}.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert _binaries(names) == [SPEEDUPS], names
        wheel_meta = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        assert "Root-Is-Purelib: false" in zf.read(wheel_meta).decode()
        zf.extract(SPEEDUPS, tmp_path / "x")
    assert WARNING not in output
    assert _load(tmp_path / "x" / SPEEDUPS) == "tblog._speedups"


def test_pure_python_switch_builds_a_pure_wheel(tree: Path, tmp_path: Path) -> None:
    wheel, output = _pip_wheel(tree, tmp_path / "dist", TBLOG_PURE_PYTHON="1")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert _binaries(names) == [], names
    assert "tblog/handlers.py" in names
    assert WARNING not in output  # asked for: no warning


def test_no_working_compiler_builds_a_pure_wheel_and_says_so(tree: Path, tmp_path: Path) -> None:
    wheel, output = _pip_wheel(
        tree, tmp_path / "dist", CC="/bin/false", CXX="/bin/false", LDSHARED="/bin/false"
    )
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert _binaries(names) == [], names
    warned = [line for line in output.splitlines() if WARNING in line]
    assert len(warned) == 1, output[-3000:]
    assert "/bin/false failed" in warned[0]


def test_sdist_holds_the_hook_and_the_source_and_builds_the_module(
    tree: Path, backend: Path, tmp_path: Path
) -> None:
    this_minor = tree / SPEEDUPS  # as this Python's editable install leaves it
    this_minor.write_bytes(b"stale")
    try:
        if shutil.which("pyproject-build") or _has_module("build"):
            done = subprocess.run(
                [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(tree)],
                capture_output=True, text=True, env=_env(), timeout=500, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
        else:
            _hatchling(backend, tree, "sdist", tmp_path)
    finally:
        this_minor.unlink()
    (sdist,) = tmp_path.glob("tblog-*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = [n.split("/", 1)[1] for n in tf.getnames() if "/" in n]
    assert "hatch_build.py" in names
    assert "tblog/_speedups.c" in names
    assert "pyproject.toml" in names
    assert _binaries(names) == [], names
    # a source install compiles it: what pip does with the sdist
    wheel, _ = _pip_wheel(sdist, tmp_path / "dist")
    with zipfile.ZipFile(wheel) as zf:
        assert _binaries(zf.namelist()) == [SPEEDUPS]


def test_editable_build_writes_the_module_in_place(
    tree: Path, backend: Path, tmp_path: Path
) -> None:
    in_place = tree / SPEEDUPS
    in_place.unlink(missing_ok=True)
    _hatchling(backend, tree, "wheel:editable", tmp_path / "dist")
    assert in_place.is_file()
    (editable,) = (tmp_path / "dist").glob("tblog-*.whl")
    with zipfile.ZipFile(editable) as zf:
        assert _binaries(zf.namelist()) == []  # the tree is imported, not the wheel
    assert (tree / OTHER_MINOR).is_file()  # another minor's module is left alone
    # what the editable install's .pth does: the tree on sys.path
    done = subprocess.run(
        [sys.executable, "-c", "import tblog._speedups as s; print(s.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env=_env(PYTHONPATH=str(tree)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == in_place
    # pure Python asked for: this Python's in-place module goes (it would still be imported)
    _hatchling(backend, tree, "wheel:editable", tmp_path / "dist2", TBLOG_PURE_PYTHON="1")
    assert not in_place.exists()
    assert (tree / OTHER_MINOR).is_file()


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
