"""Training throughput of the torch-native CGCNN against the DGL path, on the two installs a
user can have, measured in one run on the same machine: forward + backward of the
4-convolution backbone, batch 256, real Materials Project crystals.

- native, default install: ``CrystalGraph`` on the current torch (this interpreter);
- native on torch 2.2.1: the same code in the ``[dgl]`` environment (``--dgl-python``);
- DGL: DGL 2.1.0's message-passing kernels on torch 2.2.1 (``dgl_cgcnn.py``, the layer of
  crystalzoo 0.1.0), in the ``[dgl]`` environment;
- native + ``torch.compile`` on the current torch (compile time reported apart).

Each measurement runs in its own process; the processes take turns, round after round, so
all see the same machine load, and the best round counts.

    python benchmarks/backends.py --dgl-python .venv-dgl/bin/python [--malloc]
    python benchmarks/backends.py --quick        # CI: this interpreter only, tiny, goals not checked

``--malloc`` adds native and DGL with glibc's malloc told to keep freed memory
(``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824``): a batch of 256 crystals makes
tensors of ~40 MB, which glibc otherwise maps afresh, page fault by page fault, every step.

Goals: native on the current torch ≥ 1.0× DGL; native on torch 2.2.1 ≥ 0.9× DGL.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from _goal import finish


def worker(kind: str, n: int, batch_size: int, repeats: int) -> dict:
    """Crystals per second of one kind of training step (run in a child process)."""
    import torch

    from crystalzoo import collate
    from crystalzoo.data import CrystalDataset, bundled_dataset
    from crystalzoo.models import BackboneConfig, CGCNNBackbone

    ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=n, progress=False)
    batches = [collate(ds.graphs[i : i + batch_size], ds.settings) for i in range(0, n, batch_size)]
    atoms = sum(g.total_atoms for g in batches) / n
    torch.manual_seed(0)
    backbone = CGCNNBackbone(BackboneConfig()).train()
    if kind == "dgl":
        from dgl_cgcnn import dgl_backbone

        batches = [g.to_dgl() for g in batches]

        def forward(g):
            return dgl_backbone(backbone, g)
    elif kind == "compiled":
        forward = torch.compile(backbone, dynamic=True)
    else:
        forward = backbone

    def epoch() -> float:
        t0 = time.perf_counter()
        for g in batches:
            backbone.zero_grad()
            forward(g).square().mean().backward()
        return time.perf_counter() - t0

    first = epoch()  # warm-up (compilation for "compiled")
    best = min(epoch() for _ in range(repeats))
    return {"rate": n / best, "first_epoch_s": first, "epoch_s": best, "torch": torch.__version__,
            "atoms": atoms}


#: glibc malloc settings that keep freed memory for reuse instead of returning (and page-faulting
#: in) every large tensor anew: `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824`
KEEP_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def measure(python: str, kind: str, args, env: dict | None = None) -> dict:
    import os

    cmd = [python, str(Path(__file__).resolve()), "--worker", kind, "--n", str(args.n),
           "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent, env={**os.environ, **(env or {})})
    if run.returncode:
        raise SystemExit(f"{kind} with {python} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dgl-python", default=None, help="python of an environment with crystalzoo[dgl]")
    p.add_argument("--n", type=int, default=1536, help="crystals per epoch")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per process (the best counts)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--malloc", action="store_true",
                   help="also measure native and DGL with glibc malloc keeping freed memory (KEEP_MEMORY)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.batch_size, args.repeats)))
        return 0
    if args.quick:
        args.n, args.batch_size, args.repeats, args.rounds, args.no_compile = 64, 32, 1, 1, True
    runs = {"native, current torch (default install)": (sys.executable, "native", None)}
    if args.dgl_python:
        runs["native, torch 2.2.1 ([dgl] environment)"] = (args.dgl_python, "native", None)
        runs["DGL 2.1.0 kernels, torch 2.2.1 ([dgl] environment)"] = (args.dgl_python, "dgl", None)
        if args.malloc:
            runs["native, current torch, malloc keeps memory"] = (sys.executable, "native", KEEP_MEMORY)
            runs["DGL 2.1.0 kernels, torch 2.2.1, malloc keeps memory"] = (args.dgl_python, "dgl", KEEP_MEMORY)
    results: dict[str, list[dict]] = {name: [] for name in runs}
    for r in range(args.rounds):
        for name, (python, kind, env) in runs.items():
            results[name].append(measure(python, kind, args, env))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{res[-1]['rate']:.0f}" for res in results.values()),
              file=sys.stderr, flush=True)
    best = {name: max(res, key=lambda x: x["rate"]) for name, res in results.items()}
    compiled = None
    if not args.no_compile:
        compiled = measure(sys.executable, "compiled", args)
        best["native + torch.compile, current torch"] = compiled
    print(f"{args.n} Materials Project crystals ({best[next(iter(best))]['atoms']:.1f} atoms each on average), "
          f"batch {args.batch_size}, forward + backward of the 4-convolution backbone; best of {args.rounds} "
          f"alternating rounds × {args.repeats} epochs\n")
    print(f"{'':54s} {'torch':>12s} {'crystals/s':>11s} {'rounds':>20s}")
    for name, b in best.items():
        rounds = ", ".join(f"{x['rate']:.0f}" for x in results.get(name, [b]))
        print(f"{name:54s} {b['torch']:>12s} {b['rate']:11.0f} {rounds:>20s}")
    native = best["native, current torch (default install)"]["rate"]
    ok = True
    if args.dgl_python:
        dgl = best["DGL 2.1.0 kernels, torch 2.2.1 ([dgl] environment)"]["rate"]
        old = best["native, torch 2.2.1 ([dgl] environment)"]["rate"]
        print(f"\ndefault install (native, current torch) vs DGL path: {native / dgl:.2f}× (goal ≥ 1.0×)")
        print(f"on torch 2.2.1, native vs DGL kernels: {old / dgl:.2f}× (goal ≥ 0.9×)")
        ok = native / dgl >= 1.0 and old / dgl >= 0.9
        if args.malloc:
            tuned = best["native, current torch, malloc keeps memory"]["rate"]
            tuned_dgl = best["DGL 2.1.0 kernels, torch 2.2.1, malloc keeps memory"]["rate"]
            print(f"with malloc keeping memory: native {tuned / native:.2f}× its default, DGL {tuned_dgl / dgl:.2f}×; "
                  f"native vs DGL {tuned / tuned_dgl:.2f}×")
    else:
        print("\n(no --dgl-python: the DGL path not measured ×)")
        ok = False
    if compiled is not None:
        print(f"torch.compile on the current torch: {compiled['rate'] / native:.2f}× eager, after "
              f"{compiled['first_epoch_s'] - compiled['epoch_s']:.0f} s of compilation (first epoch "
              f"{compiled['first_epoch_s']:.0f} s)")
    print(f"stretch goal ≥ 1,500 crystals/s: best {max(b['rate'] for b in best.values()):.0f}")
    return finish(ok, args.quick)


if __name__ == "__main__":
    sys.exit(main())
