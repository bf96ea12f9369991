"""`python -m poller` is the same as the `qbo-poller` console script."""

from __future__ import annotations

import sys

from poller.cli import main

sys.exit(main())
