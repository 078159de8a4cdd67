"""Pretrain the project's backbones on real Materials Project data and register them.

    python scripts/pretrain_backbones.py --data ../shared/data/mp_crystals.jsonl.gz [--epochs 100 --schedule cosine]
    python scripts/pretrain_backbones.py --only combined --epochs 50 --threads 1

On the same 7,042 crystals (the paper's size: every crystal with bulk and shear moduli and a
formation energy, 5,798, plus crystals with a total energy drawn with seed 0), split
80/10/10 with seed 0 (the paper's Table 3 control):

- ``combined-7042``: multi-task — formation energy, total energy per atom, log10 bulk and
  log10 shear modulus (elasticity);
- ``formation-7042``: formation energy alone;
- ``attention-formation``: formation energy alone with the attention convolution.

On every crystal of the data set with a formation energy (34,738 of 34,745; band gaps are
left out, so that band-gap transfer stays an honest test), split 80/10/10 with seed 0:

- ``combined``: the same four targets, each crystal contributing the labels it has;
- ``schnet-combined``: the same targets and crystals for the SchNet-style family
  (``crystalzoo.models.schnet``, 4 interaction blocks), the zoo's first backbone of another family.

Distillation (issue 31), on the same crystals and split:

- ``chgnet-distilled``: a CGCNN trained to reproduce the 64 crystal features of CHGNet 0.4.2 (its
  wheel's pretrained weights, BSD-3-Clause; ``pip install chgnet torch==2.13.0``), each feature
  standardised, MSE. The teacher's features are computed once per crystal and cached by mp_id
  (``benchmarks/small_data.py``'s ``features``, about 10 crystals/s on one core). Trained only
  (``--train-only``): its evaluation and registration are not written yet.

Each run checkpoints every epoch under ``--out`` and resumes when run again. Finished runs
are bundled and registered in the manifest with their validation and test MAE.
``docs/results/pretraining.md`` compares the 7,042-crystal backbones with the single-property
originals on the same test crystals, and the attention convolution with the gated one;
``docs/results/pretraining_full.md`` does the same for ``combined``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crystalzoo.losses import LOSSES  # noqa: E402 (no torch import: --help stays fast)

SIZE = 7042
FOUR = ["formation_energy_per_atom", "energy_per_atom", "log10:k_vrh", "log10:g_vrh"]
#: name: (targets, convolution, description, crystals: "7042" or "all")
RUNS = {
    "combined-7042": (FOUR, "gated", "Multi-task: formation energy, total energy per atom, log10 bulk and shear "
                      "modulus, on 7,042 crystals (the paper's Table 3 control)", "7042"),
    "formation-7042": (["formation_energy_per_atom"], "gated",
                       "Formation energy per atom, trained on the same 7,042 crystals as `combined-7042` (Table 3 "
                       "control)", "7042"),
    "attention-formation": (["formation_energy_per_atom"], "attention",
                            "Formation energy per atom, attention convolution (4 heads), same 7,042 crystals", "7042"),
    "combined": (FOUR, "gated", "Multi-task: formation energy, total energy per atom, log10 bulk and shear modulus, "
                 "on every crystal of the project's Materials Project data with a formation energy (34,738; band gaps left "
                 "out)", "all"),
    "schnet-combined": (FOUR, "schnet", "SchNet-style network (4 interaction blocks), multi-task: formation energy, "
                        "total energy per atom, log10 bulk and shear modulus, on the same 34,738 crystals as "
                        "`combined` (band gaps left out)", "all"),
}
#: the teacher's features, the targets of a distilled student: CHGNet's 64 crystal features
TEACHER = [f"chgnet_{i}" for i in range(64)]
RUNS["chgnet-distilled"] = (TEACHER, "gated", "Distilled from CHGNet 0.4.2: trained to reproduce its 64 crystal "
                            "features (standardised, MSE) on the same 34,738 crystals as `combined`", "all")
#: the shape of a backbone whose "convolution" names another family
FAMILIES = {"schnet": {"name": "schnet", "n_interactions": 4}}
DEFAULT_OUT = (ROOT / "runs" / "pretrain").resolve()
ORIGINAL_FOR = {"formation_energy_per_atom": "formation", "energy_per_atom": "total-energy",
                "log10_k_vrh": "bulk", "log10_g_vrh": "shear"}
UNITS = {"formation_energy_per_atom": "eV/atom", "energy_per_atom": "eV/atom", "log10_k_vrh": "log10(GPa)",
         "log10_g_vrh": "log10(GPa)"}
MP_CITATION = ("T. Xie and J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018) (CGCNN); S. Deng, J. Park, A. Sy, "
               "Transfer Learning and Representations for Material Properties (combined backbone, attention); "
               "data: A. Jain et al., APL Materials 1, 011002 (2013); M. de Jong et al., Sci. Data 2, 150009 (2015)")
SCHNET_CITATION = ("K. T. Schütt et al., SchNet: a continuous-filter convolutional neural network for modeling "
                   "quantum interactions, NeurIPS 2017; data: A. Jain et al., APL Materials 1, 011002 (2013); "
                   "M. de Jong et al., Sci. Data 2, 150009 (2015)")


def select(path: Path, crystals: str) -> list[dict]:
    """The crystals of a run: ``"all"`` with a formation energy, or the paper-sized ``"7042"``."""
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    if crystals == "all":
        return sorted((r for r in rows if r["formation_energy_per_atom"] is not None), key=lambda r: r["mp_id"])
    elastic = [r for r in rows if r["k_vrh"] is not None and r["g_vrh"] is not None
               and r["formation_energy_per_atom"] is not None]
    taken = {r["mp_id"] for r in elastic}
    others = [r for r in rows if r["mp_id"] not in taken and r["energy_per_atom"] is not None
              and r["formation_energy_per_atom"] is not None]
    extra = np.random.default_rng(0).choice(len(others), SIZE - len(elastic), replace=False)
    chosen = elastic + [others[i] for i in np.sort(extra)]
    return sorted(chosen, key=lambda r: r["mp_id"])


TEACHER_NAME = "CHGNet 0.4.2 (pip install chgnet; its 64 crystal features, CHGNet.predict_structure(task='e'))"
#: what the teacher was trained on (MPtrj): the leakage rule keeps its student off these targets and
#: what they give (a formation energy is the total energy less the elements' references)
TEACHER_TARGETS = ["energy_per_atom", "forces", "stress", "magmom"]
CHGNET_CITATION = ("B. Deng et al., CHGNet as a pretrained universal neural network potential for charge-informed "
                   "atomistic modelling, Nat. Mach. Intell. 5, 1031 (2023) (teacher); T. Xie and J. C. Grossman, Phys. "
                   "Rev. Lett. 120, 145301 (2018) (CGCNN); data: A. Jain et al., APL Materials 1, 011002 (2013)")


def fidelity(out: Path, ds) -> dict[str, float]:
    """How well a distilled student reproduces its teacher's features on the run's test split
    (the split ``pretrain`` made: 80/10/10, seed 0): R² of each feature, averaged (``r2``), and
    the median over crystals of the cosine between the two 64-vectors, both less the teacher's
    mean vector (``cosine``; uncentred, the shared mean made it 0.995 whatever the crystal)."""
    from crystalzoo import load_model

    test = ds.split(0.8, 0.1, 0.1, seed=0)[2]
    got = np.asarray(load_model(out).predict(test), dtype=np.float64)
    want = test.labels[:, [test.targets.index(t) for t in TEACHER]].astype(np.float64)
    r2 = 1 - ((got - want) ** 2).sum(0) / ((want - want.mean(0)) ** 2).sum(0)
    got, want = got - want.mean(0), want - want.mean(0)
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    return {"r2": float(r2.mean()), "cosine": float(np.median(cosine))}


def with_teacher(rows: list[dict]) -> list[dict]:
    """``rows`` with the teacher's features as columns ``chgnet_0`` … ``chgnet_63``."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from small_data import features

    from crystalzoo.data.cache import default_cache_dir

    values = features("chgnet", rows, default_cache_dir() / "benchmark-features")
    return [{**r, **dict(zip(TEACHER, v.tolist()))} for r, v in zip(rows, values)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_crystals.jsonl.gz"))
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="cosine")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--only", nargs="*", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--train-only", action="store_true", help="train (or resume) only: register and report nothing")
    p.add_argument("--reference", choices=["composition"], default=None,
                   help="per-element reference values under the outputs (crystalzoo's pretrain(reference=...))")
    p.add_argument("--loss", choices=LOSSES, default="mse", help="the training loss (TrainConfig.loss)")
    args = p.parse_args()

    import pandas as pd
    import torch

    from crystalzoo.data import CrystalDataset
    from crystalzoo import list_backbones, pretrain
    from crystalzoo.maintainer import register_weights, rename_registered

    torch.set_num_threads(args.threads)
    report: dict[str, dict] = {}
    data: dict[str, tuple] = {}
    for name in args.only:
        targets, conv, description, crystals = RUNS[name]
        if crystals not in data:
            rows = select(Path(args.data), crystals)
            teacher = crystals == "all" and "chgnet-distilled" in args.only
            if teacher:
                rows = with_teacher(rows)
            df = pd.DataFrame(rows)
            ds = CrystalDataset.from_dataframe(df, targets=sorted(FOUR) + (TEACHER if teacher else []),
                                               id_column="mp_id", n_jobs=args.threads)
            n_elastic = sum(r["k_vrh"] is not None and r["g_vrh"] is not None for r in rows)
            print(f"{len(ds)} crystals ({n_elastic} with elastic moduli)", flush=True)
            data[crystals] = ds, n_elastic
        ds, n_elastic = data[crystals]
        out = Path(args.out) / name
        done = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else None
        if done is not None:  # a finished run is reused only with the settings it was trained with
            head = json.loads((out / "config.json").read_text())["head"]  # older runs did not record it in metrics
            had = {"--reference": "composition" if head.get("composition_reference") else None,
                   "--loss": done.get("loss", "mse")}
            asked = {"--reference": args.reference, "--loss": args.loss}
            how = [f"with {o} {had[o]}" if had[o] else f"without {o}" for o in had if had[o] != asked[o]]
            if how:
                sys.exit(f"{out} holds a run trained {' and '.join(how)}: run {' and '.join(how)}, or give another "
                         "--out")
        if done is not None and done["epochs"] >= args.epochs:
            metrics = done
        else:  # new, interrupted, or asked for more epochs: resumes from the last checkpoint
            family = {"architecture": FAMILIES[conv]} if conv in FAMILIES else {"conv": conv}
            r = pretrain(ds, targets, **family, train_size=0.8, val_size=0.1, test_size=0.1, seed=0,
                         out_dir=out, resume=True, epochs=args.epochs, schedule=args.schedule, reference=args.reference,
                         loss=args.loss)
            metrics = r.metrics
        report[name] = metrics
        if args.train_only:
            continue
        if targets == TEACHER:
            # no intervals for a student's outputs (the teacher's features): its calibration, 64 targets'
            # scores, would be most of the manifest
            config = json.loads((out / "config.json").read_text())
            if config.pop("calibration", None) is not None:
                (out / "config.json").write_text(json.dumps(config, indent=1))
            metrics["fidelity"] = fidelity(out, ds)
            register_weights(
                name, out, description=description,
                training_data={"dataset": "Materials Project (project data set, mp_crystals.jsonl.gz)",
                               "selection": f"all {len(ds):,} crystals of the data set with a formation energy (no "
                                            "labels used); scripts/pretrain_backbones.py",
                               "teacher": TEACHER_NAME, "teacher_targets": TEACHER_TARGETS, **metrics["sizes"], "epochs": metrics["epochs"],
                               "best_epoch": metrics["best_epoch"], "lr_schedule": f"Adam 1e-3, {args.schedule}",
                               "loss": f"{args.loss} on the 64 standardised teacher features"},
                metrics=[{"name": k, "target": "CHGNet crystal features", "value": round(v, 4), "units": "",
                          "dataset": f"Materials Project, {len(ds):,} crystals", "split": "test"}
                         for k, v in metrics["fidelity"].items()],
                source="distilled by crystalzoo, scripts/pretrain_backbones.py",
                license="MIT (weights: crystalzoo); teacher CHGNet 0.4.2: Modified BSD (LBNL)",
                citation=CHGNET_CITATION, units=[""] * len(TEACHER))
            print(f"registered {name}: fidelity on the test split {metrics['fidelity']}", flush=True)
            continue
        names = metrics["targets"]
        selection = (f"all {len(ds):,} crystals of the data set with a formation energy ({n_elastic:,} with bulk "
                     "and shear moduli; band gaps not used)" if crystals == "all" else
                     f"all {n_elastic:,} crystals with bulk and shear moduli + {len(ds) - n_elastic:,} with a total "
                     "energy (seed 0)")
        if name == "combined" and "combined-7042" not in list_backbones():  # free the name for the full-data run
            rename_registered("combined", "combined-7042", description=RUNS["combined-7042"][2])
        register_weights(
            name, out, description=description,
            training_data={"dataset": "Materials Project (project data set, mp_crystals.jsonl.gz)",
                           "selection": f"{selection}; scripts/pretrain_backbones.py",
                           **metrics["sizes"], "epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
                           "lr_schedule": f"Adam 1e-3, {args.schedule}", "loss": args.loss,
                           **({"reference": f"{args.reference} (per-element reference values, fitted on the training "
                                            "split)"} if args.reference else {})},
            metrics=[{"name": "mae", "target": t, "value": round(metrics[split][f"mae_{t}"], 4), "units": UNITS[t],
                      "dataset": f"Materials Project, {len(ds):,} crystals", "split": split_name}
                     for split, split_name in (("val", "validation"), ("test", "test")) for t in names],
            source="pretrained by crystalzoo, scripts/pretrain_backbones.py", license="MIT (weights: crystalzoo)",
            citation=SCHNET_CITATION if conv == "schnet" else MP_CITATION, units=[UNITS[t] for t in names])
        print(f"registered {name}: test {metrics['test']}", flush=True)
    if args.train_only:
        return
    for crystals, page in (("7042", "pretraining.md"), ("all", "pretraining_full.md")):
        # the page of the CGCNN backbones (schnet-combined has its own, below)
        if crystals in data and any(RUNS[n][3] == crystals and RUNS[n][1] not in FAMILIES and RUNS[n][0] != TEACHER
                                    for n in report):
            lines = _report(crystals, report, *data[crystals], args)
            (ROOT / "docs" / "results" / page).write_text("\n".join(lines))
            print("\n".join(lines))
    if "schnet-combined" in report:
        lines = _report_family("schnet-combined", report["schnet-combined"], *data["all"], args)
        (ROOT / "docs" / "results" / "pretraining_schnet.md").write_text("\n".join(lines))
        print("\n".join(lines))
    if "chgnet-distilled" in report:
        lines = _report_distilled("chgnet-distilled", report["chgnet-distilled"], data["all"][0], args)
        (ROOT / "docs" / "results" / "distillation.md").write_text("\n".join(lines))
        print("\n".join(lines))


