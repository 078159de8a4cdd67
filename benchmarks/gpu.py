"""Prediction and training throughput on a CUDA device against the same code on the CPU, on a
random sample of real Materials Project crystals (graphs built once, beforehand: this times
the model).

    python benchmarks/gpu.py --data ../shared/data/mp_crystals.jsonl.gz   # on a machine with a GPU
    python benchmarks/gpu.py --quick          # CI: tiny; without a GPU, the same code on the CPU

Measured, each the best of ``--rounds``:
- ``predict_arrays`` (the model only) in float32 at batch sizes 64 … 2048 and in bfloat16
  (``model.to(torch.bfloat16)``) at the largest, with the predictions' largest difference
  from float32;
- training steps (forward + backward + Adam) of the ``formation`` model at batch 256 in float32
  and under ``torch.autocast(dtype=torch.bfloat16)``;
- the same in float32 on the CPU (batch 64 for prediction, the CPU default; 256 for training).
It writes one JSON line per measurement to ``--out`` (default: print only) and names the card.
No goal: it reports what a GPU gives (docs/results/gpu.md when run on one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _goal import finish
from inference import sample


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def predict_rate(model, arrays, batch_size: int, device: str, rounds: int) -> tuple[float, np.ndarray]:
    out, best = None, 0.0
    for _ in range(rounds):
        synchronise(device)
        t0 = time.perf_counter()
        out = model.predict_arrays(arrays, batch_size=batch_size)
        synchronise(device)
        best = max(best, len(arrays) / (time.perf_counter() - t0))
    return best, out


def train_rate(model, graphs, device: str, rounds: int, bf16: bool) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    best = 0.0
    crystals = sum(g.n_crystals for g in graphs)
    for _ in range(rounds):
        synchronise(device)
        t0 = time.perf_counter()
        for g in graphs:
            opt.zero_grad()
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                loss = model(g).float().square().mean()
            loss.backward()
            opt.step()
        synchronise(device)
        best = max(best, crystals / (time.perf_counter() - t0))
    model.eval()
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="JSON lines of crystals (default: the bundled band-gap set)")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--device", default="cuda")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None, help="append the measurements here as JSON lines")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.n, args.rounds = 128, 1
        if not torch.cuda.is_available():
            args.device = "cpu"  # CI: the same code, on the CPU
    warnings.filterwarnings("ignore")
    from crystalzoo import build_arrays, collate, load_model
    from crystalzoo.data import bundled_dataset

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: run this on a machine with a GPU (or --device cpu)")
        return 2
    _, structures = sample(Path(args.data) if args.data else bundled_dataset("mp-band-gap"), args.n, 0)
    model = load_model("formation")
    arrays = build_arrays(structures, model.graph_settings, progress=False)
    atoms = np.mean([a.n_atoms for a in arrays])
    card = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    rows = []

    def record(what: str, device: str, rate: float, **extra) -> None:
        rows.append({"what": what, "device": device, "card": card if device == args.device else "CPU",
                     "crystals_per_s": round(rate, 1), "atoms_per_s": round(rate * atoms), **extra})
        print(f"{what:44s} {device:8s} {rate:10.1f} crystals/s {rate * atoms:12.0f} atoms/s"
              + "".join(f"  {k}={v}" for k, v in extra.items()), flush=True)

    print(f"{len(arrays)} Materials Project crystals ({atoms:.1f} atoms on average), formation model; "
          f"{args.device}: {card}\n")
    cpu_rate, reference = predict_rate(model, arrays, 64, "cpu", args.rounds)
    record("predict, float32, batch 64", "cpu", cpu_rate)
    model.to(args.device)
    sizes = [64, 256, 512, 1024, 2048] if not args.quick else [64]
    for size in sizes:
        rate, out = predict_rate(model, arrays, size, args.device, args.rounds)
        record(f"predict, float32, batch {size}", args.device, rate, max_diff=float(np.abs(out - reference).max()))
    half = load_model("formation", device=args.device).to(torch.bfloat16)
    rate, out = predict_rate(half, arrays, sizes[-1], args.device, args.rounds)
    record(f"predict, bfloat16, batch {sizes[-1]}", args.device, rate, max_diff=float(np.abs(out - reference).max()))

    for device in dict.fromkeys(["cpu", args.device]):
        trained = load_model("formation", device=device)
        graphs = [collate(arrays[i : i + 256], model.graph_settings).to(device) for i in range(0, len(arrays), 256)]
        record("train step, float32, batch 256", device, train_rate(trained, graphs, device, args.rounds, False))
        if device != "cpu":
            record("train step, bf16 autocast, batch 256", device, train_rate(trained, graphs, device, args.rounds,
                                                                           True))
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return finish(True, args.quick)


if __name__ == "__main__":
    sys.exit(main())
