"""Every error ``tblog/_config.py`` raises, through the constructors as users call them.

Each case builds a handler with keyword arguments (one through ``dictConfig``, one through
the structlog processor, whose options go through ``options_from``) and checks the error's
type, that its message names the option, and that it never repeats the token.
"""

from __future__ import annotations

import logging
import logging.config
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

import tblog
from tblog import _config
from tblog._delivery.sender import get_sender
from tblog.structlog import TinybirdProcessor

SECRET = "p.sEcReT-t0ken-do-not-echo-0123456789"
URL = "http://127.0.0.1:9"  # never contacted: every case fails in the constructor

NAN = float("nan")

# (option, value, exception type, words the message must hold)
OPTION_ERRORS: list[tuple[str, Any, type[Exception], str]] = [
    # _positive_int
    ("batch_size", "500", TypeError, "batch_size must be an int, not str"),
    ("batch_size", True, TypeError, "batch_size must be an int, not bool"),
    ("batch_size", 0, ValueError, "batch_size must be > 0, not 0"),
    ("max_buffer_size", 1.5, TypeError, "max_buffer_size must be an int"),
    ("max_buffer_size", -1, ValueError, "max_buffer_size must be > 0"),
    ("max_buffer_bytes", None, TypeError, "max_buffer_bytes must be an int"),
    ("max_buffer_bytes", 0, ValueError, "max_buffer_bytes must be > 0"),
    ("max_batch_bytes", "8MB", TypeError, "max_batch_bytes must be an int"),
    ("max_batch_bytes", 0, ValueError, "max_batch_bytes must be > 0"),
    ("max_event_bytes", 2.0, TypeError, "max_event_bytes must be an int"),
    ("max_event_bytes", 0, ValueError, "max_event_bytes must be > 0"),
    ("circuit_breaker_threshold", "5", TypeError, "circuit_breaker_threshold must be an int"),
    ("circuit_breaker_threshold", 0, ValueError, "circuit_breaker_threshold must be > 0"),
    ("max_spool_bytes", 1e9, TypeError, "max_spool_bytes must be an int"),
    ("max_spool_bytes", 0, ValueError, "max_spool_bytes must be > 0"),
    # the bounds between options
    ("max_batch_bytes", 9 << 20, ValueError, "max_batch_bytes must be at most 8388608"),
    ("max_event_bytes", 1023, ValueError, "max_event_bytes must be at least 1024"),
    # _positive_number (NaN is not > 0)
    ("flush_interval", "1", TypeError, "flush_interval must be a number of seconds, not str"),
    ("flush_interval", False, TypeError, "flush_interval must be a number of seconds, not bool"),
    ("flush_interval", 0, ValueError, "flush_interval must be > 0"),
    ("flush_interval", NAN, ValueError, "flush_interval must be > 0, not nan"),
    ("timeout", None, TypeError, "timeout must be a number of seconds"),
    ("timeout", -1.0, ValueError, "timeout must be > 0"),
    ("max_retry_time", "300", TypeError, "max_retry_time must be a number of seconds"),
    ("max_retry_time", 0.0, ValueError, "max_retry_time must be > 0"),
    ("retry_base_delay", [], TypeError, "retry_base_delay must be a number of seconds"),
    ("retry_base_delay", 0, ValueError, "retry_base_delay must be > 0"),
    ("retry_max_delay", "30", TypeError, "retry_max_delay must be a number of seconds"),
    ("retry_max_delay", NAN, ValueError, "retry_max_delay must be > 0"),
    ("circuit_breaker_reset", "30", TypeError, "circuit_breaker_reset must be a number"),
    ("circuit_breaker_reset", -5, ValueError, "circuit_breaker_reset must be > 0"),
    # _non_negative_number
    ("shutdown_timeout", "5", TypeError, "shutdown_timeout must be a number of seconds"),
    ("shutdown_timeout", -0.1, ValueError, "shutdown_timeout must be >= 0"),
    ("shutdown_timeout", NAN, ValueError, "shutdown_timeout must be >= 0, not nan"),
    # max_retries: its own checks (0 is allowed)
    ("max_retries", 2.0, TypeError, "max_retries must be an int"),
    ("max_retries", True, TypeError, "max_retries must be an int"),
    ("max_retries", -1, ValueError, "max_retries must be >= 0"),
    # choices
    ("drop_policy", "random", ValueError, "drop_policy must be one of 'oldest', 'newest'"),
    ("schema", "v2", ValueError, "schema must be one of 'tblog', 'tinybird-python-sdk'"),
    # _bool: YAML's "yes" arrives as a str only when quoted; 1 is not a bool either
    ("gzip", "yes", TypeError, "gzip must be true or false, not 'yes'"),
    ("wait", 1, TypeError, "wait must be true or false"),
    ("verify", "false", TypeError, "verify must be true or false"),
    ("redact", None, TypeError, "redact must be true or false"),
    ("warn_stderr", 0, TypeError, "warn_stderr must be true or false"),
    # _optional_str
    ("spool_dir", "", TypeError, "spool_dir must be a non-empty str"),
    ("spool_dir", 42, TypeError, "spool_dir must be a non-empty str"),
    ("ca_bundle", "", TypeError, "ca_bundle must be a non-empty str"),
    ("ca_bundle", True, TypeError, "ca_bundle must be a non-empty str"),
    # str_tuple
    ("redact_keys", [3], TypeError, "redact_keys must be a list of non-empty strings"),
    ("redact_keys", [""], TypeError, "redact_keys must be a list of non-empty strings"),
    ("redact_keys", {"a": 1}, TypeError, "redact_keys must be a list of non-empty strings"),
    ("redact_patterns", 7, TypeError, "redact_patterns must be a list of non-empty strings"),
    ("redact_patterns", ["ok", "("], ValueError, "redact_patterns: '(' is not a valid regex"),
    # static_fields
    ("static_fields", ["a", "b"], TypeError, "static_fields must be a mapping"),
    # ignored_prefixes
    ("ignore_loggers", ["ok", ""], TypeError, "ignore_loggers must be a list of logger names"),
    ("ignore_loggers", [None], TypeError, "ignore_loggers must be a list of logger names"),
    # resolve_app_name, resolve_environment, check_datasource
    ("app_name", 5, TypeError, "app_name must be a str"),
    ("environment", 5, TypeError, "environment must be a str"),
    ("ds_name", "bad-name", ValueError, "ds_name must be a Tinybird datasource name"),
    ("ds_name", "1st", ValueError, "ds_name must be a Tinybird datasource name"),
    # (ds_name=None is the Tinybird SDK's "tb_logs": tests/test_sdk_api.py)
    ("ds_name", 5, ValueError, "ds_name must be a Tinybird datasource name"),
]

