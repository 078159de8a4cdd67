"""``python -m crystalzoo``: the ``crystalzoo`` command."""

import sys

from .cli import main

sys.exit(main())
