"""The small-data benchmark suite: which backbone, depth and recipe for a user's few hundred or
thousand labelled crystals, against training from scratch and against what a user would pip
install instead, with the transfer advisor's ranking checked on the same cells.

    python benchmarks/small_data.py --data ../shared/data/mp_crystals.jsonl.gz            # run (resumes)
    python benchmarks/small_data.py --data ... --tasks band_gap --sizes 1000 --seeds 0 1 2 3 4
    python benchmarks/small_data.py --report                                             # tables, plots
    python benchmarks/small_data.py --quick                                              # CI: tiny

Tasks (from the shared Materials Project data): band gap, Fermi energy, metal / non-metal
(classification: band gap 0), log10 K and log10 G (the crystals with moduli) and formation
energy. Each task has a fixed test set (``--test`` crystals, seed 7); each (size, seed) draws its
training and validation crystals (a quarter of the size, at least 50) from the rest.

Methods, all with the same budget (``--epochs``, the default schedule, no tuning of the networks):
- ``scratch``: a CGCNN of the original shape trained from random weights;
- ``BACKBONE/freeze=K`` for each registered backbone and recipe in ``--recipes`` (``full``: every
  layer trains; ``freeze1``: the embedding and first convolution frozen; ``full+ema``: every layer
  trains with a 2-epoch warm-up, cosine decay and an average of the weights, ``EMA``, and then
  ``scratch+ema`` runs with the same; ``full+blend`` (regression): ``crystalzoo.fit_blend``, the
  ``full`` network and ``fit_booster`` on the same backbone's pooled vectors and the composition,
  half each, untuned; ``full+blend3`` the same with an ensemble of 3 such networks;
  ``advised3/full+blend`` (with ``--backbones … advised3``): ``fit_blend`` of the three CGCNN
  backbones the cell's advisor ranked first on the training split, one network each);
- external baselines (the ``[bench]`` extra: matminer, lightgbm), tuned on the validation split:
  ``magpie+lgbm`` (Magpie composition features + density features, LightGBM), and with the
  ``[chgnet]`` extra ``chgnet+mlp`` and ``magpie+chgnet+lgbm`` (frozen CHGNet crystal features, which
  CHGNet makes the sum of its atom vectors) and ``chgnet_mean+mlp`` and ``magpie+chgnet_mean+lgbm``
  (the same per atom: the mean of its atom vectors);
  ``distilled+mlp`` and ``magpie+distilled+lgbm`` the same on the ``chgnet-distilled`` student's
  reproduction of those features, where it is registered; with ``--finetune-chgnet``,
  ``chgnet+finetune``: CHGNet itself fine-tuned end to end (``finetune_chgnet``: its pretrained
  weights, a new readout MLP, the same epochs as the networks; about an hour per seed at 1,000
  crystals on one core);
- ``combined-pooled+magpie+lgbm``: the same tuned LightGBM on Magpie features beside the frozen
  pooled vectors of the ``combined`` backbone;
- crystalzoo alone: ``composition+lgbm`` (the descriptors of ``crystalzoo.composition``) and
  ``combined-pooled+composition+lgbm`` (``CrystalFeaturizer("combined", kind="pooled",
  composition=True)`` with LightGBM, tuned the same way) and ``…+hgb`` (``crystalzoo.boosting.fit_booster``:
  scikit-learn's HistGradientBoosting on the same features, over the same grid);
  ``zoo-pooled+composition+hgb``: the pooled vectors of every backbone the task may use, side by
  side, with the composition (a mixture of the zoo's extractors in a booster).
The leakage rule holds: a backbone is never scored on a target of its pretraining
(``crystalzoo.transfer.leakage``). The advisor (``rank_backbones``) is run on each training
split and its ranking compared with the fine-tuned test scores.

Each finished run is one JSON line in ``--out``/small_data_runs.jsonl (with the sha256 of its
backbone's weights); the same command resumes. ``--report`` writes ``--out``/small_data.md and
the plots from that file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

from transfer_band_gap import _paired, read_runs, weights_of

ROOT = Path(__file__).resolve().parents[1]
#: task → (the data set's target, task kind, units, the shared data's key it comes from)
TASKS = {
    "band_gap": ("band_gap", "regression", "eV"),
    "efermi": ("efermi", "regression", "eV"),
    "is_metal": ("is_metal", "classification", ""),
    "log10_k_vrh": ("log10_k_vrh", "regression", "log10(GPa)"),
    "log10_g_vrh": ("log10_g_vrh", "regression", "log10(GPa)"),
    "formation_energy_per_atom": ("formation_energy_per_atom", "regression", "eV/atom"),
}
#: the student distilled from CHGNet (scripts/pretrain_backbones.py): ``distilled+mlp`` and
#: ``magpie+distilled+lgbm`` are ``chgnet+mlp`` and ``magpie+chgnet+lgbm`` on its reproduction of CHGNet's features
DISTILLED = "chgnet-distilled"
#: the seeds of a complete cell
SEEDS = [0, 1, 2, 3, 4]
RECIPES = {"full": None, "freeze1": 1, "full+ema": None, "full+blend": None, "full+blend3": None}
#: ``advised3/full+blend``: fit_blend of the three CGCNN backbones the cell's advisor ranks first on
#: the training split (its ``…|advisor`` run), one network each and a booster on their vectors
ADVISED = "advised3"
#: the training of a recipe named ``…+ema`` (and of ``scratch+ema``, the same budget from scratch): warm-up,
#: cosine decay and an average of the weights (TrainConfig.warmup, .schedule, .ema)
EMA = {"schedule": "cosine", "warmup": 2, "ema": 0.99}


#: the methods of the learning curves: scratch, two fine-tuned backbones, crystalzoo's booster and
#: blend, and the external baselines
CURVES = ("scratch", "combined/full", "formation/full", "combined-pooled+composition+hgb", "combined/full+blend",
          "magpie+lgbm", "magpie+chgnet+lgbm", "chgnet+mlp")


def labelled_rows(path: Path, task: str) -> list[dict]:
    """The shared data's crystals with a label for ``task``, the label under the task's name."""
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        rows = [json.loads(line) for line in f]
    out = []
    for r in rows:
        if task == "is_metal":
            value = None if r.get("band_gap") is None else float(r["band_gap"] == 0)
        elif task.startswith("log10_"):
            raw = r.get(task.removeprefix("log10_"))
            value = float(np.log10(raw)) if raw is not None and raw > 0 else None
        else:
            value = r.get(task)
        if value is not None and np.isfinite(value):
            out.append({"mp_id": r["mp_id"], "cif": r["cif"], task: value})
    return out


def splits(n_rows: int, size: int, seed: int, test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) positions: the test set fixed per task (seed 7), the rest drawn per seed."""
    order = np.random.default_rng(7).permutation(n_rows)
    fixed, pool = order[:test], order[test:]
    pool = pool[np.random.default_rng(seed).permutation(len(pool))]
    n_val = max(50, size // 4)
    return pool[:size], pool[size : size + n_val], fixed


def methods(task: str, recipes: list[str], externals: bool, backbones: list[str] | None = None,
            chgnet: bool = True, finetune_chgnet: bool = False) -> list[str]:
    """The methods of a cell; ``chgnet=False`` leaves out the CHGNet baselines (``--quick``: the
    teacher featurises about 10 crystals/s); ``finetune_chgnet``: CHGNet fine-tuned end to end too."""
    from crystalzoo.registry import list_backbones

    kind = TASKS[task][1]
    allowed = zoo(task)
    names = [n for n in (backbones or list_backbones()) if n in allowed]
    out = ["scratch"] + (["scratch+ema"] if any(r.endswith("+ema") for r in recipes) else [])
    out += [f"{n}/{r}" for n in names for r in recipes if not ("+blend" in r and kind != "regression")]
    if "full+blend" in recipes and kind == "regression" and backbones and ADVISED in backbones:
        out.append(f"{ADVISED}/full+blend")
    if externals:
        out += ["magpie+lgbm"] + [f"{n}-pooled+magpie+lgbm" for n in ("combined",) if n in names]
        # crystalzoo alone (its own composition descriptors, no matminer)
        out += ["composition+lgbm"] + [f"{n}-pooled+composition+{b}" for n in ("combined",) if n in names
                                       for b in ("lgbm", "hgb")] + ["zoo-pooled+composition+hgb"]
        if chgnet and _has("chgnet"):
            out += ["magpie+chgnet+lgbm"] + (["chgnet+mlp"] if kind == "regression" else [])
            # CHGNet's crystal vector is the sum of its atom vectors: per atom too, for the intensive targets
            out += ["magpie+chgnet_mean+lgbm"] + (["chgnet_mean+mlp"] if kind == "regression" else [])
            out += ["chgnet+finetune"] if finetune_chgnet else []
        if DISTILLED in allowed:  # the same heads on the distilled student's features (the leakage rule too)
            out += ["magpie+distilled+lgbm"] + (["distilled+mlp"] if kind == "regression" else [])
    return out


def zoo(task: str, family: str | None = None) -> list[str]:
    """Every registered backbone that ``task`` may use (the leakage rule), by name; ``family``: of
    that family only (``zoo-pooled…`` reads the CGCNN ones)."""
    from crystalzoo.models.architectures import DEFAULT_ARCHITECTURE
    from crystalzoo.registry import get_backbone_info, list_backbones
    from crystalzoo.transfer import leakage

    return [n for n in list_backbones() if leakage(n, task) is None and family in (
        None, get_backbone_info(n).config.get("architecture", DEFAULT_ARCHITECTURE))]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def stale(task: str, advice: dict, family: str | None = None) -> list[str]:
    """The backbones ``task`` may use now (of ``family``) that the advisor's run ``advice`` did not score
    (registered after it ran; an advisor run of a chosen ``--backbones`` list is stale too) or scored with
    other weights than those registered now (``advice["scored_weights"]``, by backbone; a run that did
    not record them is stale for every backbone)."""
    scored = advice.get("scored_weights") or {}
    return sorted(b for b in zoo(task, family) if b not in advice["scores"] or scored.get(b) != weights_of(b))


def uses(task: str, method: str) -> str:
    """The backbone(s) whose weights a run of ``method`` reads, as ``weights_of`` takes them (a run of other
    weights is stale): ``B/recipe`` fine-tunes ``B``; ``B-pooled+…`` reads ``B``'s vectors (``zoo-pooled``:
    every CGCNN backbone ``task`` may use, joined by ``+``); ``…distilled…`` the student's features;
    ``baseline`` otherwise (nothing of crystalzoo's). ``advised3``'s picks come from its cell's advisor run."""
    from crystalzoo.models.architectures import DEFAULT_ARCHITECTURE

    if "/" in method:
        return method.split("/")[0]
    if "-pooled" in method:
        source = method.split("-pooled")[0]
        return "+".join(zoo(task, DEFAULT_ARCHITECTURE)) if source == "zoo" else source
    return DISTILLED if "distilled" in method.split("+") else "baseline"


def advised(task: str, advice: dict, n: int = 3) -> list[str]:
    """The ``n`` CGCNN backbones ``task`` may use that the advisor's run ``advice`` scored highest."""
    from crystalzoo.models.architectures import DEFAULT_ARCHITECTURE

    allowed = zoo(task, DEFAULT_ARCHITECTURE)
    missing = stale(task, advice, DEFAULT_ARCHITECTURE)
    if missing:
        raise ValueError(f"{task}: the advisor run of seed {advice['seed']} did not score {', '.join(missing)} "
                         "as registered now (registered since, or again): run the cell again with the advisor on "
                         "(no --no-advisor), which ranks them again")
    ranked = sorted((b for b in advice["scores"] if b in allowed), key=lambda b: -advice["scores"][b]["score"])
    if len(ranked) < n:
        raise ValueError(f"{task}: the advisor scored {len(ranked)} allowed CGCNN backbones, fewer than {n}")
    return ranked[:n]


def score_network(method: str, task: str, train, val, test, epochs: int, seed: int,
                  blended: list[str] | None = None) -> dict:
    from crystalzoo import TrainConfig, evaluate, make_model, train_model
    from crystalzoo.transfer import check_no_leakage

    kind = TASKS[task][1]
    backbone, freeze = (None, None) if method.startswith("scratch") else (method.split("/")[0],
                                                                          RECIPES[method.split("/")[1]])
    if backbone == ADVISED:  # a blend of the advisor's first three (``blended``): its choice from the training split
        if not blended:
            raise ValueError(f"{method}: give the backbones it blends, advised(task, the cell's advisor run)")
        backbone = blended
    for name in [backbone] if isinstance(backbone, str) else backbone or []:
        check_no_leakage(name, task)  # the rule, where a run starts
    if isinstance(backbone, str):  # the graphs with the atom features its family reads
        from crystalzoo.training.runs import backbone_atom_features

        train, val, test = (d.with_atom_features(backbone_atom_features(backbone)) for d in (train, val, test))
    if "+blend" in method:  # crystalzoo's fit_blend: this network (+blend3: 3 of them) and fit_booster, half each
        from crystalzoo import fit_blend

        if kind != "regression":
            raise ValueError(f"{method}: a blend of predicted values is for regression tasks")
        blend = fit_blend(train, val, backbone=backbone, seed=seed, ensemble=int(method.split("+blend")[1] or 1),
                          config=TrainConfig(epochs=epochs, seed=seed, progress=False))
        y = test.labels[:, 0]

        def mae(m) -> float:
            return float(np.mean(np.abs(np.ravel(m.predict(test)) - y)))

        from crystalzoo import Blend

        networks = blend.members[:-1]
        return {"test": mae(blend), "val": blend.val_scores["blend"],
                "network": mae(Blend(networks) if len(networks) > 1 else networks[0]),
                "booster": mae(blend.members[-1])}
    model = make_model(backbone, train, freeze=freeze, task=kind, seed=seed)
    extra = EMA if method.endswith("+ema") else {}
    history = train_model(model, train, val, TrainConfig(epochs=epochs, seed=seed, progress=False, **extra))
    scores = evaluate(model, test)
    metric = "mae" if kind == "regression" else "accuracy"
    return {"test": float(scores[metric]), "val": float(history.rows[history.best_epoch - 1][f"val_{metric}"]),
            "best_epoch": history.best_epoch}


def _save(file: Path, known: dict) -> None:
    """``known`` saved as ``file`` (.npz) whole or not at all: written beside it, then moved over
    it (a run stopped while writing had left a truncated file that no longer loaded)."""
    partial = file.with_name(file.stem + ".partial.npz")
    np.savez(partial, **known)
    partial.replace(file)


def features(kind: str, rows: list[dict], cache: Path) -> np.ndarray:
    """Magpie (+ density) or CHGNet crystal features of ``rows``, cached by mp_id in ``cache``
    (the graph cache's folder, ``$CRYSTALZOO_CACHE``: not the results'). ``chgnet`` is CHGNet's
    ``crystal_fea``, the sum of its atom vectors (twice as large for a doubled cell);
    ``chgnet_mean`` the same per atom, the mean of its atom vectors."""
    if kind == "chgnet_mean":
        from pymatgen.core import Structure

        return features("chgnet", rows, cache) / np.array([len(Structure.from_str(r["cif"], "cif"))
                                                           for r in rows])[:, None]
    cache.mkdir(parents=True, exist_ok=True)
    file = cache / f"{kind}.npz"
    known = dict(np.load(file, allow_pickle=False)) if file.exists() else {}
    missing = list({r["mp_id"]: r for r in rows if r["mp_id"] not in known}.values())
    if missing:
        from pymatgen.core import Structure

        structures = [Structure.from_str(r["cif"], "cif") for r in missing]
        if kind == "magpie":
            from matminer.featurizers.composition import ElementProperty
            from matminer.featurizers.structure import DensityFeatures

            magpie, density = ElementProperty.from_preset("magpie", impute_nan=True), DensityFeatures()

            def dense(s):  # an element without an atomic radius (noble gases): missing, which LightGBM takes
                try:
                    return density.featurize(s)
                except TypeError:
                    return [np.nan] * len(density.feature_labels())

            values = [np.r_[magpie.featurize(s.composition), dense(s)] for s in structures]
            known.update({r["mp_id"]: np.asarray(v, np.float64) for r, v in zip(missing, values)})
            _save(file, known)
        else:  # about 10 crystals/s on one core: saved every 64, so that an interrupted run keeps them
            from chgnet.model import CHGNet

            net = CHGNet.load(verbose=False)
            for i in range(0, len(missing), 64):
                # task "e": the crystal vector comes before the heads, and without forces and stresses the
                # autograd graph of a batch is not kept (batches of 32 with them ran out of 24 GiB)
                chunk = net.predict_structure(structures[i:i + 64], task="e", return_crystal_feas=True, batch_size=8)
                chunk = [chunk] if isinstance(chunk, dict) else chunk  # CHGNet answers one structure with a dict
                known.update({r["mp_id"]: np.asarray(c["crystal_fea"], np.float64)
                              for r, c in zip(missing[i:i + 64], chunk)})
                _save(file, known)
                print(f"CHGNet features: {len(known)} crystals", flush=True)
    return np.stack([known[r["mp_id"]] for r in rows])


def error(predicted: np.ndarray, y: np.ndarray, kind: str) -> float:
    """Test MAE (regression) or accuracy (classification)."""
    return float(np.mean(predicted == y)) if kind == "classification" else float(np.mean(np.abs(predicted - y)))


def score_external(method: str, task: str, rows: list[dict], parts: tuple, cache: Path, seed: int,
                   graphs: tuple = ()) -> dict:
    """A tuned booster (or MLP) on features: Magpie, CHGNet's, and for ``BACKBONE-pooled+…`` a
    registered backbone's frozen pooled vectors of the cell's ``graphs`` (train, val, test)."""
    kind = TASKS[task][1]
    used = np.concatenate(parts)  # the crystals of this cell only, featurised once (cached by id)
    rows = [rows[i] for i in used]
    bounds = np.cumsum([0] + [len(p) for p in parts])
    train, val, test = (np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:]))
    y = np.array([r[task] for r in rows])
    words = method.split("+")
    if words[-1] not in ("lgbm", "hgb", "mlp") or (words[-1] == "hgb" and (
            "-pooled" not in method or {"magpie", "chgnet", "chgnet_mean"} & set(words))):
        raise ValueError(f"{method}: the learner is lgbm, mlp or hgb (crystalzoo's fit_booster, on backbones' "
                         "pooled vectors with or without composition only)")
    blocks = [features("magpie", rows, cache)] if "magpie" in words else []
    blocks += [features(k, rows, cache) for k in ("chgnet", "chgnet_mean") if k in words]
    if "distilled" in words:  # the distilled student's reproduction of the teacher's features, at CGCNN speed
        from crystalzoo import load_model

        student = load_model(DISTILLED)
        blocks.append(np.concatenate([student.predict(part) for part in graphs]).reshape(len(rows), -1))
    if "-pooled" in method:  # crystalzoo's frozen vectors beside the composition: issue 31's mixture
        from crystalzoo import embed, load_backbone
        from crystalzoo.models.architectures import DEFAULT_ARCHITECTURE

        source = method.split("-pooled")[0]
        # "zoo": every CGCNN backbone the task may use, side by side
        names = zoo(task, DEFAULT_ARCHITECTURE) if source == "zoo" else [source]
        if words[-1] == "hgb":  # crystalzoo's own booster path, as a user calls it
            from crystalzoo.boosting import fit_booster

            booster = fit_booster(graphs[0], graphs[1], backbones=names, composition="composition" in words,
                                  task=kind, seed=seed)
            return {"test": error(booster.predict(graphs[2]), y[test], kind), "val": booster.val_score,
                    "setting": booster.setting}
        for i, name in enumerate(names):
            backbone = load_backbone(name)
            blocks.append(np.concatenate([embed(backbone, part, kind="pooled",
                                                composition="composition" in words and i == 0) for part in graphs]))
    elif "composition" in words:
        from crystalzoo.composition import element_statistics

        for part in graphs:
            z = np.concatenate([a.z for a in part.graphs])
            crystal = np.repeat(np.arange(len(part)), [a.n_atoms for a in part.graphs])
            blocks.append(element_statistics(z, crystal, len(part)))
        blocks = [np.concatenate(blocks)]
    x = np.concatenate(blocks, axis=1)
    if method in ("chgnet+mlp", "chgnet_mean+mlp", "distilled+mlp"):
        from sklearn.compose import TransformedTargetRegressor
        from sklearn.neural_network import MLPRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # features and target standardised, and up to 2,000 passes: with 500 passes over 100 crystals (one
        # batch each) and the raw log10 moduli as targets, the MLP stopped far from a fit (the suite's
        # chgnet+mlp on 100 bulk moduli: 0.418 before, 0.191 log10(GPa) now)
        grid = [dict(hidden_layer_sizes=h, alpha=a, max_iter=2000) for h in ((64,), (128, 64)) for a in (1e-4, 1e-2)]
        make = lambda s: TransformedTargetRegressor(  # noqa: E731
            make_pipeline(StandardScaler(), MLPRegressor(random_state=seed, **s)), transformer=StandardScaler())
    else:  # the settings of crystalzoo.boosting.GRID, in LightGBM's words
        import lightgbm as lgb

        from crystalzoo.boosting import GRID

        grid = [dict(num_leaves=s["max_leaf_nodes"], learning_rate=s["learning_rate"], n_estimators=s["max_iter"])
                for s in GRID]
        cls = lgb.LGBMClassifier if kind == "classification" else lgb.LGBMRegressor
        make = lambda s: cls(random_state=seed, verbose=-1, **s)  # noqa: E731

    def score(model, part):
        return error(model.predict(x[part]), y[part], kind)

    fitted = [(s, make(s).fit(x[train], y[train])) for s in grid]
    better = max if kind == "classification" else min
    setting, model = better(fitted, key=lambda sm: score(sm[1], val))
    return {"test": score(model, test), "val": score(model, val), "setting": setting}