# Two options whose error is about the pair.
PAIR_ERRORS: list[tuple[dict[str, Any], type[Exception], str]] = [
    (
        {"max_event_bytes": 4096, "max_batch_bytes": 2048},
        ValueError,
        "max_event_bytes must not exceed max_batch_bytes",
    ),
    (
        {"retry_base_delay": 2.0, "retry_max_delay": 1.0},
        ValueError,
        "retry_max_delay must be >= retry_base_delay",
    ),
]

# (api_url, token, exception type, words): the target's checks
TARGET_ERRORS: list[tuple[Any, Any, type[Exception], str]] = [
    (b"http://127.0.0.1:9", SECRET, TypeError, "api_url must be a str"),
    ("ftp://tb.example.test", SECRET, ValueError, "api_url must start with http:// or https://"),
    ("tb.example.test", SECRET, ValueError, "api_url must start with http:// or https://"),
    (f"https://user:{SECRET}@tb.example.test", SECRET, ValueError, "api_url must not hold"),
    (f"https://tb.example.test/?token={SECRET}", SECRET, ValueError, "api_url must be a plain"),
    (f"https://tb.example.test/#{SECRET}", SECRET, ValueError, "api_url must be a plain"),
    ("https:///v0/events", SECRET, ValueError, "api_url has no host"),
    (URL, 12345, TypeError, "token must be a str"),
    (URL, b"p.bytes-token", TypeError, "token must be a str"),
    (URL, None, ValueError, "no Tinybird token: pass token="),
    (URL, "   ", ValueError, "no Tinybird token: pass token="),
    (URL, SECRET[:12] + " " + SECRET[12:], ValueError, "the Tinybird token contains whitespace"),
    (URL, SECRET[:12] + "\n" + SECRET[12:], ValueError, "the Tinybird token contains whitespace"),
]


