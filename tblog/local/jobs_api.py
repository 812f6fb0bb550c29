"""Tinybird's Jobs API on ``tblog local``: the jobs the Data Sources API hands out.

Tinybird runs imports (``mode=append|replace``, ``/v1/datasources/NAME/append``) and
``POST /v0/datasources/NAME/delete`` as jobs, answers with their ``job_id`` and lets
clients poll ``GET /v0/jobs/ID`` (the Forward CLI's ``tb datasource append`` does, and
fails without it).  ``tblog local`` does the work before it answers, so each job is
recorded here already finished (``status`` "done", or "error" for an import that failed),
with Tinybird's fields: ``id``/``job_id``, ``kind`` ("import", "delete_data"),
``status``, ``created_at``/``updated_at`` (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC),
``job_url``, ``datasource`` (``{"id", "name"}``) and the kind's own fields (for imports
``mode``, ``statistics`` ``{row_count, bytes}`` of the datasource after the import,
``quarantine_rows``, ``invalid_lines``, ``blocks``; for deletes ``delete_condition``,
``rows_affected``).

* ``GET /v0/jobs/ID``: one job; 404 (JSON) when it is unknown, was evicted, or the
  token may not see it.
* ``GET /v0/jobs``: ``{"jobs": [...]}``, newest first, at most 100 (as Tinybird), with
  ``kind=``, ``status=``, ``created_after=``, ``created_before=`` filters.

A token sees a job when it can read or append to the job's datasource (the rule of
``GET /v0/datasources/NAME``); a token with a row filter sees only the jobs it started,
without the datasource's table-wide ``statistics``.  Jobs are kept in memory, the last
``KEEP`` of them (Tinybird keeps 48 hours): a restart forgets them.
"""

from __future__ import annotations

import re
import threading
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tblog.local.server import LocalServer, PatternRoute
    from tblog.local.tokens import Token

__all__ = ["KEEP", "LIST_LIMIT", "Job", "Jobs", "now", "registry", "routes"]

#: Jobs kept (the oldest are forgotten first).
KEEP = 1000
#: Jobs ``GET /v0/jobs`` lists at most (Tinybird's limit).
LIST_LIMIT = 100
_JOB_ID = r"([A-Za-z0-9_-]{1,100})"


def now() -> str:
    """The current UTC time as Tinybird writes job times."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class Job:
    """One finished job: ``fields`` are the kind's own (see the module docstring)."""

    id: str
    kind: str
    status: str
    datasource_id: str
    datasource_name: str
    creator: str  # the id (a one-way hash) of the token that started it
    created_at: str
    updated_at: str
    fields: dict[str, Any] = field(default_factory=dict)

    def view(self, base_url: str, token: Token, *, summary: bool = False) -> dict[str, Any]:
        """The job as Tinybird's Jobs API shows it to ``token``."""
        out: dict[str, Any] = {
            "id": self.id,
            "job_id": self.id,
            "kind": self.kind,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "job_url": f"{base_url}/v0/jobs/{self.id}",
            "datasource": {"id": self.datasource_id, "name": self.datasource_name},
        }
        if summary:
            return out
        out.update(started_at=self.created_at, is_cancellable=False)
        out.update(self.fields)
        if token.row_filter and "statistics" in out:  # the whole table's: not this token's
            out["statistics"] = {"row_count": None, "bytes": None}
        return out


class Jobs:
    """The last ``keep`` jobs, by id (thread-safe)."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, *, kind: str, datasource: tuple[str, str], creator: str,
            job_id: str | None = None, status: str = "done", created_at: str | None = None,
            **fields: Any) -> Job:  # fmt: skip
        """Record a finished job (``datasource`` is ``(id, name)``); the oldest past
        ``keep`` are forgotten."""
        updated = now()
        job = Job(id=job_id or str(uuid.uuid4()), kind=kind, status=status,
                  datasource_id=datasource[0], datasource_name=datasource[1],
                  creator=creator, created_at=created_at or updated, updated_at=updated,
                  fields=dict(fields))  # fmt: skip
        with self._lock:
            self._jobs[job.id] = job
            self._jobs.move_to_end(job.id)
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self) -> list[Job]:
        """The jobs, newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))


_REGISTRIES: weakref.WeakKeyDictionary[LocalServer, Jobs] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def registry(server: LocalServer) -> Jobs:
    """The jobs of ``server`` (made on first use)."""
    with _REGISTRIES_LOCK:
        jobs = _REGISTRIES.get(server)
        if jobs is None:
            jobs = _REGISTRIES[server] = Jobs()
        return jobs


def _visible(job: Job, token: Token) -> bool:
    name = job.datasource_name
    if not (token.can_read(name) or token.can_append(name)):
        return False
    return not token.row_filter or job.creator == token.id


def _time_bound(value: str) -> str:
    """A ``created_after``/``created_before`` value in the form job times are written
    (``2026-12-03T16:00:00Z`` and ``2026-12-03 16:00:00`` both compare right)."""
    return value.strip().replace("T", " ").removesuffix("Z")


def routes(server: LocalServer) -> list[PatternRoute]:
    """The routes of this module, for ``LocalServer.pattern_routes``."""
    from tblog.local.server import _HTTPError  # noqa: PLC0415 - a cycle

    jobs = registry(server)

    def get_one(h: BaseHTTPRequestHandler, params: dict[str, list[str]],
                job_id: str) -> tuple[int, Any]:  # fmt: skip
        token = server.authenticate(h, params)
        job = jobs.get(job_id)
        if job is None or not _visible(job, token):
            raise _HTTPError(404, "Job not found")
        return 200, job.view(server.url, token)

    def list_jobs(h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Any]:
        token = server.authenticate(h, params)
        kind = (params.get("kind") or [""])[0]
        status = (params.get("status") or [""])[0]
        after = _time_bound((params.get("created_after") or [""])[0])
        before = _time_bound((params.get("created_before") or [""])[0])
        out: list[dict[str, Any]] = []
        for job in jobs.recent():
            if len(out) >= LIST_LIMIT:
                break
            if (not _visible(job, token) or (kind and job.kind != kind)
                    or (status and job.status != status)
                    or (after and job.created_at <= after)
                    or (before and job.created_at >= before)):  # fmt: skip
                continue
            out.append(job.view(server.url, token, summary=True))
        return 200, {"jobs": out}

    return [
        ("GET", re.compile(r"/v0/jobs"), list_jobs),
        ("GET", re.compile(rf"/v0/jobs/{_JOB_ID}"), get_one),
    ]
