"""tblog's benchmarks: ratios over ``logging.NullHandler``, measured side by side in one run.

Run with ``make bench`` (``python -m benchmarks``). Nothing here runs in the test suite except
a tiny smoke configuration (``tests/test_benchmarks_smoke.py``) that keeps the harness working.
"""
