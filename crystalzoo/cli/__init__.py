"""The ``crystalzoo`` command: list, info, download, predict, embed, finetune, pretrain, export, push.

Run ``crystalzoo --version``, or ``crystalzoo COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import logging
import sys

from ..errors import CrystalZooError
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command; a crystalzoo error (bad input, bad settings, a usage error) is one
    line on stderr and exit status 2. Only a real bug shows a traceback. crystalzoo's log
    messages (``logging.getLogger("crystalzoo")``, from INFO up) go to stderr as
    ``crystalzoo: …`` lines while the command runs."""
    log = logging.getLogger("crystalzoo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("crystalzoo: %(message)s"))
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # once, also where the program running main() has set up logging
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except CrystalZooError as exc:
        print("crystalzoo: error: " + " ".join(str(exc).split("\n")), file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (predict … | head): nothing more to say
        sys.stderr.close()
        return 0
    except OSError as exc:  # the file system refused a path given (a name too long, no permission): not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"crystalzoo: error: {exc.strerror or exc}{where}: check the paths given", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a run's lock and temporary files are already cleaned up
        print("crystalzoo: interrupted", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
    return 0

