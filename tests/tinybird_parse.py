"""Run by Tinybird's CLI venv (not ours): parse .datasource files with Tinybird's own parser.

``python tests/tinybird_parse.py FILE...`` prints one JSON object: for each file's
stem, its description, columns and engine as ``tinybird-cli`` (or the newer
``tinybird`` package) understands them.  ``tests/test_local_datafile.py`` compares
that with ``tblog.local.datafile``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _parser() -> Any:
    try:
        from tinybird.datafile_common import parse_datasource  # tinybird-cli

        return parse_datasource
    except ImportError:
        from tinybird.datafile.parse_datasource import parse_datasource  # tinybird (Forward)

        return parse_datasource


def main(paths: list[str]) -> None:
    parse = _parser()
    out: dict[str, Any] = {}
    for path in paths:
        doc = parse(path, skip_eval=True)
        node = doc.nodes[0]
        engine = node.get("engine") or {}
        out[Path(path).stem] = {
            "description": doc.description or node.get("description") or "",
            "columns": [
                {
                    k: c.get(k)
                    for k in ("name", "type", "nullable", "default_value", "jsonpath", "codec")
                }
                for c in node.get("columns", [])
            ],
            "engine": engine.get("type"),
            "engine_args": dict(engine.get("args") or []),
            "indexes": [str(i) for i in node.get("indexes") or []],
        }
    json.dump(out, sys.stdout, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
