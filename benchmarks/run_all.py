"""Run every performance benchmark one after the other and write their output, goals and
the machine they ran on to docs/results/performance.md (graph building also gets its own
docs/results/graph_building.md).

    python benchmarks/run_all.py --data ../shared/data/mp_crystals.jsonl.gz --dgl-python .venv-dgl/bin/python

(run from the default install, the README's .venv; .venv-dgl holds crystalzoo[dgl], as CI makes it).

Run it on an otherwise idle machine: each script measures its baseline in the same run, but
other work on the machine still shifts the ratios. Exits non-zero when a goal is missed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# script, extra arguments (DATA is replaced by --data), goal in words
BENCHMARKS = [
    ("backends.py", ["--dgl-python", "DGL_PYTHON", "--malloc"],
     "native on the current torch ≥ 1.0× the DGL path (torch 2.2.1); native on torch 2.2.1 ≥ 0.9× DGL"),
    ("training_throughput.py", [], "≥ 2× the plain layer (concatenation per edge, index_add_) and ≥ 5× the original "
                                   "CGCNN model (cgcnn2's CrystalGraphConvNet)"),
    ("inference.py", ["--data", "DATA"], "on a random sample of the data, predict from structures ≥ 1,500 crystals/s "
                                         "and ≥ 25× the original CGCNN code; graph building ≥ 50× its featurisation; "
                                         "from CIF files as crystalzoo predict reads them ≥ 3× cgcnn2's loader; more "
                                         "processes never slower than one"),
    ("finetune_frozen.py", [], "an epoch at freeze=3 ≥ 2× faster than at freeze=0"),
    ("scaling.py", ["--full-data", "DATA"], "time linear in atoms (fitted exponent ≤ 1.15); all 34,745 crystals "
                                            "built and cached in < 4 GB"),
    ("graph_building.py", ["--n", "2000", "--budget", "20", "--data", "DATA"],
     "≥ 5× the pure-Python neighbour loop and ≥ 30× the original CGCNN loader"),
]


def _machine() -> str:
    import numpy
    import torch

    mem = "?"
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.0f} GB"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {mem} memory, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {numpy.__version__}; {datetime.date.today().isoformat()}")


def _sections(page: Path) -> dict[str, str]:
    """The ``## name`` sections of an existing performance page, by name (for ``--only``)."""
    if not page.exists():
        return {}
    parts = page.read_text().split("\n## ")[1:]
    return {part.split("\n", 1)[0]: "## " + part.rstrip("\n") + "\n" for part in parts}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_crystals.jsonl.gz"),
                   help="the Materials Project JSON lines file")
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--dgl-python", default=str(ROOT / ".venv-dgl" / "bin" / "python"),
                   help="python of an environment with crystalzoo[dgl] (for backends.py)")
    p.add_argument("--only", nargs="+", default=None, metavar="SCRIPT",
                   help="run these scripts only (e.g. inference.py) and replace their sections of the page, keeping "
                        "the others as they are")
    args = p.parse_args()
    out = Path(args.out)
    machine = _machine()
    sections, failed = [], []
    kept = _sections(out / "performance.md") if args.only else {}
    for script, extra, goal in BENCHMARKS:
        if args.only and script not in args.only:
            name = script.removesuffix(".py").replace("_", " ")
            if name in kept:
                sections.append(kept[name])
                failed += [script] if "— **missed**" in kept[name] or "— **failed" in kept[name] else []
            continue
        argv = [{"DATA": args.data, "DGL_PYTHON": args.dgl_python}.get(a, a) for a in extra]
        shown = " ".join(["python", f"benchmarks/{script}",
                          *[{args.data: "../shared/data/mp_crystals.jsonl.gz", args.dgl_python: ".venv-dgl/bin/python"}
                            .get(a, a) for a in argv]])
        print(f"$ {shown}", flush=True)
        run = subprocess.run([sys.executable, str(HERE / script), *argv], capture_output=True, text=True, cwd=ROOT)
        text = run.stdout.strip()
        print(text + ("\n" + run.stderr[-2000:] if run.returncode not in (0, 1) else ""), flush=True)
        status = {0: "met", 1: "**missed**"}.get(run.returncode, f"**failed (exit {run.returncode})**")
        if run.returncode:
            failed.append(script)
        name = script.removesuffix(".py").replace("_", " ")
        sections.append(f"## {name}\n\nCommand: `{shown}` — goal: {goal} — {status}\n\n```\n{text}\n```\n")
        if script == "graph_building.py":
            (out / "graph_building.md").write_text(
                "# Graph building throughput\n\n"
                f"Command: `{shown}` (through `benchmarks/run_all.py`)\n\nMachine: {machine}. Baselines are "
                "measured in the same run, on the same crystals (each slow baseline stops after 20 s). crystalzoo "
                "searches a small sphere first (about 3 × max_neighbors atoms at the crystal's density) and the "
                "whole radius only for atoms without enough neighbours in it, with the same graphs as a search of "
                "the whole radius (tests/graphs/test_building.py).\n\n"
                f"```\n{text}\n```\n")
    header = ("# Performance\n\n"
              "Written by `python benchmarks/run_all.py`: the latest output of the scripts in `benchmarks/`, run one "
              f"after the other on an otherwise idle machine: {machine}. Each script measures its baseline in the "
              "same run (alternating where it can) and exits non-zero when it misses its goal; CI runs every script "
              "with `--quick` (`tests/test_performance.py`)."
              + (f" The sections of {', '.join(args.only)} were run again later, alone "
                 f"(`python benchmarks/run_all.py --only {' '.join(args.only)}`)." if args.only else "")
              + "\n\nGraph building in detail: [graph_building.md](graph_building.md).\n")
    (out / "performance.md").write_text(header + "\n" + "\n".join(sections))
    print(f"\nwrote {out / 'performance.md'}" + (f"; goals missed: {failed}" if failed else "; all goals met"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
