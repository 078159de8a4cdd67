"""Run every Python block of README.md and docs/*.md, as a user would paste them.

The blocks of one page run in order in one namespace, in a fresh empty folder outside the
repository; each page starts anew. The Hub blocks talk to the project's local Hub-compatible
server (tests/hub_server.py, loaded from its file) through ``HF_ENDPOINT``. A block that
imports an optional package that is not installed (dgl, onnxruntime) is reported as skipped,
with the extra that brings it; every other failure fails the run.

    python scripts/run_doc_examples.py                    # every page
    python scripts/run_doc_examples.py docs/graphs.md     # some pages
    python scripts/run_doc_examples.py --installed        # and insist on an installed crystalzoo (a wheel)

CI runs it with ``--installed`` in a fresh venv holding the built wheel (scripts/check_install.sh).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: optional packages a block may need, and the extra that installs them
OPTIONAL = {"dgl": "[dgl]", "onnxruntime": "[export]", "onnx": "[export]", "sklearn": "[sklearn]", "ase": "[ase]"}
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def missing_extra(code: str) -> str | None:
    """The extra a block needs whose package is not installed (None: it can run)."""
    for name, extra in OPTIONAL.items():
        if re.search(rf"^\s*(import|from) {name}\b", code, re.M) and importlib.util.find_spec(name) is None:
            return f"{name} is not installed (crystalzoo{extra})"
    return None


def run_page(page: Path, workdir: Path) -> tuple[int, int, list[str]]:
    """(blocks run, blocks skipped, failures) of one page, run in ``workdir``."""
    namespace: dict = {"__name__": "__doc_example__"}
    ran, skipped, failures = 0, 0, []
    here = os.getcwd()
    os.chdir(workdir)
    try:
        for i, code in enumerate(blocks(page), 1):
            why = missing_extra(code)
            if why:
                print(f"  {page.name} block {i}: skipped, {why}", flush=True)
                skipped += 1
                continue
            t0 = time.perf_counter()
            try:
                exec(compile(code, f"{page.name} block {i}", "exec"), namespace)
            except Exception:
                failures.append(f"{page.name} block {i}:\n{traceback.format_exc(limit=-3)}")
                print(f"  {page.name} block {i}: FAILED", flush=True)
                break  # later blocks of the page build on this one
            ran += 1
            print(f"  {page.name} block {i}: ok ({time.perf_counter() - t0:.1f} s)", flush=True)
    finally:
        os.chdir(here)
    return ran, skipped, failures


def _hub_server():
    """The project's test Hub server, loaded from its file (not as a package: ``import
    crystalzoo`` must find the installed one)."""
    spec = importlib.util.spec_from_file_location("hub_server", ROOT / "tests" / "hub_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HubServer()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pages", nargs="*", type=Path, help="default: README.md and docs/*.md")
    p.add_argument("--installed", action="store_true", help="fail unless crystalzoo is imported from an installed "
                   "package (site-packages), not from this repository")
    args = p.parse_args()
    pages = args.pages or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    sys.path = [s for s in sys.path if Path(s or ".").resolve() != ROOT]  # never the repo's own copy
    import crystalzoo

    where = Path(crystalzoo.__file__).resolve()
    print(f"crystalzoo {crystalzoo.__version__} from {where.parent}")
    if args.installed and ROOT in where.parents:
        print(f"FAILED: crystalzoo is imported from the repository ({where}), not from an install", file=sys.stderr)
        return 1
    total_ran, total_skipped, failures = 0, 0, []
    with tempfile.TemporaryDirectory() as tmp, _hub_server() as server:
        os.environ.update(HF_ENDPOINT=server.url, HF_TOKEN="hf_docs_token", HF_HUB_CACHE=str(Path(tmp) / "hf-cache"))
        os.environ.pop("HF_HUB_OFFLINE", None)
        for page in pages:
            page = page.resolve()
            if not blocks(page):
                continue
            print(f"{page.relative_to(ROOT)}: {len(blocks(page))} blocks", flush=True)
            workdir = Path(tmp) / page.stem
            workdir.mkdir()
            ran, skipped, failed = run_page(page, workdir)
            total_ran, total_skipped, failures = total_ran + ran, total_skipped + skipped, failures + failed
    for f in failures:
        print(f"\n{f}", file=sys.stderr)
    print(f"\n{total_ran} blocks ran, {total_skipped} skipped, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
