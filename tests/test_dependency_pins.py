"""The security pins of pyproject.toml cannot regress.

``requests`` must be at least 2.32.4 (CVE-2024-47081: ``.netrc`` credentials leaked to
other hosts) and ``litellm`` must exclude the compromised 1.82.7 and 1.82.8, in every
place pyproject.toml names them (dependencies and extras).  The file is read with a
regular expression (``tomllib`` is not in Python 3.10); the requirement strings are
judged by ``packaging``, the library pip itself uses.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
#: Every quoted string in the file that starts like a requirement of these projects.
_QUOTED = re.compile(r"""["']((?:requests|litellm)(?![\w.-])[^"']*)["']""", re.IGNORECASE)


def _requirements(name: str) -> list[Requirement]:
    found = [Requirement(text) for text in _QUOTED.findall(PYPROJECT.read_text("utf-8"))]
    return [r for r in found if r.name.lower() == name]


def test_requests_is_at_least_2_32_4_everywhere() -> None:
    reqs = _requirements("requests")
    assert reqs, "pyproject.toml no longer names requests"
    for req in reqs:
        assert "2.32.3" not in req.specifier and "2.31.0" not in req.specifier, str(req)
        assert "2.32.4" in req.specifier, str(req)


def test_litellm_excludes_the_compromised_releases_everywhere() -> None:
    reqs = _requirements("litellm")
    assert len(reqs) >= 2, "the litellm extra and the test extra both name litellm"
    for req in reqs:
        for bad in ("1.82.7", "1.82.8"):
            assert bad not in req.specifier, f"{req} allows the compromised {bad}"
        assert "1.82.6" in req.specifier and "1.82.9" in req.specifier, str(req)
