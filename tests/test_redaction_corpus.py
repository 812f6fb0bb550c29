"""The default redaction measured on a corpus: every secret goes, every ordinary line stays.

``tests/data/redaction_corpus.jsonl`` holds one sample a line:

* ``{"redact": text, "secret": s}``: ``text`` must change and ``s`` must be gone from it;
* ``{"keep": text}``: ``text`` must come out unchanged (a false positive otherwise);
* ``{"secret_key": k}`` / ``{"plain_key": k}``: a dict key whose value is / is not hidden.

Both rates are printed (``pytest -s``); the test wants 100% and 0%.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tblog._event.redact import REDACTED, Redactor

CORPUS = Path(__file__).resolve().parent / "data" / "redaction_corpus.jsonl"


def _samples() -> list[dict[str, Any]]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_the_corpus_is_scrubbed_completely_and_without_false_positives() -> None:
    samples = _samples()
    redactor = Redactor()
    missed: list[str] = []
    changed: list[str] = []
    counts = {"redact": 0, "keep": 0, "secret_key": 0, "plain_key": 0}
    for sample in samples:
        if "redact" in sample:
            counts["redact"] += 1
            out = redactor.text(sample["redact"])
            if out == sample["redact"] or sample["secret"] in out or REDACTED not in out:
                missed.append(f"{sample['redact']!r} -> {out!r}")
        elif "keep" in sample:
            counts["keep"] += 1
            out = redactor.text(sample["keep"])
            if out != sample["keep"]:
                changed.append(f"{sample['keep']!r} -> {out!r}")
        elif "secret_key" in sample:
            counts["secret_key"] += 1
            key = sample["secret_key"]
            if redactor.mapping({key: "v-12345678"}) != {key: REDACTED}:
                missed.append(f"key {key!r}")
        else:
            counts["plain_key"] += 1
            key = sample["plain_key"]
            if redactor.mapping({key: "v-12345678"}) != {key: "v-12345678"}:
                changed.append(f"key {key!r}")
    should_redact = counts["redact"] + counts["secret_key"]
    should_keep = counts["keep"] + counts["plain_key"]
    print(
        f"\nredaction corpus: {should_redact - len(missed)}/{should_redact} secrets scrubbed "
        f"({100 * (should_redact - len(missed)) / should_redact:.1f}%), "
        f"{len(changed)}/{should_keep} ordinary samples changed "
        f"({100 * len(changed) / should_keep:.1f}% false positives)"
    )
    assert counts["redact"] >= 200 and counts["keep"] >= 100  # the corpus is not a token one
    assert counts["secret_key"] >= 50 and counts["plain_key"] >= 30
    assert missed == []
    assert changed == []


def test_key_matching_ignores_case_camel_case_and_separators() -> None:
    redactor = Redactor()
    for key in ("userPassword", "user-password", "USER_PASSWORD", "user.password", "UserPassword"):
        assert redactor.secret_key(key), key
    for key in ("accessToken", "access-token", "ACCESS_TOKEN", "AccessToken"):
        assert redactor.secret_key(key), key


def test_user_keys_still_match_as_first_or_last_words() -> None:
    redactor = Redactor(keys=["ssn", "accountNumber"])
    assert redactor.secret_key("ssn_last4")
    assert redactor.secret_key("customer_account_number")
    assert redactor.secret_key("account-number")
    assert not redactor.secret_key("accounts")


#: sentry-python's ``DEFAULT_DENYLIST`` (sentry_sdk/scrubber.py, with its PII list).
SENTRY_DENYLIST = (
    "password", "passwd", "secret", "api_key", "apikey", "auth", "credentials", "mysql_pwd",
    "privatekey", "private_key", "token", "session", "csrftoken", "sessionid", "x_csrftoken",
    "set_cookie", "cookie", "authorization", "x_api_key", "aiohttp_session", "connect.sid",
    "csrf_token", "csrf", "_csrf", "_csrf_token", "PHPSESSID", "_session", "symfony",
    "user_session", "_xsrf", "XSRF-TOKEN", "ip_address", "remote_addr", "x_forwarded_for",
    "x_real_ip",
)  # fmt: skip
#: Keys matching each of Logfire's ``DEFAULT_PATTERNS`` (logfire/_internal/scrubbing.py).
LOGFIRE_KEYS = (
    "password", "passwd", "mysql_pwd", "secret", "auth", "credential", "private_key",
    "private.key", "private-key", "api_key", "api.key", "apiKey", "session", "cookie",
    "social_security", "social-security-number", "credit_card", "credit.card",
    "logfire_token", "LOGFIRE_TOKEN", "csrf", "xsrf", "jwt", "ssn",
)  # fmt: skip


def test_sentry_and_logfire_default_names_are_all_secret_keys() -> None:
    redactor = Redactor()
    assert [k for k in (*SENTRY_DENYLIST, *LOGFIRE_KEYS) if not redactor.secret_key(k)] == []
    # Logfire also scrubs its own write tokens wherever they appear
    token = "pylf_v1_us_" + "0123456789abcdefghijklmnopqrstuv"
    assert redactor.text(f"LOGFIRE={token}") == f"LOGFIRE={REDACTED}"
    assert redactor.text(f"using {token}") == f"using {REDACTED}"


def test_the_batch_screen_flags_every_text_the_patterns_change() -> None:
    # The sender screens a batch of messages at once and scrubs only the flagged ones: a
    # text that text() would change must never go unflagged, wherever it sits in a batch.
    redactor = Redactor()
    samples = [s for s in _samples() if "redact" in s or "keep" in s]
    corpus: list[str] = [str(s.get("redact") or s["keep"]) for s in samples]
    ordinary = ["user 42 logged in", "GET /health 200", "é" * 3, "İstanbul office", "x"]
    batch = [t for pair in zip(corpus, ordinary * len(corpus)) for t in pair]
    for texts in (batch, corpus, [*ordinary, corpus[0]], [*ordinary, "İ" + corpus[1]]):
        flags = redactor.screen(texts)
        changed = [t for t in texts if redactor.text(t) != t]
        if flags is None:
            assert changed == []
        else:
            assert [t for t, f in zip(texts, flags) if not f and t in changed] == []
    assert redactor.screen(ordinary) is None


#: Adversarial texts: each pattern's prefix (or a near miss of it) repeated to 100 KB.
ADVERSARIAL_PREFIXES = (
    "sk-", "sk-a", "Bearer ", "bearer a", "Basic ", "eyJ", "eyJ-", "p.eyJ", "AKIA", "AKIA-",
    "://a:", "a://a:", "a://", "-----BEGIN ", "-----BEGIN PRIVATE KEY-----", "password=",
    "password: ", "\"password\": \"", "token_type=bearer ", "session: ", "AccountKey=",
    "1", "3 ", "4-", "ghp_", "ghp-", "github_pat_", "xoxb-", "sk_live_", "AIza", "AIza-",
    "pylf_v1_", "npm_", "glpat-", "hf_", "SG.", "SG.a-", "hooks.slack.com/services/T",
    "private_key_id=", "A", "aA", "=", ":",
)  # fmt: skip


def test_no_pattern_backtracks_badly_on_adversarial_text() -> None:
    # The patterns run on the application's logging path over attacker-controlled text
    # (request bodies, headers, user input): every one must stay linear.
    redactor = Redactor()
    size = 100_000
    slow: list[str] = []
    for prefix in ADVERSARIAL_PREFIXES:
        text = (prefix * (size // len(prefix) + 1))[:size]
        for sample in (text, text + "@"):
            started = time.perf_counter()
            redactor.text(sample)
            elapsed = time.perf_counter() - started
            if elapsed > 5.0:  # the quadratic patterns took 14 s to minutes; linear ones 0.1 s
                slow.append(f"{prefix!r}: {elapsed:.2f} s")
    # keys are attacker-controlled too (a JSON body's): camelCase splitting must be linear
    for key in ("A" * size, "aA" * (size // 2), "Ab" * (size // 2)):
        started = time.perf_counter()
        redactor.mapping({key: "v"})
        elapsed = time.perf_counter() - started
        if elapsed > 5.0:
            slow.append(f"key {key[:4]!r}...: {elapsed:.2f} s")
    assert slow == []
