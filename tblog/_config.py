"""Handler options: defaults, environment fallbacks and validation with clear messages.

Every option is a primitive (int, float, bool, str, list or dict of primitives) so
``logging.config.dictConfig`` can build a handler from YAML.  Validation happens
once, in the constructor, and raises ``ValueError``/``TypeError`` naming the option;
nothing here ever includes the token in a message.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tblog._diag import warn_once

DEFAULT_API_URL = "https://api.tinybird.co"
API_URL_ENV = ("TB_API_URL", "TB_HOST")
TOKEN_ENV = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")

#: Tinybird rejects Events API requests over 10 MB; stay well below it.
MAX_REQUEST_BYTES = 8 * 1024 * 1024

#: Loggers whose records are never shipped: tblog itself and its HTTP stack.
ALWAYS_IGNORED = ("tblog", "urllib3", "requests", "charset_normalizer")

SCHEMAS = ("tblog", "tinybird-python-sdk")
DROP_POLICIES = ("oldest", "newest")

_DS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Options:
    """Validated delivery options of one handler (or other producer)."""

    batch_size: int = 2000
    flush_interval: float = 1.0
    max_buffer_size: int = 100_000
    max_buffer_bytes: int = 64 * 1024 * 1024
    max_batch_bytes: int = MAX_REQUEST_BYTES
    drop_policy: str = "oldest"
    gzip: bool = True
    wait: bool = False
    timeout: float = 10.0
    shutdown_timeout: float = 5.0
    max_event_bytes: int = 1024 * 1024
    max_retries: int = 10
    max_retry_time: float = 300.0
    retry_base_delay: float = 0.5
    retry_max_delay: float = 30.0
    circuit_breaker_threshold: int = 5
    circuit_breaker_reset: float = 30.0
    spool_dir: str | None = None
    max_spool_bytes: int = 256 * 1024 * 1024
    verify: bool = True
    ca_bundle: str | None = None
    redact: bool = True
    redact_keys: tuple[str, ...] = ()
    redact_patterns: tuple[str, ...] = ()
    static_fields: Mapping[str, Any] = field(default_factory=dict)
    warn_stderr: bool = True  # tell a permanent refusal or a loss once on stderr
    # trace-aware keep (tblog._event.tracekeep): hold a trace's records below ERROR until
    # it errors, for at most trace_hold_seconds, within the bounds below
    keep_trace_on_error: bool = False
    trace_hold_seconds: float = 30.0
    trace_hold_max: int = 200  # records held per trace
    trace_hold_max_events: int = 10_000  # records held in all
    trace_hold_max_bytes: int = 16 * 1024 * 1024  # their snapshot estimates in all
    # drop reports (tblog._delivery.reports): seconds between them, 0 turns them off
    client_reports_interval: float = 60.0
    # sampling and dedup (tblog._event.gate): {logger prefix: {LEVEL: rate}}; the first
    # dedup_limit records of one (logger, template, level) per dedup_window seconds (0: off)
    sample: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    dedup_limit: int = 0
    dedup_window: float = 60.0

    def __post_init__(self) -> None:
        _positive_int("batch_size", self.batch_size)
        _positive_number("flush_interval", self.flush_interval)
        _positive_int("max_buffer_size", self.max_buffer_size)
        _positive_int("max_buffer_bytes", self.max_buffer_bytes)
        _positive_int("max_batch_bytes", self.max_batch_bytes)
        if self.max_batch_bytes > MAX_REQUEST_BYTES:
            raise ValueError(
                f"max_batch_bytes must be at most {MAX_REQUEST_BYTES} "
                "(Tinybird rejects Events API requests over 10 MB)"
            )
        if self.drop_policy not in DROP_POLICIES:
            raise ValueError(
                f"drop_policy must be one of {', '.join(map(repr, DROP_POLICIES))}, "
                f"not {self.drop_policy!r}"
            )
        _bool("gzip", self.gzip)
        _bool("wait", self.wait)
        _positive_number("timeout", self.timeout)
        _non_negative_number("shutdown_timeout", self.shutdown_timeout)
        _positive_int("max_event_bytes", self.max_event_bytes)
        if self.max_event_bytes < 1024:
            raise ValueError("max_event_bytes must be at least 1024")
        if self.max_event_bytes > self.max_batch_bytes:
            raise ValueError("max_event_bytes must not exceed max_batch_bytes")
        if not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool):
            raise TypeError("max_retries must be an int")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        _positive_number("max_retry_time", self.max_retry_time)
        _positive_number("retry_base_delay", self.retry_base_delay)
        _positive_number("retry_max_delay", self.retry_max_delay)
        if self.retry_max_delay < self.retry_base_delay:
            raise ValueError("retry_max_delay must be >= retry_base_delay")
        _positive_int("circuit_breaker_threshold", self.circuit_breaker_threshold)
        _positive_number("circuit_breaker_reset", self.circuit_breaker_reset)
        _optional_str("spool_dir", self.spool_dir)
        _positive_int("max_spool_bytes", self.max_spool_bytes)
        _bool("verify", self.verify)
        _optional_str("ca_bundle", self.ca_bundle)
        _bool("redact", self.redact)
        _bool("warn_stderr", self.warn_stderr)
        _bool("keep_trace_on_error", self.keep_trace_on_error)
        _positive_number("trace_hold_seconds", self.trace_hold_seconds)
        _positive_int("trace_hold_max", self.trace_hold_max)
        _positive_int("trace_hold_max_events", self.trace_hold_max_events)
        _positive_int("trace_hold_max_bytes", self.trace_hold_max_bytes)
        _non_negative_number("client_reports_interval", self.client_reports_interval)
        object.__setattr__(self, "sample", sample_rules(self.sample))
        if not isinstance(self.dedup_limit, int) or isinstance(self.dedup_limit, bool):
            raise TypeError(f"dedup_limit must be an int, not {type(self.dedup_limit).__name__}")
        if self.dedup_limit < 0:
            raise ValueError(f"dedup_limit must be >= 0 (0: off), not {self.dedup_limit}")
        _non_negative_number("dedup_window", self.dedup_window)
        object.__setattr__(self, "redact_keys", str_tuple("redact_keys", self.redact_keys))
        patterns = str_tuple("redact_patterns", self.redact_patterns)
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                message = f"redact_patterns: {pattern!r} is not a valid regex: {exc}"
                raise ValueError(message) from None
        object.__setattr__(self, "redact_patterns", patterns)
        static = resolved(self.static_fields)
        if not isinstance(static, Mapping):
            raise TypeError("static_fields must be a mapping of field names to values")
        object.__setattr__(self, "static_fields", static)


def sample_rules(sample: object) -> dict[str, dict[int, float]]:
    """The ``sample`` option as {logger prefix: {level number: rate}}, checked.

    From YAML: ``{"app.db": {"DEBUG": 0.1}, "": {"INFO": 0.5}}``; level names (any case) or
    numbers, rates from 0 to 1.
    """
    sample = resolved(sample)
    if sample is None:
        return {}
    if not isinstance(sample, Mapping):
        raise TypeError(
            "sample must be a mapping of logger names to {level name: rate}, "
            f'for example {{"app.db": {{"DEBUG": 0.1}}}}, not {type(sample).__name__}'
        )
    rules: dict[str, dict[int, float]] = {}
    for prefix, given in sample.items():
        if not isinstance(prefix, str):
            raise TypeError(f"sample: logger names must be str ('' for all), not {prefix!r}")
        levels = resolved(given)
        if not isinstance(levels, Mapping):
            raise TypeError(
                f"sample[{prefix!r}] must be a mapping of level names to rates, "
                f'for example {{"DEBUG": 0.1}}, not {levels!r}'
            )
        rates: dict[int, float] = {}
        for level, rate in levels.items():
            number = _level_number(level)
            if number is None:
                raise ValueError(
                    f"sample[{prefix!r}]: {level!r} is not a level name "
                    "(DEBUG, INFO, WARNING, ERROR, CRITICAL, or a level number)"
                )
            if not isinstance(rate, (int, float)) or isinstance(rate, bool):
                raise TypeError(
                    f"sample[{prefix!r}][{level!r}] must be a number from 0 to 1, "
                    f"not {type(rate).__name__}"
                )
            if not 0 <= rate <= 1:
                raise ValueError(
                    f"sample[{prefix!r}][{level!r}] must be a rate from 0 to 1, not {rate}"
                )
            rates[number] = float(rate)
        if rates:
            rules[prefix] = rates
    return rules


def _level_number(level: object) -> int | None:
    if isinstance(level, int) and not isinstance(level, bool):
        return level if level >= 0 else None
    if isinstance(level, str):
        number = logging.getLevelName(level.strip().upper())
        if isinstance(number, int):
            return number
    return None


def options_from(options: Mapping[str, Any]) -> Options:
    """``Options`` from a producer's ``**options``, naming an unknown option in the error."""
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(map(repr, unknown))}; the options are "
            + ", ".join(sorted(known))
        )
    values = dict(options)
    if values.get("static_fields") is None:
        values.pop("static_fields", None)
    return Options(**values)


