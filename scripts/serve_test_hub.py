"""Run the tests' Hub-compatible server (tests/hub_server.py) on 127.0.0.1, for the docs build.

    python scripts/serve_test_hub.py                              # prints its URL, serves until killed
    python scripts/serve_test_hub.py -- mkdocs build --strict     # runs the command against it, then stops

The second form sets HF_ENDPOINT (the server), HF_TOKEN=hf_test_token and HF_HUB_CACHE (a
temporary folder) for the command and returns its exit status: the tutorial notebook's
``push_to_hub`` step then runs without internet and without touching the real Hub.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hub_server import HubServer  # noqa: E402


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    with HubServer() as hub:
        if not command:
            print(hub.url, flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token", "HF_HUB_CACHE": cache}
            env.pop("HF_HUB_OFFLINE", None)
            return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
