"""``python -m streamwarden``: the same command as ``streamwarden``."""

import sys

from streamwarden.cli import main

sys.exit(main())
