"""``tblog local``: a Tinybird-compatible Events and SQL API on embedded ClickHouse (chDB).

``datafile`` parses ``.datasource`` files, ``store`` keeps the tables in chDB and maps
JSON rows to typed columns (or to quarantine), ``tokens`` holds the access scopes and
``server`` speaks the HTTP API.  chDB comes with the ``tblog[local]`` extra.
"""

from __future__ import annotations

__all__: list[str] = []