def _report_distilled(name: str, m: dict, ds, args, n: int = 200) -> list[str]:
    """The student against its teacher: fidelity on the test split, and the time both take for
    the same ``n`` test crystals (pymatgen structures, one process, ``--threads``)."""
    import time

    from chgnet.model import CHGNet
    from pymatgen.core import Structure

    from crystalzoo import load_model

    test = ds.split(0.8, 0.1, 0.1, seed=0)[2]
    cifs = {r["mp_id"]: r["cif"] for r in select(Path(args.data), "all")}
    structures = [Structure.from_str(cifs[i], "cif") for i in test.ids[:n]]
    student, teacher = load_model(name), CHGNet.load(verbose=False)
    student.predict(structures[:8])
    teacher.predict_structure(structures[:8], task="e", return_crystal_feas=True, batch_size=8)
    t0 = time.perf_counter()
    student.predict(structures)
    t1 = time.perf_counter()
    teacher.predict_structure(structures, task="e", return_crystal_feas=True, batch_size=8)
    t2 = time.perf_counter()
    fid = m["fidelity"]
    return [f"# `{name}`: CHGNet distilled into a CGCNN", "",
            f"Command: `python scripts/pretrain_backbones.py --only {name} --epochs {m['epochs']} --schedule "
            f"{args.schedule} --threads {args.threads}`", "",
            f"The teacher: {TEACHER_NAME}. The student: a CGCNN of the default shape ({m['num_params']:,} "
            f"parameters) trained to reproduce the teacher's 64 crystal features, each standardised, {args.loss} "
            f"loss, on the {len(ds):,} crystals of `combined` (80/10/10, seed 0; no labels used); best epoch "
            f"{m['best_epoch']} of {m['epochs']}, {m['train_seconds'] / 3600:.1f} h of wall time on the 2-core "
            "machine beside other jobs.", "",
            f"| on the {len(test):,} test crystals | |", "|---|---|",
            f"| R² of each teacher feature, mean over the 64 | {fid['r2']:.3f} |",
            f"| cosine of student and teacher vectors less the teacher's mean, median over crystals | "
            f"{fid['cosine']:.3f} |", "",
            f"Speed on the first {len(structures)} test crystals (pymatgen structures, one process, "
            f"{args.threads} thread(s), measured in the same run):", "",
            "| | crystals/s |", "|---|---|",
            f"| student: `load_model('{name}').predict` | {len(structures) / (t1 - t0):,.0f} |",
            f"| teacher: `CHGNet.predict_structure(task='e', return_crystal_feas=True)` | "
            f"{len(structures) / (t2 - t1):,.1f} |",
            f"| student ÷ teacher | {(t2 - t1) / (t1 - t0):,.0f}× (goal ≥ 50×) |", ""]