#: ``chgnet+finetune``: one setting, fixed before any run and not tuned (as the networks are not)
CHGNET_FINETUNE = {"batch_size": 16, "lr_pretrained": 3e-4, "lr_readout": 1e-3, "warmup": 0.05, "huber_delta": 1.0}


def finetune_chgnet(task: str, rows: list[dict], parts: tuple, seed: int, epochs: int) -> dict:
    """CHGNet (the pretrained weights in its wheel) fine-tuned end to end on the cell's training
    crystals, what a user of the chgnet package would do instead of crystalzoo. Its per-element
    reference energies are dropped and its readout MLP is re-initialised for the target; every
    other layer starts pretrained. AdamW with a one-cycle cosine schedule (5 % warm-up), the
    pretrained layers at a lower rate than the new readout (``CHGNET_FINETUNE``), ``epochs``
    passes; Huber loss on the standardised target (regression) or binary cross-entropy on a logit
    (is_metal); the weights of the epoch best on validation are scored on the test set."""
    import copy
    import math

    import torch
    from chgnet.model import CHGNet
    from pymatgen.core import Structure

    kind, s = TASKS[task][1], CHGNET_FINETUNE
    torch.manual_seed(seed)
    model = CHGNet.load(verbose=False)
    model.composition_model = None  # the energies' per-element references: not a part of this target
    for m in model.mlp.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    (train, y_train), (val, y_val), (test, y_test) = (
        ([model.graph_converter(Structure.from_str(rows[i]["cif"], "cif")) for i in p],
         torch.tensor([rows[i][task] for i in p], dtype=torch.float32)) for p in parts)
    mu, sd = (0.0, 1.0) if kind == "classification" else (float(y_train.mean()), float(y_train.std()) or 1.0)
    readout = {id(p) for p in model.mlp.parameters()}
    optimizer = torch.optim.AdamW([{"params": [p for p in model.parameters() if id(p) not in readout]},
                                   {"params": list(model.mlp.parameters())}], weight_decay=0.0)
    per_epoch = math.ceil(len(train) / s["batch_size"])
    steps = epochs * per_epoch  # a warm-up of at least two steps (OneCycleLR divides by its length)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, [s["lr_pretrained"], s["lr_readout"]],
                                                   total_steps=steps, pct_start=max(s["warmup"], 2 / steps))

    def predict(graphs: list) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            out = torch.cat([model(graphs[b:b + 32], task="e")["e"] for b in range(0, len(graphs), 32)])
        model.train()
        return (out > 0).float().numpy() if kind == "classification" else (out * sd + mu).numpy()

    rng, best = np.random.default_rng(seed), None
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train))
        for b in range(0, len(train), s["batch_size"]):
            batch = order[b:b + s["batch_size"]]
            out = model([train[i] for i in batch], task="e")["e"]
            if kind == "classification":
                loss = torch.nn.functional.binary_cross_entropy_with_logits(out, y_train[batch])
            else:
                loss = torch.nn.functional.huber_loss(out, (y_train[batch] - mu) / sd, delta=s["huber_delta"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        score = error(predict(val), y_val.numpy(), kind)
        if best is None or (score > best[0] if kind == "classification" else score < best[0]):
            best = (score, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return {"test": error(predict(test), y_test.numpy(), kind), "val": best[0], "best_epoch": best[1],
            "setting": s}


def advise(task: str, train, seed: int, backbones: list[str] | None = None) -> dict:
    """The advisor's scores on the training split: {backbone: best score over depths, and the depth}."""
    from crystalzoo import rank_backbones

    t0 = time.perf_counter()
    ranking = rank_backbones(train, TASKS[task][0], backbones=backbones, task=TASKS[task][1], seed=seed)
    best: dict = {}
    for r in ranking.rows:
        if r["backbone"] not in best:
            best[r["backbone"]] = {"score": r["score"], "freeze": r["freeze"]}
    return {"scores": best, "scored_weights": {b: weights_of(b) for b in best}, "baseline": ranking.baseline,
            "seconds": time.perf_counter() - t0}


def run(args) -> None:
    import pandas as pd
    import torch

    from crystalzoo import CrystalDataset
    from crystalzoo.data.cache import default_cache_dir

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / "small_data_runs.jsonl"
    if args.only:  # a misspelt method would run nothing, silently
        known = {m for task in args.tasks for m in methods(task, args.recipes, args.externals, args.backbones,
                                                             not args.quick, args.finetune_chgnet)}
        unknown = sorted(set(args.only) - known)
        if unknown:
            raise SystemExit(f"--only {' '.join(unknown)}: not a method of these cells with these options; "
                             f"they have {', '.join(sorted(known))}")
    for task in args.tasks:
        rows = labelled_rows(Path(args.data), task)
        if args.limit:
            rows = rows[: args.limit]
        ds = CrystalDataset.from_dataframe(pd.DataFrame(rows), targets=[task], id_column="mp_id",
                                           progress=not args.quick)
        for size in args.sizes:
            for seed in args.seeds:
                parts = splits(len(rows), size, seed, min(args.test, len(rows) // 3))
                if len(parts[0]) < size:
                    print(f"{task}: {len(rows)} crystals, too few for {size} training crystals: skipped", flush=True)
                    continue
                train, val, test = (ds.subset(p.tolist()) for p in parts)
                cell = f"{task}|{size}|{seed}"
                done = read_runs(runs_file)[0]
                # advised3 picks from every backbone: the advisor then ranks them all
                ranked = None if ADVISED in (args.backbones or [ADVISED]) else args.backbones
                before = done.get(f"{cell}|advisor")
                missing = stale(task, before) if args.advisor and before is not None and ranked is None else []
                if missing:  # a run from before a backbone was registered (or registered again): run again (the
                    # later line is the one read)
                    print(f"{cell}|advisor: did not score {', '.join(missing)} as registered now: run again",
                          flush=True)
                    before = None
                if args.advisor and before is None:
                    _append(runs_file, {"key": f"{cell}|advisor", "backbone": "baseline", "weights": None,
                                        "task": task, "size": size, "seed": seed, "method": "advisor",
                                        **advise(task, train, seed, ranked)})
                for method in methods(task, args.recipes, args.externals, args.backbones, not args.quick,
                                      args.finetune_chgnet):
                    if args.only and method not in args.only:
                        continue
                    key = f"{cell}|{method}"
                    done = read_runs(runs_file)[0]  # another process may have run it meanwhile
                    backbone, blended = uses(task, method), None
                    if backbone == ADVISED:  # the backbones it blends, each of whose weights the run is of
                        if f"{cell}|advisor" not in done:
                            print(f"{key}: no advisor run for the cell (--no-advisor): skipped", flush=True)
                            continue
                        try:
                            blended = advised(task, done[f"{cell}|advisor"])
                        except ValueError as e:  # a stale advisor run with --no-advisor, or one being run again
                            print(f"{key}: {e}: skipped", flush=True)
                            continue
                        backbone = "+".join(blended)
                    # the advisor picks others since, or the zoo has grown: the run reads other backbones now
                    if key in done and done[key]["backbone"] != backbone:
                        print(f"{key}: read {done[key]['backbone']}, now {backbone}: run again", flush=True)
                        del done[key]
                    if key in done:
                        continue
                    weights = weights_of(backbone)
                    t0 = time.perf_counter()
                    if method == "chgnet+finetune":
                        scores = finetune_chgnet(task, rows, parts, seed, args.epochs)
                    elif method.split("+")[-1] in ("lgbm", "hgb", "mlp"):
                        scores = score_external(method, task, rows, parts, default_cache_dir() / "benchmark-features",
                                                seed, (train, val, test))
                    else:
                        scores = score_network(method, task, train, val, test, args.epochs, seed, blended)
                    r = {"key": key, "backbone": backbone, "weights": weights, "task": task, "size": size,
                         "seed": seed, "method": method, **scores, "seconds": time.perf_counter() - t0}
                    _append(runs_file, r)
                    print(f"{key}: test {r['test']:.4f} ({r['seconds']:.0f} s)", flush=True)


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:  # one short append per run: parallel processes may share the file
        f.write(json.dumps(row) + "\n")


def fine_tuned_best(by_method: dict[str, dict[int, float]], seed: int, kind: str) -> dict[str, float]:
    """Each backbone's best test score in one seed of a cell (``by_method``: method → seed → score),
    over the suite's own recipes (not ``+ema`` or ``+blend``)."""
    best: dict = {}
    for m in by_method:
        if "/" in m and not m.endswith("+ema") and "+blend" not in m and seed in by_method[m]:
            b, v = m.split("/")[0], by_method[m][seed]
            best[b] = v if b not in best else (min if kind == "regression" else max)(best[b], v)
    return best


def agreement(scores: dict[str, float], best: dict[str, float], kind: str) -> tuple[float, str, float] | None:
    """How an advisor's ``scores`` (backbone → score, higher is better) agree with the fine-tuned
    ``best`` test scores: the Spearman correlation over the backbones both have, the top pick, and
    its relative gap to the best fine-tuned backbone; None for fewer than 3 backbones."""
    from scipy import stats

    sign = 1 if kind == "regression" else -1
    names = [b for b in best if b in scores]
    if len(names) < 3:
        return None
    rho = stats.spearmanr([scores[b] for b in names], [-sign * best[b] for b in names]).statistic
    pick = max(names, key=lambda b: scores[b])
    top = min(names, key=lambda b: sign * best[b])
    return float(rho), pick, abs(best[pick] - best[top]) / abs(best[top])


def report(out: Path) -> Path:
    """small_data.md (a table per task and size: mean ± std over seeds, paired tests against scratch,
    the best external baseline and the best fine-tuned backbone; the advisor's rank correlation), learning curves and
    the transfer matrix, from the runs file."""
    done = read_runs(out / "small_data_runs.jsonl")[0]
    # a run that read other backbones than its method reads now (the zoo has grown, say) is left out: it runs again
    runs = [r for r in done.values() if r["method"] != "advisor"
            and (r["method"].startswith(ADVISED) or r["backbone"] == uses(r["task"], r["method"]))]
    advice = {(r["task"], r["size"], r["seed"]): r for r in done.values() if r["method"] == "advisor"}
    cells = sorted({(r["task"], r["size"]) for r in runs}, key=lambda c: (list(TASKS).index(c[0]), c[1]))
    lines = ["# Small-data benchmark", "",
             "Written by `python benchmarks/small_data.py --report` from `small_data_runs.jsonl` (the runs of "
             "`python benchmarks/small_data.py --data ../shared/data/mp_crystals.jsonl.gz …`). Test MAE (regression) "
             "or accuracy (is_metal) on a fixed test set per task; mean ± std over seeds (the population std, "
             "ddof 0); Δ: the mean paired "
             "difference, with wins / pairs and the paired t-test's p. External baselines are tuned on the "
             "validation split, the networks are not (same epochs and schedule for all).", ""]
    correlations, cells_near = [], []
    for task, size in cells:
        kind = TASKS[task][1]
        sign = 1 if kind == "regression" else -1  # lower is better for MAE
        by_method: dict[str, dict[int, float]] = {}
        for r in runs:
            if (r["task"], r["size"]) == (task, size):
                by_method.setdefault(r["method"], {})[r["seed"]] = r["test"]
        base = by_method.get("scratch", {})
        # what a user would pip install instead: none of crystalzoo's vectors or descriptors
        externals = {m: v for m, v in by_method.items() if m.split("+")[-1] in ("lgbm", "mlp", "finetune")
                     and "-pooled" not in m and "composition" not in m and "distilled" not in m}
        tuned = [m for m in by_method if "/" in m and "+blend" not in m]  # fine-tuned backbones, every recipe

        def best_of(names: list[str]) -> str | None:  # of those run in the most seeds (not a first seed's luck)
            most = max((len(by_method[m]) for m in names), default=0)
            return min((m for m in names if len(by_method[m]) == most),
                       key=lambda m: sign * np.mean(list(by_method[m].values())), default=None)

        best_ext, best_tuned = best_of(list(externals)), best_of(tuned)
        lines += [f"## {task}, {size} training crystals", "",
                  f"| method | test {'MAE' if kind == 'regression' else 'accuracy'} | Δ vs scratch | Δ vs "
                  f"{best_ext or 'an external baseline (none run)'} | Δ vs {best_tuned or 'a fine-tuned backbone'} |",
                  "|---|---|---|---|---|"]
        order = sorted(by_method, key=lambda m: sign * np.mean(list(by_method[m].values())))
        for m in order:
            v = by_method[m]
            cols = [f"{np.mean(list(v.values())):.4f} ± {np.std(list(v.values())):.4f} ({len(v)})"]
            for ref in (base, externals.get(best_ext, {}), by_method.get(best_tuned, {})):
                if ref and ref is not v and len(set(v) & set(ref)) > 1:
                    d, wins, pairs, p, _ = _paired({s: sign * x for s, x in v.items()}, {s: sign * x for s, x in
                                                                                       ref.items()})
                    relative = 100 * sign * d / np.mean([ref[k] for k in set(v) & set(ref)])
                    cols.append(f"{sign * d:+.4f} ({relative:+.1f} %; {wins}/{pairs}, p {p:.3f})")
                else:
                    cols.append("")
            lines.append(f"| {m} | " + " | ".join(cols) + " |")
        parts = []  # each blend against its own two members, seed by seed (the runs keep their test scores)
        for r_m in (m for m in order if "+blend" in m):
            rows_m = [r for r in runs if (r["task"], r["size"], r["method"]) == (task, size, r_m)]
            for part in ("network", "booster"):
                mine = {r["seed"]: sign * r["test"] for r in rows_m}
                theirs = {r["seed"]: sign * r[part] for r in rows_m}
                if len(mine) > 1:
                    d, wins, pairs, p, _ = _paired(mine, theirs)
                    parts.append(f"{r_m} against its {part} alone: {sign * d:+.4f} "
                                 f"({100 * sign * d / np.mean([abs(x) for x in theirs.values()]):+.1f} %; "
                                 f"{wins}/{pairs}, p {p:.3f})")
        if parts:
            lines += [""] + [f"- {line}" for line in parts]
        rho, picks, seconds, unscored = [], [], [], set()
        for seed in sorted({r["seed"] for r in runs if (r["task"], r["size"]) == (task, size)}):
            a = advice.get((task, size, seed))
            if a is None:
                continue
            missing = stale(task, a)
            if missing:  # scores of other weights than those fine-tuned now: not compared
                unscored |= set(missing)
                continue
            found = agreement({b: v["score"] for b, v in a["scores"].items()},
                              fine_tuned_best(by_method, seed, kind), kind)
            if found:
                rho.append(found[0])
                picks.append(found[1:])
                seconds.append(a["seconds"])
        if rho:
            near = sum(gap <= 0.03 for _, gap in picks)
            if len(rho) == len(SEEDS):  # the summary: complete cells only
                correlations.append(float(np.mean(rho)))
                cells_near.append(near > len(picks) / 2)
            lines += ["", f"advisor: Spearman correlation of its scores with the fine-tuned test scores over the "
                          f"backbones, {np.mean(rho):.2f} (mean over {len(rho)} seeds); its top pick "
                          f"({', '.join(sorted({p for p, _ in picks}))}) within 3 % of the best fine-tuned backbone in "
                          f"{near} of {len(picks)} seeds (gaps {', '.join(f'{100 * g:.1f} %' for _, g in picks)}); "
                          f"{np.mean(seconds):.0f} s per ranking of {size} crystals"]
        if unscored:  # the seeds whose advisor runs are stale are left out above (the cell runs them again)
            lines += ["", f"advisor: stale in some seeds (they did not score {', '.join(sorted(unscored))} as "
                          "registered now) and left out; running the cell again ranks them again"]
        lines.append("")
    if correlations:
        lines.append(f"Advisor over the cells of {len(SEEDS)} seeds: mean Spearman correlation "
                     f"{np.mean(correlations):.2f} (goal ≥ 0.6); its top pick within 3 % of the best in most seeds "
                     f"in {sum(cells_near)} of {len(cells_near)} cells.")
    if runs:
        _plots(out, runs)
        lines += ["", "![learning curves](small_data_curves.png)", "", "![transfer matrix](small_data_matrix.png)"]
    path = out / "small_data.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plots(out: Path, runs: list[dict]) -> None:
    """small_data_curves.png (test score against training size, per task, for scratch, the best
    backbone and the external baselines) and small_data_matrix.png (backbone × task: the mean
    relative gain over scratch at the largest size whose cell is complete: scratch and every
    backbone's ``full`` run there in every seed); both of the methods run in as many seeds as any
    method of the task (5 in the suite) only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crystalzoo.transfer import leakage

    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    mean: dict = {}
    for r in runs:
        mean.setdefault((r["task"], r["method"], r["size"]), []).append(r["test"])
    # only methods run in as many seeds as the task's most (a cell still running would plot its first seeds' mean)
    seeds: dict = {}
    for (task, _, _), v in mean.items():
        seeds[task] = max(seeds.get(task, 0), len(v))
    # a cell (task, size) is complete when scratch and every backbone's ``full`` run (the suite's
    # main recipe) were run in every seed there (a one-off method in fewer seeds does not count)
    partial = {(t, n) for (t, m, n), v in mean.items()
               if len(v) < seeds[t] and (m == "scratch" or m.endswith("/full"))}
    mean = {k: float(np.mean(v)) for k, v in mean.items() if len(v) == seeds[k[0]]}
    tasks = [t for t in tasks if any(k[0] == t for k in mean)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for m in CURVES:  # the same methods in every task (picking each task's best would flatter the networks)
            sizes = sorted(n for t, mm, n in mean if t == task and mm == m)
            if sizes:
                ax.plot(sizes, [mean[(task, m, n)] for n in sizes], ":" if "/" in m else "-", marker="o", label=m)
        ax.set_xscale("log")
        ax.set_xlabel("training crystals")
        ax.set_ylabel("test MAE" if TASKS[task][1] == "regression" else "test accuracy")
        ax.set_title(task)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    fig.tight_layout()
    fig.savefig(out / "small_data_curves.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    backbones = sorted({m.split("/")[0] for _, m, _ in mean if "/" in m} - {ADVISED})  # a blend, not a backbone
    complete = {(t, n) for t, m, n in mean if m == "scratch" and (t, n) not in partial}
    tasks = [t for t in tasks if any(c[0] == t for c in complete)]  # gains in a complete cell only
    if not tasks or not backbones:
        return
    gain, sizes = np.full((len(backbones), len(tasks)), np.nan), [0] * len(tasks)
    for j, task in enumerate(tasks):
        size = sizes[j] = max(n for t, n in complete if t == task)
        base = mean[(task, "scratch", size)]
        sign = 1 if TASKS[task][1] == "regression" else -1
        for i, b in enumerate(backbones):
            scores = [v for (t, m, n), v in mean.items() if t == task and n == size and m.split("/")[0] == b
                      and "+blend" not in m]  # fine-tuned alone
            if scores and base:
                best = min(scores) if sign > 0 else max(scores)
                gain[i, j] = sign * (base - best) / abs(base) * 100
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(tasks), 0.4 * len(backbones) + 1.5))
    limit = np.nanmax(np.abs(gain)) if np.isfinite(gain).any() else 1
    image = ax.imshow(gain, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(backbones)), backbones)
    for i in range(len(backbones)):
        for j in range(len(tasks)):
            # an empty cell: the leakage rule refuses the backbone on the task, or it was not run there
            blank = "leakage" if leakage(backbones[i], TASKS[tasks[j]][0]) else f"not run\nat {sizes[j]}"
            ax.text(j, i, blank if np.isnan(gain[i, j]) else f"{gain[i, j]:+.0f}%", ha="center", va="center",
                    fontsize=7)
    fig.colorbar(image, label="gain over scratch, %")
    fig.tight_layout()
    fig.savefig(out / "small_data_matrix.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_crystals.jsonl.gz"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--sizes", nargs="+", type=int, default=[100, 300, 1000, 3000])
    p.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--backbones", nargs="+", default=None, help="registered backbones (default: every one)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--test", type=int, default=2000, help="crystals in each task's fixed test set")
    p.add_argument("--limit", type=int, default=None, help="the first N labelled crystals of each task only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-externals", dest="externals", action="store_false")
    p.add_argument("--no-advisor", dest="advisor", action="store_false")
    p.add_argument("--only", nargs="+", default=None, metavar="METHOD",
                   help="run only these of each cell's methods (e.g. zoo-pooled+composition+hgb)")
    p.add_argument("--finetune-chgnet", action="store_true",
                   help="CHGNet fine-tuned end to end too (chgnet+finetune; about an hour per seed at 1,000 crystals)")
    p.add_argument("--report", action="store_true", help="write the tables and plots from the runs file, run nothing")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        import tempfile

        from crystalzoo.data import bundled_dataset

        args.data, args.out = str(bundled_dataset("mp-band-gap")), tempfile.mkdtemp()
        args.tasks, args.sizes, args.seeds, args.epochs, args.limit, args.test = (["band_gap"], [40], [0, 1], 2,
                                                                                   300, 100)
        # the network and the booster; the blend of the advisor's three
        args.recipes, args.backbones = ["full+blend"], ["formation", "bulk", "shear", ADVISED]
        args.externals = _has("lightgbm") and _has("matminer")
    if not args.report:
        run(args)
    print(f"wrote {report(Path(args.out))}")
    if args.quick:
        print("(--quick: goal not checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