#: Options only the log producers (the logging handlers, structlog's ``TinybirdProcessor``)
#: honour: they need a record's logger, level and trace, or a log channel's drop report.
LOG_ONLY_OPTIONS = (
    "sample", "dedup_limit", "dedup_window", "keep_trace_on_error", "trace_hold_seconds",
    "trace_hold_max", "trace_hold_max_events", "trace_hold_max_bytes", "client_reports_interval",
    "static_fields",
)  # fmt: skip


def row_options(producer: str, options: Mapping[str, Any]) -> Mapping[str, Any]:
    """``options`` of a producer of plain rows, refusing those it would ignore (by name).

    Its rows have no logger, level or trace to sample, collapse or hold, and its drops are
    not reported to ``tblog_client_reports``: such an option is a ``TypeError``, never
    accepted and ignored.
    """
    refused = [name for name in LOG_ONLY_OPTIONS if name in options]
    if refused:
        raise TypeError(
            f"{producer} does not take {', '.join(map(repr, refused))}: sampling, dedup, "
            "keep_trace_on_error, drop reports and static_fields are options of the logging "
            "handlers and the structlog TinybirdProcessor (a row carries the fields it is "
            f"given); {producer} counts its drops in stats()"
        )
    return options


def resolve_api_url(api_url: str | None) -> str:
    """Return ``api_url``, else ``$TB_API_URL``, else ``$TB_HOST``, else Tinybird's default host.

    Normalised: a trailing ``/v0/events`` or ``/v0`` (as Tinybird's docs print the Events
    API's address) and trailing slashes are stripped, since tblog appends ``/v0/events``
    itself; any other path is kept as a prefix (a proxy mounted below a path).  A scheme
    other than http(s), credentials, a query string or a fragment are refused; the message
    never repeats the URL, which could hold a token.
    """
    url = api_url or next((os.environ[k] for k in API_URL_ENV if os.environ.get(k)), "")
    if not isinstance(url, str):
        raise TypeError("api_url must be a str")
    url = (url or DEFAULT_API_URL).strip()
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(
            "api_url must start with http:// or https:// "
            "(for example https://api.tinybird.co or https://api.us-east.tinybird.co)"
        )
    scheme, rest = url.split("://", 1)
    host, slash, path = rest.partition("/")
    if "@" in host:
        raise ValueError(
            "api_url must not hold credentials (user:password@); pass the token as token=..."
        )
    if "?" in rest or "#" in rest:
        raise ValueError(
            "api_url must be a plain host URL, without a query string or fragment "
            "(pass the token as token=..., never in the URL)"
        )
    if not host:
        raise ValueError("api_url has no host (for example https://api.tinybird.co)")
    path = _EVENTS_SUFFIX.sub("", "/" + path.strip("/")) if slash else ""
    return f"{scheme}://{host}{path.rstrip('/')}"


