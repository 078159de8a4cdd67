"""``python -m crystalzoo.cli``: the ``crystalzoo`` command."""

import sys

from . import main

sys.exit(main())
