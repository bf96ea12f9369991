"""``python -m qbo_emulator``."""

import sys

from .cli import main

sys.exit(main())
