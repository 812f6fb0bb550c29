"""Fetch python-json-logger's own test suite from PyPI and run it against tblog.

The suite is not in python-json-logger's wheel, only in its sdist, and no line of it is kept
in this repository: ``suite_dir`` runs ``pip download`` for the pinned sdist (checked against
its SHA-256) into the gitignored ``.cache/pjl-<version>/`` of the checkout, once, and
extracts the suite files there.  ``run_suite`` runs them with pytest in a subprocess that
loads the ``pjl_swap`` plugin (``JsonFormatter`` is ``TinybirdJsonFormatter`` there) and
writes a JUnit XML report; ``outcomes`` reads it.

Run by hand to see the counts: ``python tests/pjl_suite/fetch.py [--layout nested]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

PJL_VERSION = "4.2.0"
SDIST_NAME = f"python_json_logger-{PJL_VERSION}.tar.gz"
SDIST_SHA256 = "e371ebe22ec01e289850102091a2b1f6fc9e655c7f1f5f29073936756c290afa"
#: The suite's files that exercise ``JsonFormatter`` (``test_deprecation.py`` and
#: ``test_missing.py`` test python-json-logger's packaging, not a formatter).
SUITE_FILES = ("tests/__init__.py", "tests/test_formatters.py", "tests/test_dictconfig.py")
HERE = Path(__file__).resolve().parent
CACHE = HERE.parents[1] / ".cache" / f"pjl-{PJL_VERSION}"
_DONE = ".complete"


def suite_dir(python: str = sys.executable, cache: Path = CACHE) -> Path:
    """The folder holding the pinned suite's ``tests/``, downloaded on first use."""
    if (cache / _DONE).is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pjl-", dir=cache.parent) as tmp:
        download = Path(tmp) / "download"
        subprocess.run(
            [
                python, "-m", "pip", "download", "--disable-pip-version-check", "-q",
                "--no-deps", "--no-binary", ":all:", "-d", str(download),
                f"python-json-logger=={PJL_VERSION}",
            ],
            check=True, timeout=600,
        )  # fmt: skip
        sdist = download / SDIST_NAME
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{SDIST_NAME}: sha256 {digest}, expected {SDIST_SHA256}")
        suite = Path(tmp) / "suite"
        prefix = f"python_json_logger-{PJL_VERSION}/"
        with tarfile.open(sdist, "r:gz") as tar:
            for name in SUITE_FILES:
                member = tar.getmember(prefix + name)
                source = tar.extractfile(member)
                if not member.isfile() or source is None:
                    raise RuntimeError(f"{SDIST_NAME}: {name} is not a regular file")
                target = suite / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
        # The suite's own pytest settings: none (the project's pyproject must not apply).
        (suite / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        (suite / _DONE).write_text(f"{SDIST_NAME} {digest}\n", encoding="utf-8")
        if cache.exists():  # an interrupted earlier attempt
            shutil.rmtree(cache)
        try:
            suite.rename(cache)
        except OSError:  # another run got there first
            if not (cache / _DONE).is_file():
                raise
    return cache


def run_suite(
    junit: Path, layout: str = "lifted", python: str = sys.executable, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the suite with ``pjl_swap`` (``TBLOG_PJL_LAYOUT=layout``); the report is ``junit``."""
    suite = suite_dir(python)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(HERE), env.get("PYTHONPATH"))))
    env["TBLOG_PJL_LAYOUT"] = layout
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [
            python, "-m", "pytest", "-p", "pjl_swap", "-p", "no:cacheprovider",
            "-c", str(suite / "pytest.ini"), "--rootdir", str(suite), "-q", "-rN",
            f"--junitxml={junit}", *(n for n in SUITE_FILES if Path(n).name.startswith("test_")),
        ],
        cwd=suite, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def outcomes(junit: Path) -> dict[str, str]:
    """``{"test_formatters.py::test_x[...]": "passed" | "failed" | "error" | "skipped"}``."""
    result: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
        result[f"{module}.py::{case.get('name')}"] = outcome
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=("lifted", "nested"), default="lifted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        proc = run_suite(junit, args.layout)
        if not junit.is_file():
            sys.stdout.write(proc.stdout + proc.stderr)
            return 1
        result = outcomes(junit)
    for name, outcome in sorted(result.items()):
        if outcome != "passed":
            print(f"{outcome:8} {name}")
    for module in sorted({n.split("::")[0] for n in result}):
        ran = [o for n, o in result.items() if n.startswith(module + "::") and o != "skipped"]
        print(f"{module}: {ran.count('passed')}/{len(ran)} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