def _never_echoes(exc: BaseException) -> None:
    """Neither the token nor any 8-character piece of it is in the error (nor its chain)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=True))
    # Only the message lines: the traceback's source lines show the test's own code.
    messages = [str(exc), *(str(e) for e in _chain(exc))]
    for message in messages:
        assert SECRET not in message
        for i in range(0, len(SECRET) - 8):
            assert SECRET[i : i + 8] not in message, message
    assert "Traceback" in text  # (formatting the chain itself never fails)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


@pytest.fixture(autouse=True)
def _no_handler_left(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A constructor that refuses its options registers nothing with the sender."""
    for var in ("TB_APP_NAME", "TB_ENVIRONMENT", *_config.API_URL_ENV, *_config.TOKEN_ENV):
        monkeypatch.delenv(var, raising=False)
    before = len(get_sender().channels)
    handlers = len(logging._handlerList)  # type: ignore[attr-defined]
    yield
    assert len(get_sender().channels) <= before
    assert len(logging._handlerList) <= handlers  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("option", "value", "kind", "words"),
    OPTION_ERRORS,
    ids=[f"{o}={v!r}" for o, v, _, _ in OPTION_ERRORS],
)
def test_a_bad_option_is_refused_by_name(
    option: str, value: Any, kind: type[Exception], words: str
) -> None:
    kwargs: dict[str, Any] = {"api_url": URL, "token": SECRET, "app_name": "app", option: value}
    with pytest.raises(kind) as info:
        tblog.TinybirdLoggingHandler(**kwargs)
    assert type(info.value) is kind
    assert words in str(info.value)
    assert option in str(info.value)
    _never_echoes(info.value)


@pytest.mark.parametrize(("options", "kind", "words"), PAIR_ERRORS)
def test_options_that_contradict_each_other_are_refused_by_name(
    options: dict[str, Any], kind: type[Exception], words: str
) -> None:
    with pytest.raises(kind) as info:
        tblog.TinybirdLoggingHandler(api_url=URL, token=SECRET, app_name="app", **options)
    assert type(info.value) is kind and words in str(info.value)
    assert all(name in str(info.value) for name in options)
    _never_echoes(info.value)


@pytest.mark.parametrize(
    ("api_url", "token", "kind", "words"),
    TARGET_ERRORS,
)
def test_a_bad_api_url_or_token_is_refused_without_echoing_the_token(
    api_url: Any, token: Any, kind: type[Exception], words: str
) -> None:
    with pytest.raises(kind) as info:
        tblog.TinybirdLoggingHandler(api_url=api_url, token=token, app_name="app")
    assert type(info.value) is kind and words in str(info.value)
    assert ("api_url" if "api_url" in words else "token") in str(info.value)
    _never_echoes(info.value)
    if isinstance(api_url, str) and "//" in api_url:
        assert api_url.split("//", 1)[1] not in str(info.value)  # the URL is not repeated


def test_the_environment_token_is_not_echoed_either(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TB_TOKEN", SECRET[:12] + "\t" + SECRET[12:])
    with pytest.raises(ValueError, match="token contains whitespace") as info:
        tblog.TinybirdLoggingHandler(api_url=URL, app_name="app")
    _never_echoes(info.value)
    monkeypatch.setenv("TB_TOKEN", SECRET)
    monkeypatch.setenv("TB_API_URL", f"https://api.tinybird.co/v0/events?token={SECRET}")
    with pytest.raises(ValueError, match="api_url must be a plain host URL") as info:
        tblog.TinybirdLoggingHandler(app_name="app")
    _never_echoes(info.value)


def test_an_unknown_option_is_named_with_the_known_ones() -> None:
    # The structlog processor takes **options: options_from names what it does not know.
    with pytest.raises(TypeError) as info:
        TinybirdProcessor(api_url=URL, token=SECRET, app_name="app", batchsize=10, gzipp=False)
    message = str(info.value)
    assert message.startswith("unknown option(s) 'batchsize', 'gzipp'; the options are ")
    assert "batch_size" in message and "max_spool_bytes" in message
    _never_echoes(info.value)
    # ...and it runs Options' own checks on the ones it knows.
    with pytest.raises(ValueError, match="batch_size must be > 0") as info2:
        TinybirdProcessor(api_url=URL, token=SECRET, app_name="app", batch_size=0)
    _never_echoes(info2.value)


def test_dictconfig_refuses_a_bad_option_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a YAML file hands dictConfig: a quoted number is a str.
    monkeypatch.setenv("TB_WRITE_TOKEN", SECRET)
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "tinybird": {
                "class": "tblog.TinybirdLoggingHandler",
                "api_url": URL,
                "app_name": "yaml-app",
                "batch_size": "500",
            }
        },
        "loggers": {"yaml.app": {"handlers": ["tinybird"], "level": "INFO"}},
    }
    root_handlers = list(logging.getLogger().handlers)
    with pytest.raises(ValueError, match="Unable to configure handler 'tinybird'") as info:
        logging.config.dictConfig(config)
    cause = info.value.__cause__
    assert isinstance(cause, TypeError)
    assert str(cause) == "batch_size must be an int, not str"
    _never_echoes(info.value)
    assert logging.getLogger().handlers == root_handlers
    assert logging.getLogger("yaml.app").handlers == []
