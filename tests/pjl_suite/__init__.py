"""python-json-logger's own test suite run against ``TinybirdJsonFormatter`` (issue 17).

``fetch`` downloads the pinned python-json-logger sdist from PyPI into a gitignored cache
and runs its ``tests/`` in a subprocess; ``pjl_swap`` is the pytest plugin that subprocess
loads to put ``TinybirdJsonFormatter`` where the suite imports ``JsonFormatter``.  Nothing
of python-json-logger's is kept in this repository.  ``tests/test_pjl_suite.py`` holds the
result to an explicit list of expected differences.
"""
