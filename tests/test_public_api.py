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