def _report_family(name: str, m: dict, ds, n_elastic: int, args) -> list[str]:
    """A backbone of another family against the registered ``combined`` (same crystals, split and targets)."""
    from crystalzoo import get_backbone_info

    theirs = {(x["target"], x["split"]): x["value"] for x in get_backbone_info("combined").metrics}
    lines = [f"# `{name}`: the SchNet-style family pretrained like `combined`", "",
             f"Command: `python scripts/pretrain_backbones.py --only {name} --epochs {m['epochs']} --schedule "
             f"{args.schedule} --threads {args.threads}" + (f" --reference {args.reference}" if args.reference else "")
             + (f" --loss {args.loss}" if args.loss != "mse" else "") + "`", "",
             f"The crystals, split (80/10/10, seed 0) and targets of `combined` ({len(ds):,} crystals, {n_elastic:,} "
             f"with moduli); {m['num_params']:,} parameters; best epoch {m['best_epoch']} of {m['epochs']} "
             f"(`combined`: 100 epochs); {m['train_seconds'] / 3600:.1f} h of wall time on the 2-core machine, beside "
             "other jobs.", "", f"| target | `{name}` test MAE | `combined` test MAE |", "|---|---|---|"]
    for t in m["targets"]:
        lines.append(f"| {t} ({UNITS[t]}) | {m['test'][f'mae_{t}']:.4f} | {theirs.get((t, 'test'), float('nan')):.4f} |")
    return lines + [""]