_EVENTS_SUFFIX = re.compile(r"/v0(/events)?/*$", re.IGNORECASE)


def resolve_token(token: str | None) -> str:
    """Return ``token``, else ``$TB_WRITE_TOKEN``, else ``$TB_TOKEN``, else ``$TINYBIRD_TOKEN``."""
    if token is not None and not isinstance(token, str):
        raise TypeError("token must be a str")
    value = (token or next((os.environ[k] for k in TOKEN_ENV if os.environ.get(k)), "")).strip()
    if not value:
        raise ValueError(
            "no Tinybird token: pass token=... or set one of the environment variables "
            + ", ".join(TOKEN_ENV)
        )
    if any(c in value for c in "\r\n\t "):
        raise ValueError("the Tinybird token contains whitespace; check how it was copied")
    return value


def looks_like_url(value: object) -> bool:
    return isinstance(value, str) and value.strip().startswith(("http://", "https://"))


def looks_like_token(value: object) -> bool:
    """A Tinybird token is a long opaque string (``p.eyJ...``), never a URL."""
    return (
        isinstance(value, str)
        and len(value) >= 20
        and "://" not in value
        and not any(c.isspace() for c in value.strip())
    )


def swap_if_reversed(api_url: str | None, token: str | None) -> tuple[str | None, str | None]:
    """Accept the Tinybird SDK's code order ``(token, api_url)`` and warn once.

    The SDK's README passes ``(api_url, token, ...)`` while its code takes
    ``(token, api_url, ...)``; code written against either keeps working.
    """
    if looks_like_token(api_url) and looks_like_url(token):
        message = (
            "tblog: the first two arguments look like (token, api_url); tblog takes "
            "(api_url, token, app_name, ds_name) as in the Tinybird SDK README. "
            "Accepting them swapped; pass them by keyword to silence this warning."
        )
        if warn_once("swapped-args", message):
            # user code -> handler __init__ -> resolve_target -> here
            warnings.warn(message, UserWarning, stacklevel=4)
        return token, api_url
    return api_url, token


