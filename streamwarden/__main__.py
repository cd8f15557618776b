"""``python -m streamwarden``: the command line of :mod:`streamwarden.cli`."""

import sys

from streamwarden.cli import main

sys.exit(main())