def _shown(path: str) -> str:
    """``path`` relative to the repository when it is inside it (as a command run there names
    it), else absolute."""
    p, root = Path(path).resolve(), ROOT.resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def _against_originals(name: str, metrics: dict, test) -> list[str]:
    """``name``'s test MAE per target next to the original single-property backbone's on the same crystals."""
    import numpy as np

    from crystalzoo import load_model

    lines = [f"| target | `{name}` | original single-property backbone | original | `{name}` / original |",
             "|---|---|---|---|---|"]
    for t in metrics["targets"]:
        sub = test.select_targets([t])
        pred = load_model(ORIGINAL_FOR[t]).predict_arrays(sub.graphs)
        mae = float(np.mean(np.abs(pred - sub.labels[:, 0])))
        ours = metrics["test"][f"mae_{t}"]
        lines.append(f"| {t} ({UNITS[t]}) | {ours:.4f} | `{ORIGINAL_FOR[t]}` | {mae:.4f} | {ours / mae:.2f} |")
    return lines + ["", "The originals were trained by Xie & Grossman on 2017 Materials Project data (28,046 crystals "
                    "for the energies, 2,041 for the moduli), which very likely contains many of these test crystals: "
                    "their numbers are optimistic.", ""]


def _report(crystals: str, report: dict, ds, n_elastic: int, args) -> list[str]:
    _, _, test = ds.split(0.8, 0.1, 0.1, seed=0)
    runs = [n for n in report if RUNS[n][3] == crystals]
    first = report[runs[0]]
    what = (f"Every crystal of the project's data with a formation energy ({len(ds):,}; {n_elastic:,} with bulk and "
            "shear moduli; band gaps not used)" if crystals == "all" else
            f"{len(ds)} Materials Project crystals ({n_elastic:,} with bulk and shear moduli, plus crystals with a "
            "total energy drawn with seed 0)")
    lines = ["# Pretrained backbones" + (" on the full data set" if crystals == "all" else ""), "",
             f"Command: `python scripts/pretrain_backbones.py --only {' '.join(runs)} --epochs {first['epochs']} "
             f"--schedule {args.schedule} --threads {args.threads}"
             + (f" --reference {args.reference}" if args.reference else "")
             + (f" --loss {args.loss}" if args.loss != "mse" else "")
             + (f" --out {_shown(args.out)}" if Path(args.out).resolve() != DEFAULT_OUT else "") + "`", "",
             f"{what}, split 80/10/10 with seed 0; Adam lr 1e-3 ({args.schedule} schedule), batch 64, "
             f"{'mean absolute' if args.loss == 'l1' else 'mean squared'} error loss, best validation "
             f"epoch of {first['epochs']}"
             + ("; per-element reference values (least squares on the training split's compositions) under every "
                "output" if args.reference else "") + f". Test MAE on the {len(test):,} test crystals.", ""]
    if "combined" in report and crystals == "all":
        m = report["combined"]
        lines += ["## `combined` against the single-property originals", "",
                  f"Best epoch {m['best_epoch']} of {m['epochs']}; {m['num_params']:,} parameters; "
                  f"{m['train_seconds'] / 3600:.1f} h of wall time on the 2-core machine, beside (or paused for) "
                  "other jobs.", ""]
        lines += _against_originals("combined", m, test)
    if "combined-7042" in report:
        lines += ["## `combined-7042` against the single-property originals", ""]
        lines += _against_originals("combined-7042", report["combined-7042"], test)
        if "formation-7042" in report:
            lines += [f"Formation energy alone on the same crystals (`formation-7042`): "
                      f"{report['formation-7042']['test']['mae']:.4f} eV/atom.", ""]
    if "attention-formation" in report and "formation-7042" in report:
        g, a = report["formation-7042"], report["attention-formation"]
        lines += ["## Attention against gated convolution (formation energy, same data and budget)", "",
                  "| convolution | parameters | test MAE (eV/atom) | validation MAE | training time (s) |",
                  "|---|---|---|---|---|",
                  f"| gated (CGCNN) | {g['num_params']:,} | {g['test']['mae']:.4f} | {g['val']['mae']:.4f} | {g['train_seconds']:.0f} |",
                  f"| attention, 4 heads | {a['num_params']:,} | {a['test']['mae']:.4f} | {a['val']['mae']:.4f} | {a['train_seconds']:.0f} |",
                  "", "Training times are wall-clock seconds on one CPU thread of the project's 2-core machine, each "
                  "run sharing the machine with one other training process: compare them with care.", ""]
    return lines

if __name__ == "__main__":
    main()
