"""The paper's transfer benchmark (Deng, Park & Sy, Tables 2-3), over several seeds.

Fine-tune every registered single-property backbone (formation, bulk, shear, and
`combined`, `combined-7042` and `formation-7042`) on Materials Project band gaps with the
embedding and the first 1, 2 or 3 convolutions frozen — deeper layers re-initialised as in
the paper, and kept pretrained — and compare with the same architecture trained from
scratch. 1000/1000/1000 train/validation/test crystals, 30 epochs; each seed draws its own
split and initialisation, and comparisons with the baseline are paired over seeds. Then
every fine-tuning recipe (crystalzoo.training.recipes, and gradient boosting on the frozen crystal
vectors) on ``--recipe-backbone`` (formation), with the same budget, paired with the baseline.

    python benchmarks/transfer_band_gap.py --data ../shared/data/mp_crystals.jsonl.gz

Finished runs are appended to ``--out``/runs.jsonl, each with the sha256 of its backbone's
weights; run the same command again to resume. A run whose backbone's weights have changed
since (a name registered again) is left out and run again.
Several processes may share the file (e.g. ``--seeds 0 1 2`` and ``--seeds 4 3`` on two cores).
Writes ``--out``/transfer_band_gap.md (table) and transfer_band_gap.png (plot).
``--quick`` runs a tiny version on the bundled data (for CI).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAPER = {  # Table 2 (and Table 3 for the 7,042-crystal formation control) of the paper, test MAE in eV
    ("baseline", None): 0.812,
    ("formation", 1): 0.797, ("formation", 2): 0.765, ("formation", 3): 0.865,
    ("bulk", 1): 0.776, ("bulk", 2): 0.897, ("bulk", 3): 0.956,
    ("shear", 1): 0.846, ("shear", 2): 0.993, ("shear", 3): 0.988,
    ("combined-7042", 1): 0.820, ("combined-7042", 2): 0.850, ("combined-7042", 3): 0.870,
    ("formation-7042", 1): 1.022, ("formation-7042", 2): 1.142, ("formation-7042", 3): 1.437,
}
CANDIDATES = ["formation", "bulk", "shear", "combined", "combined-7042", "formation-7042"]
#: the fine-tuning recipes compared (on --recipe-backbone, every layer free to train unless the recipe
#: fixes some): crystalzoo.training.recipes, and gradient boosting on the frozen crystal vectors
RECIPES = ["freeze", "discriminative", "gradual", "l2sp", "linear-probe", "boosting"]
#: --tune: the same number of settings for training from scratch and for the best recipe (l2sp
#: on --recipe-backbone); each method keeps the setting with the lowest mean validation MAE.
#: The last setting of each trains on the mean absolute error (TrainConfig.loss) with the
#: default rates.
TUNING = {
    "from scratch": [{"lr": lr, "weight_decay": wd} for lr in (1e-3, 3e-3) for wd in (0.0, 1e-4)] + [{"loss": "l1"}],
    "l2sp": [{"lr": lr, "l2sp_alpha": a} for lr in (1e-3, 3e-3) for a in (0.01, 0.1)] + [{"loss": "l1"}],
}
#: TrainConfig's: those runs are the untuned ones
DEFAULTS = {"lr": 1e-3, "weight_decay": 0.0, "l2sp_alpha": 0.01, "loss": "mse"}


def pool_of(path: Path, size: int, seed: int) -> list[dict]:
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    rows = [r for r in rows if r.get("band_gap") is not None]
    pick = np.random.default_rng(seed).choice(len(rows), min(size, len(rows)), replace=False)
    return [rows[i] for i in np.sort(pick)]


def add_pool_arguments(p: argparse.ArgumentParser) -> None:
    """--data (the shared MP crystals) and --pool (how many of them, seed 1234, to draw splits from)."""
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_crystals.jsonl.gz"))
    p.add_argument("--pool", type=int, default=10000, help="crystals sampled (seed 1234) to draw the splits from")


def run_configs(backbones: list[str], recipe_backbone: str | None, tune: bool = False):
    """(backbone, frozen convolutions, re-initialised, recipe, options): the paper's grid
    (recipe None: the freeze recipe with k frozen), then every recipe on ``recipe_backbone``;
    with ``tune``, the settings of :data:`TUNING` instead (options: training options that
    differ from the defaults)."""
    if tune:
        for method, settings in TUNING.items():
            for setting in settings:
                options = tuple(sorted((k, v) for k, v in setting.items() if v != DEFAULTS[k]))
                if method == "from scratch":
                    yield ("baseline", None, False, None, options)
                else:
                    yield (recipe_backbone, None, False, method, options)
        return
    yield ("baseline", None, False, None, ())
    for b in backbones:
        for k in (1, 2, 3):
            for reinit in (True, False):
                yield (b, k, reinit, None, ())
    if recipe_backbone:
        for recipe in RECIPES:
            yield (recipe_backbone, None, False, recipe, ())


def _value(value) -> str:
    """A setting's value as keys and tables write it: ``0.003`` → ``"0.003"``, ``"l1"`` → ``"l1"``."""
    return value if isinstance(value, str) else f"{value:g}"