@dataclass(frozen=True)
class Target:
    """Where a producer ships: resolved and validated once, at construction."""

    api_url: str
    token: str = field(repr=False)
    app_name: str = ""
    ds_name: str = "tb_logs"
    environment: str = ""


def resolve_target(
    api_url: str | None,
    token: str | None,
    app_name: str | None,
    ds_name: str,
    environment: str | None,
) -> Target:
    """Arguments, then the environment, then defaults; the SDK's swapped order accepted."""
    api_url, token = swap_if_reversed(api_url, token)
    return Target(
        api_url=resolve_api_url(api_url),
        token=resolve_token(token),
        app_name=resolve_app_name(app_name),
        ds_name=check_datasource(ds_name),
        environment=resolve_environment(environment),
    )


def resolve_app_name(app_name: str | None) -> str:
    if app_name is not None and not isinstance(app_name, str):
        raise TypeError("app_name must be a str")
    if app_name:
        return app_name
    env = os.environ.get("TB_APP_NAME")
    if env:
        return env
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return os.path.splitext(argv0)[0] or "python"


def resolve_environment(environment: str | None) -> str:
    if environment is not None and not isinstance(environment, str):
        raise TypeError("environment must be a str")
    if environment is not None:
        return environment
    return os.environ.get("TB_ENVIRONMENT", "")


def check_datasource(name: object, option: str = "ds_name") -> str:
    if not isinstance(name, str) or not _DS_NAME.match(name):
        raise ValueError(
            f"{option} must be a Tinybird datasource name (letters, digits and underscores, "
            f"not starting with a digit), not {name!r}"
        )
    return name


def check_schema(schema: object) -> str:
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {', '.join(map(repr, SCHEMAS))}, not {schema!r}")
    return str(schema)


def ignored_prefixes(ignore_loggers: Iterable[str] | str | None) -> tuple[str, ...]:
    """Logger names whose records (and their children's) are never shipped."""
    ignore_loggers = resolved(ignore_loggers)
    if isinstance(ignore_loggers, str):
        ignore_loggers = [ignore_loggers]
    names = list(ALWAYS_IGNORED)
    for name in ignore_loggers or ():
        if not isinstance(name, str) or not name:
            raise TypeError("ignore_loggers must be a list of logger names")
        names.append(name)
    return tuple(names)


_REFUSED_CACHE_MAX = 4096


def refused_name(name: str, prefixes: tuple[str, ...], cache: dict[str, bool]) -> bool:
    """Whether logger ``name`` is one of ``prefixes`` or below one; remembered in ``cache``.

    Callers look ``cache.get(name)`` up first (one dict lookup per record on the hot path)
    and call this only for a name they have not seen.
    """
    refused = any(name == p or name.startswith(p + ".") for p in prefixes)
    if len(cache) >= _REFUSED_CACHE_MAX:
        cache.clear()
    cache[name] = refused
    return refused


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, not {value}")


def _positive_number(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, not {value}")


def _non_negative_number(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, not {value}")


def _optional_str(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{name} must be a non-empty str (a path) or None, not {value!r}")


def resolved(value: Any) -> Any:
    """``value`` with what ``dictConfig`` left for later resolved, at any depth.

    ``dictConfig`` hands a handler its nested dicts and lists as ``ConvertingDict``/
    ``ConvertingList``, which turn ``cfg://`` and ``ext://`` strings into what they name only
    when an item is read by key or index: iterating or copying them sees the strings.  This
    reads every item that way (other values are returned as they are).
    """
    config = sys.modules.get("logging.config")  # not imported: nothing of it to resolve
    if config is None:
        return value
    if isinstance(value, config.ConvertingDict):
        return {key: resolved(value[key]) for key in list(value.keys())}
    if isinstance(value, (config.ConvertingList, config.ConvertingTuple)):
        return [resolved(value[i]) for i in range(len(value))]
    return value


def str_tuple(name: str, value: object) -> tuple[str, ...]:
    """A list (from YAML) or tuple of strings, or a single string, as a tuple."""
    value = resolved(value)
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise TypeError(f"{name} must be a list of non-empty strings, not {value!r}")
    return tuple(value)


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, not {value!r}")
