"""``tblog local``: a Tinybird-compatible Events and SQL API on embedded ClickHouse (chDB).

``datafile`` parses ``.datasource`` files, ``convert`` maps JSON rows to typed columns
(or to quarantine reasons), ``store`` keeps the tables in chDB, ``tokens`` holds the
access scopes (saved in the data dir), ``datadir`` locks the data dir to one server,
``sqlguard`` decides which SQL may run and ``server`` speaks the HTTP API.
chDB comes with the ``tblog[local]`` extra.
"""

from __future__ import annotations

__all__: list[str] = []