def run_key(cfg, seed) -> str:
    b, k, reinit, recipe, options = cfg
    tail = "".join(f"|{name}={_value(value)}" for name, value in options)  # none: the untuned run's key
    if recipe is not None:
        return f"{b}|{k}|recipe={recipe}{tail}|{seed}"
    return f"{b}|{k}|{'reinit' if reinit else 'keep'}{tail}|{seed}"


def weights_of(backbone: str) -> str | None:
    """The first 12 hex digits of the sha256 of ``backbone``'s weights, resolved as the loader
    resolves the name (a folder, a registered name): a run of other weights under the same
    name is stale. None for the baseline and a Hub model (not checked); "missing" for a name
    that no longer resolves; for ``A+B+…``, the backbones a run blends, theirs joined by ``+``."""
    from crystalzoo import get_backbone_info
    from crystalzoo.files import sha256_file
    from crystalzoo.registry import list_backbones, source_kind
    from crystalzoo.serialization import WEIGHTS_NAME

    if "+" in backbone and not Path(backbone).exists():
        return "+".join(str(weights_of(b)) for b in backbone.split("+"))
    kind = None if backbone == "baseline" else source_kind(backbone)
    if kind in (None, "hub"):
        return None
    if kind == "folder":
        file = Path(backbone) / WEIGHTS_NAME
        return sha256_file(file)[:12] if file.is_file() else "missing"
    return get_backbone_info(backbone).sha256[:12] if backbone in list_backbones() else "missing"


def read_runs(runs_file: Path) -> tuple[dict[str, dict], dict[str, int]]:
    """The runs of ``runs_file`` by key, and the number of stale runs per backbone: runs of
    weights that have changed since (a backbone registered again under its name) or no longer
    exist, which are left out (and run again)."""
    done, stale, current = {}, {}, {}
    lines = runs_file.read_text().splitlines() if runs_file.exists() else []
    for i, line in enumerate(lines):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # another process is appending it
                continue
            raise
        b = r["backbone"]
        if b not in current:
            current[b] = weights_of(b)
        if r.get("weights") != current[b]:
            stale[b] = stale.get(b, 0) + 1
            continue
        done[r["key"]] = r
    return done, stale


