"""``python -m tblog``: the ``tblog`` command line (see ``tblog.cli``)."""

from __future__ import annotations

import sys

from tblog.cli import main

if __name__ == "__main__":
    sys.exit(main())
