"""The public API is what __all__ lists, sorted; every module says what it owns."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import tblog


def test_all_is_sorted_and_importable() -> None:
    assert tblog.__all__ == sorted(tblog.__all__)
    for name in tblog.__all__:
        assert hasattr(tblog, name), name


def test_every_module_has_a_docstring_and_py_typed_ships() -> None:
    package = Path(tblog.__file__).parent
    assert (package / "py.typed").exists()
    for module in pkgutil.walk_packages([str(package)], "tblog."):
        path = Path(importlib.util.find_spec(module.name).origin or "")  # type: ignore[union-attr]
        if path.suffix != ".py":
            continue
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{module.name} has no module docstring"


#: Every import path the README and CHANGELOG show users, and what it must name.
DOCUMENTED_PATHS = [
    ("tblog.handlers", "TinybirdLoggingHandler"),
    ("tblog.handlers", "TinybirdLoggingQueueHandler"),
    ("tblog.handlers", "TinybirdQueueListener"),
    ("tblog.formatters", "TinybirdJsonFormatter"),
    ("tblog.structlog", "TinybirdProcessor"),
    ("tblog.context", "trace"),
    ("tblog.datasource", "Datasource"),
    ("tblog.events", "Tracker"),
    ("tblog.llm", "TraceRecorder"),
    ("tblog.litellm", "TinybirdLitellmHandler"),
    ("tblog.query", "QueryClient"),
    ("tblog.series", "Client"),
    ("tblog.series", "DataPoint"),
    ("tblog.integrations.wsgi", "TinybirdWSGIMiddleware"),
    ("tblog.integrations.asgi", "TinybirdASGIMiddleware"),
    ("tblog.integrations.flask", "TinybirdFlask"),
    ("tblog.integrations.django", "TinybirdDjangoMiddleware"),
    ("tblog.cli", "main"),
]


def test_the_documented_import_paths_keep_working() -> None:
    for module, name in DOCUMENTED_PATHS:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_only_public_modules_sit_at_the_top_of_the_package() -> None:
    # Everything a user imports by path is a top-level module (or integrations/, cli/, local/);
    # what is behind it lives in the private packages _event/ and _delivery/.
    package = Path(tblog.__file__).parent
    private = sorted(p.name for p in package.glob("_*.py") if p.name not in ("__init__.py",))
    assert private == ["__main__.py", "_closing.py", "_config.py", "_diag.py", "_http.py",
                       "_queues.py", "_sql.py", "_version.py"], private  # fmt: skip
