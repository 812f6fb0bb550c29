"""The README leads (issue 16.8): its first screen, its CLI table and its links.

* The first screen (the first 60 lines) holds the two-minute path (install with the local
  extra, ``tblog local``, two exports, a Python snippet, ``tblog tail``) and how to see
  failures; ``tests/test_readme_first_screen.py`` follows that path in a fresh venv.
* The command-line table names every subcommand and every flag of ``tblog --help`` and each
  subcommand's ``--help`` (a flag added without a line in the README fails here).
* Every link works on PyPI, where a relative link is broken: links are absolute
  (``https://github.com/tblog/tblog/blob/main/<path>``) or ``#anchors`` of the README itself;
  each names a file of this checkout, and each anchor a heading of the file it points to.
  The same holds for the ``docs/`` pages (which live on GitHub, so relative links work there).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tblog.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REPO = "https://github.com/tblog/tblog/blob/main/"
FIRST_SCREEN = 60

_LINK = re.compile(r"(?<!!)\[(?:[^\]]|\][^(])*?\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"^#{1,6} (.+)$", line)
        if match and not in_code:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return _LINK.findall(text)


def check_link(source: Path, target: str, *, relative_ok: bool) -> str | None:
    """None when ``target`` (a link in ``source``) works; else what is wrong with it."""
    if target.startswith("#"):
        return None if unquote(target[1:]) in anchors(source) else "no such heading"
    if target.startswith(REPO):
        path_part = target[len(REPO) :]
    elif target.startswith(("http://", "https://", "mailto:")):
        return None
    elif relative_ok:
        path_part = str((source.parent / target).resolve().relative_to(ROOT))
    else:
        return "relative link (broken on PyPI): use " + REPO + "<path>"
    path_part, _, anchor = path_part.partition("#")
    file = ROOT / unquote(path_part)
    if not file.exists():
        return "no such file in the checkout"
    if anchor and file.suffix == ".md" and unquote(anchor) not in anchors(file):
        return f"no heading #{anchor} in {path_part}"
    return None


def test_readme_links_work_on_pypi() -> None:
    found = links(README)
    assert found
    bad = {t: why for t in found if (why := check_link(README, t, relative_ok=False))}
    assert not bad, bad


def test_docs_pages_exist_and_their_links_work() -> None:
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds the reference moved out of the README"
    readme_links = {t.partition("#")[0] for t in links(README) if t.startswith(REPO + "docs/")}
    for page in pages:
        assert REPO + f"docs/{page.name}" in readme_links, f"README does not link {page.name}"
        bad = {t: why for t in links(page) if (why := check_link(page, t, relative_ok=True))}
        assert not bad, (page.name, bad)


def first_screen() -> str:
    return "\n".join(README.read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN])


def test_first_screen_gives_the_two_minute_path_and_failures() -> None:
    screen = first_screen()
    assert "pip install 'tblog[local]'" in screen
    assert re.search(r"^tblog local\b", screen, re.M)
    exports = re.findall(r"^export (\w+)=", screen, re.M)
    assert sorted(exports) == ["TB_HOST", "TB_TOKEN"], exports
    assert "```python" in screen
    assert re.search(r"^tblog tail\b", screen, re.M)
    assert "## Seeing failures" in screen
    for needed in ("stats()", 'getLogger("tblog")', "tblog stats"):
        assert needed in screen, needed


def cli_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Command line\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, set[str]]:
    """Every (sub)command's name and its long options, from the real argparse parser."""
    out: dict[str, set[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                flags = {
                    s
                    for a in sub._actions
                    for s in a.option_strings
                    if s.startswith("--") and s != "--help"
                }
                out[full] = flags
                out.update(commands(sub, full))
    return out


@pytest.mark.parametrize("command", sorted(commands(build_parser())))
def test_cli_table_names_every_command_and_flag(command: str) -> None:
    section = cli_section()
    assert f"`tblog {command}" in section, f"no row for tblog {command}"
    flags = commands(build_parser())[command]
    missing = sorted(f for f in flags if not re.search(rf"{re.escape(f)}\b", section))
    assert not missing, f"tblog {command}: {missing}"