def _boosting(backbone: str, train, val, test, seed: int) -> dict:
    """Gradient boosting (scikit-learn's defaults) on the frozen crystal vectors of ``backbone``."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from crystalzoo import embed, load_backbone

    b = load_backbone(backbone)
    X = {name: embed(b, part) for name, part in (("train", train), ("val", val), ("test", test))}
    model = HistGradientBoostingRegressor(random_state=seed).fit(X["train"], train.labels[:, 0])
    mae = {name: float(np.mean(np.abs(model.predict(X[name]) - part.labels[:, 0])))
           for name, part in (("val", val), ("test", test))}
    return {"test_mae": mae["test"], "val_mae": mae["val"], "best_epoch": None, "train_loss": [], "val_loss": []}


def run(args) -> Path:
    import torch

    from crystalzoo.data import CrystalDataset, bundled_dataset
    from crystalzoo.registry import list_backbones
    from crystalzoo import TrainConfig, evaluate, make_model, train_model

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / "runs.jsonl"
    done, stale = read_runs(runs_file)
    for b, n in stale.items():
        print(f"{n} runs of {b} in {runs_file} used weights that have changed since (or are gone): left out, and run "
              "again", flush=True)

    if args.quick:
        ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=300, progress=False)
    else:
        rows = pool_of(Path(args.data), args.pool, seed=1234)
        ds = CrystalDataset.from_dataframe(
            __import__("pandas").DataFrame(rows), targets=["band_gap"], id_column="mp_id", progress=True)
    backbones = [b for b in CANDIDATES if b in list_backbones()] if not args.backbones else args.backbones
    configs = list(run_configs(backbones, args.recipe_backbone, args.tune))
    if args.reverse:  # a second process on the same seeds starts from the other end
        configs = configs[::-1]
    total = len(configs) * len(args.seeds)
    print(f"{len(ds)} crystals in the pool; {len(configs)} configurations × {len(args.seeds)} seeds = {total} runs; "
          f"{sum(run_key(c, s) in done for c in configs for s in args.seeds)} already done", flush=True)
    for seed in args.seeds:
        train, val, test = ds.split(args.sizes[0], args.sizes[1], args.sizes[2], seed=seed)
        for cfg in configs:
            key = run_key(cfg, seed)
            if key in read_runs(runs_file)[0]:  # this process's runs, and another's sharing the file
                continue
            b, k, reinit, recipe, options = cfg
            weights = weights_of(b)  # of the weights this run trains from, before it starts
            t0 = time.perf_counter()
            if recipe == "boosting":
                scores = _boosting(b, train, val, test, seed)
            else:
                model = make_model(None if b == "baseline" else b, train, freeze=k, reinit=reinit, seed=seed)
                config = TrainConfig(epochs=args.epochs, seed=seed, progress=False, recipe=recipe or "freeze",
                                     **dict(options))
                history = train_model(model, train, val, config)
                scores = {"test_mae": evaluate(model, test)["mae"],
                          "val_mae": history.rows[history.best_epoch - 1]["val_mae"], "best_epoch": history.best_epoch,
                          "train_loss": [h["train_loss"] for h in history.rows],
                          "val_loss": [h["val_loss"] for h in history.rows]}
            r = {"key": key, "backbone": b, "weights": weights, "freeze": k, "reinit": reinit,
                 **({"recipe": recipe} if recipe else {}),
                 **({"options": dict(options)} if options else {}), "seed": seed, **scores, "seconds": time.perf_counter() - t0}
            with open(runs_file, "a") as f:  # one short append per run: safe with parallel processes
                f.write(json.dumps(r) + "\n")
            done[key] = r
            print(f"[{sum(run_key(c, s) in done for c in configs for s in args.seeds)}/{total}] {key}: test MAE {r['test_mae']:.4f} eV ({r['seconds']:.0f} s)", flush=True)
    done, stale = read_runs(runs_file)  # with what parallel processes finished, without what became stale
    return report(out, done, args, stale)


def report(out: Path, done: dict, args, stale: dict[str, int] | None = None) -> Path:
    """Write transfer_band_gap.md and .png from the runs ``done``; ``stale``: runs left out per
    backbone (weights changed since), which the page names."""
    from scipy import stats

    runs = list(done.values())
    seeds = sorted({r["seed"] for r in runs})
    base = {r["seed"]: r["test_mae"] for r in runs if r["backbone"] == "baseline" and not r.get("options")}
    groups: dict[tuple, dict[int, float]] = {}
    by_recipe: dict[tuple, dict[int, float]] = {}
    for r in runs:
        if r.get("options"):  # a tuning run: the tuning table only
            continue
        if r.get("recipe"):
            by_recipe.setdefault((r["backbone"], r["recipe"]), {})[r["seed"]] = r["test_mae"]
        else:
            groups.setdefault((r["backbone"], r["freeze"], r["reinit"]), {})[r["seed"]] = r["test_mae"]
    lines = [
        "# Transfer to band gap (the paper's Tables 2-3, over several seeds)", "",
        "Commands: `python benchmarks/transfer_band_gap.py --threads 1` (every backbone, and every recipe from "
        "formation; `--backbones NAME` for one backbone, `--recipe-backbone NAME` for the recipes from another), and "
        "the same with `--tune` for the tuning table. Every run is a line of "
        "runs.jsonl, and each command rewrites this page from all of them.", "",
        f"Materials Project band gaps; {args.sizes[0]}/{args.sizes[1]}/{args.sizes[2]} train/validation/test crystals "
        + (f"drawn per seed from the first {args.pool} crystals of the bundled data set (quick run); " if args.quick else
           f"drawn per seed from a fixed pool of {args.pool} (seed 1234) of the 34,738 crystals with a band gap; ")
        + f"{args.epochs} epochs, Adam lr 1e-3, batch 64, MSE loss, best-validation weights; seeds {seeds} "
        "(each seed: its own split and initialisation). Test MAE in eV, mean ± standard deviation over seeds. "
        "'beats baseline' compares with the from-scratch model on the same seeds: Δ = mean paired difference, "
        "wins = seeds where the transferred model is better, p = paired t-test.", "",
        *([f"Left out: {', '.join(f'{n} runs of `{b}`' for b, n in sorted(stale.items()))}, whose weights have "
           "changed since (or are gone); the same command runs them again.", ""] if stale else []),
        "| backbone | frozen convs | deeper layers | test MAE (eV) | paper | Δ vs baseline | wins | p | beats baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(groups, key=lambda g: (g[0] != "baseline", CANDIDATES.index(g[0]) if g[0] in CANDIDATES else 99,
                                          g[1] or 0, not g[2]))
    for g in order:
        vals = groups[g]
        s = sorted(vals)
        arr = np.array([vals[i] for i in s])
        paper = PAPER.get((g[0], g[1]))
        paper_s = f"{paper:.3f}" if paper is not None and (g[2] or g[0] == "baseline") else ""
        if g[0] == "baseline":
            lines.append(f"| from scratch | – | – | {arr.mean():.3f} ± {arr.std(ddof=1) if len(arr) > 1 else 0:.3f} | "
                         f"{paper_s} | | | | |")
            continue
        paired = [i for i in s if i in base]
        d = np.array([vals[i] - base[i] for i in paired])
        wins = int((d < 0).sum())
        p = stats.ttest_rel([vals[i] for i in paired], [base[i] for i in paired]).pvalue if len(paired) > 1 else float("nan")
        verdict = "yes" if (d.mean() < 0 and p < 0.05) else ("no (worse)" if d.mean() > 0 and p < 0.05 else "no (n.s.)")
        lines.append(f"| {g[0]} | {g[1]} | {'re-initialised' if g[2] else 'pretrained'} | "
                     f"{arr.mean():.3f} ± {arr.std(ddof=1) if len(arr) > 1 else 0:.3f} | {paper_s} | "
                     f"{d.mean():+.3f} | {wins}/{len(paired)} | {p:.3f} | {verdict} |")
    lines += ["", "Paper values are single-seed results on OQMD-derived crystals with the original CGCNN code; "
              "they are shown for the re-initialised protocol, which is the paper's.", ""]
    lines += _table3(groups)
    lines += _recipes_table(by_recipe, base, args.epochs)
    for tuned in sorted({r["backbone"] for r in runs if r.get("options") and r.get("recipe")}):
        lines += tuning_table(runs, tuned)  # the backbone(s) whose recipe was tuned, whatever --recipe-backbone
    lines += ["![test MAE by backbone and frozen layers](transfer_band_gap.png)", ""]
    md = out / "transfer_band_gap.md"
    md.write_text("\n".join(lines))
    _plot(out / "transfer_band_gap.png", groups, base)
    print("\n".join(lines))
    return md


def _paired(vals: dict[int, float], base: dict[int, float]) -> tuple[float, int, int, float, str]:
    """(mean paired difference to the baseline, wins, pairs, p of the paired t-test, verdict)."""
    from scipy import stats

    paired = [i for i in sorted(vals) if i in base]
    d = np.array([vals[i] - base[i] for i in paired])
    p = stats.ttest_rel([vals[i] for i in paired], [base[i] for i in paired]).pvalue if len(paired) > 1 else float("nan")
    verdict = "yes" if (d.mean() < 0 and p < 0.05) else ("no (worse)" if d.mean() > 0 and p < 0.05 else "no (n.s.)")
    return float(d.mean()), int((d < 0).sum()), len(paired), float(p), verdict


def _recipes_table(by_recipe: dict, base: dict, epochs: int) -> list[str]:
    """The fine-tuning recipes against training from scratch, paired by seed."""
    if not by_recipe:
        return []
    b = np.array([base[i] for i in sorted(base)])
    lines = ["## Fine-tuning recipes (crystalzoo.training.recipes)", "",
             f"Every recipe starts from its backbone with the defaults of crystalzoo.training.recipes and the same budget "
             f"as the baseline ({epochs} epochs, Adam lr 1e-3, batch 64, best-validation weights; nothing tuned per "
             "recipe); boosting is scikit-learn's HistGradientBoostingRegressor with its defaults on the frozen "
             "crystal vectors (kind 'hidden'). Δ and p are paired with the from-scratch model "
             f"({b.mean():.3f} ± {b.std(ddof=1) if len(b) > 1 else 0:.3f} eV) on the same seeds; "
             "'vs scratch' = Δ / scratch MAE.", "",
             "| backbone | recipe | test MAE (eV) | Δ vs scratch | vs scratch | wins | p | beats scratch |",
             "|---|---|---|---|---|---|---|---|"]
    for (backbone, recipe), vals in sorted(by_recipe.items(), key=lambda kv: RECIPES.index(kv[0][1])):
        arr = np.array([vals[i] for i in sorted(vals)])
        d, wins, n, p, verdict = _paired(vals, base)
        name = "freeze, nothing frozen (full fine-tuning)" if recipe == "freeze" else recipe
        lines.append(f"| {backbone} | {name} | {arr.mean():.3f} ± {arr.std(ddof=1) if len(arr) > 1 else 0:.3f} | "
                     f"{d:+.3f} | {100 * d / b.mean():+.1f} % | {wins}/{n} | {p:.3f} | {verdict} |")
    return lines + [""]


def tuning_table(runs: list[dict], recipe_backbone: str) -> list[str]:
    """Each setting of :data:`TUNING` (mean validation and test MAE over seeds), the one each
    method keeps (lowest mean validation MAE), and the kept l2sp against the kept scratch.
    Nothing until every setting of both methods has run on the same seeds: with fewer, the
    budgets would differ."""
    def setting_of(r):
        return {**DEFAULTS, **r.get("options", {})}

    found: dict[str, list[tuple[dict, dict]]] = {}
    for method, settings in TUNING.items():
        for setting in settings:
            want = {**DEFAULTS, **setting}
            test = {r["seed"]: r for r in runs if setting_of(r) == want and (
                r["backbone"] == "baseline" and not r.get("recipe") if method == "from scratch"
                else r["backbone"] == recipe_backbone and r.get("recipe") == method)}
            if test:
                found.setdefault(method, []).append((setting, test))
    if any(len(found.get(method, [])) != len(settings) for method, settings in TUNING.items()):
        return []
    seeds = sorted(set.intersection(*(set(t) for m in found.values() for _, t in m)))
    if not seeds:
        return []
    lines = ["## Tuned: from scratch against l2sp, the same tuning budget", "",
             f"Each method tries {len(TUNING['from scratch'])} settings (the rest as above) on the same seeds "
             f"{seeds} and keeps the one with the lowest mean validation MAE; the test MAE of the kept setting is "
             "paired with the kept setting of the other method.", "",
             "| method | setting | validation MAE (eV) | test MAE (eV) | kept |", "|---|---|---|---|---|"]
    kept = {}
    for method, rows in found.items():
        means = [(np.mean([t[s]["val_mae"] for s in seeds]), setting, t) for setting, t in rows]
        best = min(means, key=lambda m: m[0])
        kept[method] = best
        for v, setting, t in means:
            label = ", ".join(f"{k} {_value(val)}" for k, val in setting.items())
            who = "from scratch" if method == "from scratch" else f"{recipe_backbone}, {method}"
            lines.append(f"| {who} | {label} | {v:.3f} | {np.mean([t[s]['test_mae'] for s in seeds]):.3f} | "
                         f"{'yes' if setting is best[1] else ''} |")
    base = {s: kept["from scratch"][2][s]["test_mae"] for s in seeds}
    vals = {s: kept["l2sp"][2][s]["test_mae"] for s in seeds}
    d, wins, n, p, verdict = _paired(vals, base)
    b = np.mean(list(base.values()))
    lines += ["", f"Kept l2sp against kept scratch: test MAE {np.mean(list(vals.values())):.3f} against {b:.3f} eV, "
              f"Δ {d:+.3f} eV ({100 * d / b:+.1f} %), wins {wins}/{n}, p {p:.3f}: {verdict}.", ""]
    return lines


def _table3(groups: dict) -> list[str]:
    """The paper's Table 3: the multi-task backbone against formation energy alone, both
    pretrained on the same 7,042 crystals, paired by seed."""
    from scipy import stats

    keys = sorted({(g[1], g[2]) for g in groups if g[0] == "combined-7042"}
                  & {(g[1], g[2]) for g in groups if g[0] == "formation-7042"}, key=lambda k: (not k[1], k[0]))
    if not keys:
        return []
    lines = ["## Table 3: multi-task against single-task pretraining on the same 7,042 crystals", "",
             "Δ = mean over seeds of (combined-7042 − formation-7042) band-gap test MAE; negative: `combined-7042` transfers "
             "better. wins = seeds where `combined-7042` is better; p = paired t-test.", "",
             "| frozen convs | deeper layers | combined-7042 | formation-7042 | paper (combined / formation) | Δ | wins | p |",
             "|---|---|---|---|---|---|---|---|"]
    for k, reinit in keys:
        a, b = groups[("combined-7042", k, reinit)], groups[("formation-7042", k, reinit)]
        paired = sorted(set(a) & set(b))
        d = np.array([a[i] - b[i] for i in paired])
        p = stats.ttest_rel([a[i] for i in paired], [b[i] for i in paired]).pvalue if len(paired) > 1 else float("nan")
        paper = f"{PAPER[('combined-7042', k)]:.3f} / {PAPER[('formation-7042', k)]:.3f}" if reinit else ""
        lines.append(f"| {k} | {'re-initialised' if reinit else 'pretrained'} | "
                     f"{np.mean([a[i] for i in paired]):.3f} | {np.mean([b[i] for i in paired]):.3f} | {paper} | "
                     f"{d.mean():+.3f} | {int((d < 0).sum())}/{len(paired)} | {p:.3f} |")
    return lines + [""]


def _plot(path: Path, groups: dict, base: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    b = np.array(list(base.values()))
    for ax, reinit in zip(axes, (True, False)):
        if len(b):
            ax.axhspan(b.mean() - b.std(), b.mean() + b.std(), color="grey", alpha=0.2)
            ax.axhline(b.mean(), color="grey", ls="--", label="from scratch")
        names = sorted({g[0] for g in groups if g[0] != "baseline"}, key=lambda n: CANDIDATES.index(n) if n in CANDIDATES else 99)
        for j, name in enumerate(names):
            xs, ms, ss = [], [], []
            for k in (1, 2, 3):
                vals = np.array(list(groups.get((name, k, reinit), {}).values()))
                if len(vals):
                    xs.append(k + (j - len(names) / 2) * 0.06)
                    ms.append(vals.mean())
                    ss.append(vals.std())
            ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=name)
        ax.set_xticks([1, 2, 3])
        ax.set_xlabel("frozen convolutions")
        ax.set_title("deeper layers re-initialised (paper)" if reinit else "deeper layers kept pretrained")
    axes[0].set_ylabel("band-gap test MAE (eV), mean ± sd over seeds")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pool_arguments(p)
    p.add_argument("--sizes", type=int, nargs=3, default=[1000, 1000, 1000])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--backbones", nargs="*", default=None, help="default: every registered one of " + ", ".join(CANDIDATES))
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--reverse", action="store_true", help="take the configurations in reverse order")
    p.add_argument("--recipe-backbone", default="formation", help="the backbone the recipes start from ('' for none)")
    p.add_argument("--quick", action="store_true", help="tiny run on bundled data, for CI")
    p.add_argument("--tune", action="store_true", help="run the settings of TUNING (scratch and l2sp) instead")
    args = p.parse_args()
    if args.tune and not args.recipe_backbone:
        p.error("--tune tunes the l2sp recipe on --recipe-backbone: give a backbone (default formation)")
    if args.quick:
        args.sizes, args.epochs, args.seeds, args.pool = [100, 50, 50], 2, [0, 1], 300
        args.backbones = args.backbones or ["formation"]
    run(args)


if __name__ == "__main__":
    main()
