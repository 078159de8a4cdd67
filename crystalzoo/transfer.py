"""Which backbone for my data? Transferability scores on frozen vectors, before any training.

:func:`rank_backbones` scores every registered backbone at every freeze depth on a user's
labelled crystals: the mean-pooled atom vectors after the embedding and k convolutions (what a
model fine-tuned with ``freeze=k`` starts from) are scored by their evidence for the labels:

- regression: LogME (K. You, Y. Liu, J. Wang and M. Long, *LogME: Practical Assessment of
  Pre-trained Models for Transfer Learning*, ICML 2021), the log marginal likelihood per crystal
  of a Bayesian linear model on the vectors, its prior and noise precisions set by evidence
  maximisation (:func:`logme`);
- classification: the H-score (Y. Bao et al., ICIP 2019), with a small ridge so that it stays
  defined for collinear vectors (:func:`h_score`).

The same vectors of a CGCNN with random weights are the baseline: a backbone that scores no
higher is unlikely to help (negative transfer), and the ranking says so. A backbone whose
pretraining targets hold the target (or the same quantity under another name: :func:`leakage`)
is left out: its score would measure what it was trained on, not transfer.

Example::

    >>> from crystalzoo.transfer import rank_backbones
    >>> ranking = rank_backbones("bundled:mp-band-gap", "band_gap", limit=300)  # doctest: +SKIP
    >>> print(ranking)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError, DataError

#: quantities that are one label under several names (the manifest's pretraining targets, the
#: shared data's columns, Matbench's), written as :func:`normal_name` writes them; a target is
#: leaked to a backbone pretrained on any name of its group
SAME_QUANTITY = (
    # a metal is a crystal of band gap 0; JARVIS's gaps are band gaps too
    {"band_gap", "is_metal", "gap_pbe", "gap", "bandgap", "optb88vdw_bandgap", "mbj_bandgap", "hse_gap"},
    {"log10_bulk_modulus", "log10_k_vrh", "k_vrh", "bulk_modulus", "bulk_modulus_kv"},
    {"log10_shear_modulus", "log10_g_vrh", "g_vrh", "shear_modulus", "shear_modulus_gv"},
    {"efermi", "fermi_energy", "e_fermi"},
    {"formation_energy_per_atom", "formation_energy", "e_form", "formation_energy_peratom"},
    {"energy_per_atom", "total_energy_per_atom", "total_energy", "optb88vdw_total_energy"},
    {"poisson_ratio"},
)

#: a target computed from other labels: leaked to a backbone pretrained on all of them. A formation
#: energy is the total energy less its elements' reference energies (one constant per element), so
#: each of the two is the other plus a sum over the composition
DERIVED = {"poisson_ratio": (SAME_QUANTITY[1], SAME_QUANTITY[2]), "formation_energy_per_atom": (SAME_QUANTITY[5],),
           "energy_per_atom": (SAME_QUANTITY[4],)}

#: words a label's name may end with that give its unit, not its quantity (band_gap_eV, e_form_eV_per_atom)
UNIT_WORDS = {"ev", "mev", "gpa", "atom", "per", "peratom"}


def normal_name(name: str) -> str:
    """A label's name as the leakage rule compares names: lower case, ``log10:X`` and
    ``log10(X)`` as ``log10_x``, units left out (``(eV)``, ``[GPa]``, a trailing ``_eV`` or
    ``_per_atom``), any other run of signs or spaces as one ``_``.

    Example::

        >>> normal_name("log10(K_VRH)"), normal_name("LOG10:k_vrh"), normal_name("band_gap (eV)")
        ('log10_k_vrh', 'log10_k_vrh', 'band_gap')
    """
    import re

    text = re.sub(r"^\s*log10\s*[:(]\s*([^)]*)\)?", r"log10_\1", name.strip().lower())
    text = re.sub(r"[(\[][^)\]]*[)\]]", " ", text)  # a unit in brackets
    parts = [p for p in re.split(r"[^0-9a-z]+", text) if p]
    while len(parts) > 1 and parts[-1] in UNIT_WORDS:
        parts.pop()
    return "_".join(parts)


def _group(name: str) -> set[str]:
    name = normal_name(name)
    return next((g for g in _NORMAL_GROUPS if name in g), {name})


_NORMAL_GROUPS = [{normal_name(n) for n in group} for group in SAME_QUANTITY]


def leakage(backbone: str, target: str) -> str | None:
    """Why scoring the registered ``backbone`` on ``target`` would not measure transfer (its
    manifest's pretraining targets, with a distilled student's teacher's ``teacher_targets``, hold
    the target, the same quantity under another name, or every label the target is computed from),
    or ``None``.

    Example::

        >>> leakage("band-gap", "is_metal")
        "band-gap was pretrained on ['band_gap'], the same quantity as is_metal"
        >>> leakage("formation", "band_gap") is None
        True
        >>> leakage("total-energy", "formation_energy_per_atom")
        "total-energy was pretrained on ['energy_per_atom'], from which formation_energy_per_atom is computed"
    """
    from .registry import get_backbone_info

    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"target = {target!r}: the name of a label, e.g. 'band_gap'")
    info = get_backbone_info(backbone)
    teacher = info.training_data.get("teacher_targets", [])
    if isinstance(teacher, str):  # one name, not its letters
        teacher = [teacher]
    group = _group(target)
    derived = next((parts for name, parts in DERIVED.items() if normal_name(name) in group), None)
    for trained, whose in ((list(info.targets), f"{backbone} was pretrained on"),
                           (list(teacher), f"{backbone}'s teacher (it was distilled from) was trained on")):
        known = {normal_name(t) for t in trained}
        if group & known:
            return f"{whose} {trained}, the same quantity as {target}"
        if derived and all({normal_name(n) for n in part} & known for part in derived):
            return f"{whose} {trained}, from which {target} is computed"
    return None


def check_no_leakage(backbone: str, target: str) -> None:
    """:class:`ConfigError` where :func:`leakage` finds the backbone pretrained on the target."""
    why = leakage(backbone, target)
    if why:
        raise ConfigError(f"{why}: a transfer score of it on {target} would not be a test of transfer; leave it out")


def logme(features: np.ndarray, labels: np.ndarray, iterations: int = 100, tol: float = 1e-6) -> float:
    """The LogME evidence of ``features`` (n, d) for ``labels`` (n,) or (n, t): the log
    marginal likelihood per sample of y = F w + ε, w ~ N(0, α⁻¹ I), ε ~ N(0, β⁻¹ I), at the
    α and β that maximise it (fixed-point iteration on the singular values of F). Labels are
    standardised first; several targets give the mean over them. Higher is better.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> y = rng.normal(size=200)
        >>> informative = np.c_[y + 0.1 * rng.normal(size=200), rng.normal(size=(200, 7))]
        >>> logme(informative, y) > logme(rng.normal(size=(200, 8)), y)
        True
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if f.ndim != 2 or len(f) != len(y) or len(f) < 3:
        raise DataError(f"logme needs (n, d) features and n labels, n ≥ 3; got {f.shape} and {y.shape}")
    if not (np.isfinite(f).all() and np.isfinite(y).all()):
        raise DataError("logme needs finite features and labels (drop the crystals without a label first)")
    n, d = f.shape
    scale = float(np.sqrt(np.mean(f**2)))
    if scale > 0:  # the evidence does not depend on the features' scale (α takes it): one bound for all
        f = f / scale
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma2 = s**2
    scores = []
    for column in y.T:
        std = column.std()
        if not np.isfinite(std):
            raise DataError("logme needs labels within float64's range: their spread overflows; rescale them")
        if std == 0:
            raise DataError("logme needs labels that vary: every label is the same")
        column = (column - column.mean()) / std
        scores.append(_evidence(u, sigma2, column, n, d, iterations, tol)[0])
    return float(np.mean(scores))


def _evidence(u: np.ndarray, sigma2: np.ndarray, y: np.ndarray, n: int, d: int, iterations: int,
              tol: float) -> tuple[float, float, float]:
    """(evidence per sample, α, β) at the fixed point, for the thin SVD F = U diag(σ) Vᵀ."""
    z = u.T @ y  # y's coordinates in the span of F
    z2 = z**2
    outside = max(float(y @ y - z2.sum()), 0.0)  # |y|² outside that span
    alpha, beta = 1.0, 1.0

    def terms(alpha: float, beta: float) -> tuple[float, float, float]:
        shrink = alpha / (alpha + beta * sigma2)  # in (0, 1]: written so that nothing overflows
        gamma = float((1 - shrink).sum())
        m2 = float(((1 - shrink) ** 2 * z2 / np.maximum(sigma2, 1e-300)).sum())  # |m|²
        residual = float((shrink**2 * z2).sum()) + outside  # |y - F m|²
        return gamma, m2, residual

    for _ in range(iterations):
        gamma, m2, residual = terms(alpha, beta)
        # bounded: a precision of 1e12 is "no weight" (or "no noise") already
        new_alpha = min(max(gamma / max(m2, 1e-300), 1e-12), 1e12)
        new_beta = min(max((n - gamma) / max(residual, 1e-300), 1e-12), 1e12)
        done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    _, m2, residual = terms(alpha, beta)
    log_det = float(np.log(alpha + beta * sigma2).sum()) + (d - len(sigma2)) * math.log(alpha)
    evidence = (n * math.log(beta) + d * math.log(alpha) - n * math.log(2 * math.pi) - beta * residual - alpha * m2
                - log_det) / 2
    return evidence / n, alpha, beta


def h_score(features: np.ndarray, labels: np.ndarray, ridge: float = 1e-3) -> float:
    """The H-score of ``features`` (n, d) for class ``labels`` (n,): tr(cov(f)⁻¹ cov(E[f | y])),
    the share of the features' variance the classes explain, with ``ridge`` × the mean
    variance added to cov(f) (the regularised form: collinear vectors keep it finite). Higher is
    better.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 300)
        >>> h_score(np.c_[y + 0.3 * rng.normal(size=300), rng.normal(size=(300, 5))], y) > \\
        ...     h_score(rng.normal(size=(300, 6)), y)
        True
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.ndim != 1 or len(f) != len(y) or len(np.unique(y)) < 2:
        raise DataError(f"h_score needs (n, d) features and n class labels (one per crystal) of two classes or "
                        f"more; got features {f.shape} and labels {y.shape}")
    if not np.isfinite(f).all():
        raise DataError("h_score needs finite features")
    scale = float(np.sqrt(np.mean(f**2)))
    if scale > 0:  # the score does not depend on the features' scale: computed at scale 1, nothing overflows
        f = f / scale
    f = f - f.mean(0)
    cov = f.T @ f / len(f)
    cov += ridge * max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
    means = np.zeros_like(f)
    for c in np.unique(y):
        means[y == c] = f[y == c].mean(0)
    between = means.T @ means / len(f)
    return float(np.trace(np.linalg.solve(cov, between)))


@dataclass
class Ranking:
    """What :func:`rank_backbones` found: ``rows`` best first (backbone, freeze depth k, score),
    the score of the same vectors of a random-weight CGCNN (``baseline``, its best depth), the
    backbones left out and why (``excluded``), and how long it took."""

    target: str
    task: str
    score_name: str
    rows: list[dict[str, Any]]
    baseline: float
    excluded: dict[str, str] = field(default_factory=dict)
    crystals: int = 0
    seconds: float = 0.0
    baseline_freeze: int = 0

    @property
    def best(self) -> dict[str, Any]:
        return self.rows[0]

    @property
    def warning(self) -> str | None:
        """Set when no backbone scores above the random-weight baseline: transfer is then
        unlikely to beat training from scratch."""
        if self.best["score"] > self.baseline:
            return None
        return (f"no backbone scores above random-weight features ({self.score_name} {self.baseline:.3f}): "
                "pretraining is unlikely to help on this target (negative transfer is likely); compare with "
                f"training from scratch, finetune(data, target, backbone=None{self._task_argument})")

    @property
    def recommendation(self) -> str:
        """The call that fine-tunes the best-scoring backbone from its best depth."""
        best = self.best
        return (f"finetune(data, {self.target!r}, backbone={best['backbone']!r}, freeze={best['freeze']}"
                f"{self._task_argument})")

    @property
    def _task_argument(self) -> str:
        """``, task='classification'`` for a ranking of classes (the call would otherwise train a
        regression on the class labels), else nothing."""
        return ", task='classification'" if self.task == "classification" else ""

    def to_frame(self):
        """The rows, then the random-weight baseline's (backbone ``(random weights)``), as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([*self.rows, {"backbone": "(random weights)", "freeze": self.baseline_freeze,
                                          "score": self.baseline}])

    def __str__(self) -> str:
        lines = [f"{self.crystals} crystals, target {self.target} ({self.task}); {self.score_name} of the frozen "
                 f"vectors after k convolutions (higher is better), {self.seconds:.1f} s", "",
                 f"{'backbone':22s} {'freeze':>6s} {self.score_name:>9s}"]
        lines += [f"{r['backbone']:22s} {r['freeze']:6d} {r['score']:9.3f}" for r in self.rows]
        lines += [f"{'(random weights)':22s} {self.baseline_freeze:6d} {self.baseline:9.3f}", "",
                  f"recommended: {self.recommendation}"]
        if self.excluded:
            lines.append("left out: " + "; ".join(self.excluded.values()))
        if self.warning:
            lines.append("warning: " + self.warning)
        return "\n".join(lines)


def rank_backbones(data: Any, target: str, *, backbones: Sequence[str] | None = None, task: str = "regression",
                   limit: int | None = None, seed: int = 0, progress: bool = False) -> Ranking:
    """Score the registered ``backbones`` (default: every registered one, of every family) at every freeze depth
    on the labelled crystals of ``data`` (a ``CrystalDataset``, or anything
    :func:`~crystalzoo.data.dataset.read_dataset` reads: a JSON-lines or CSV file, a CGCNN
    folder, ``bundled:NAME``) for ``target``; ``limit``: the first crystals only. Seconds for
    1,000 crystals on 2 CPU cores: the graphs are built once, and each backbone runs over them
    once per depth. Crystals without a label are left out. Returns a :class:`Ranking`."""
    import time
    from pathlib import Path

    import torch

    from .checks import check_count, class_labels
    from .data.bundled import BUNDLED_PREFIX
    from .data.dataset import CrystalDataset, read_dataset
    from .data.targets import split_target
    from .embeddings import embed
    from .models.architectures import DEFAULT_ARCHITECTURE, get_architecture
    from .models.factory import load_backbone
    from .registry import list_backbones

    if task not in ("regression", "classification"):
        raise ConfigError(f"task = {task!r}: 'regression' (LogME) or 'classification' (H-score)")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"target = {target!r}: the name of one label, e.g. 'band_gap' (or 'log10:k_vrh')")
    label = split_target(target)[0]  # log10:k_vrh is read as the label log10_k_vrh
    t0 = time.perf_counter()
    if isinstance(backbones, str):
        backbones = [backbones]
    registered = list_backbones()
    names = list(dict.fromkeys(backbones)) if backbones is not None else registered
    if not names:
        raise ConfigError("backbones is empty: name registered backbones (crystalzoo list), or leave it out for all")
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ConfigError(f"rank scores registered backbones (their manifest says what they were pretrained on, for "
                          f"the leakage rule); not registered: {unknown}. Registered: {registered}")
    excluded = {n: why for n in names if (why := leakage(n, label))}
    names = [n for n in names if n not in excluded]
    if not names:
        raise ConfigError(f"every backbone given was pretrained on {target}: {list(excluded.values())}")
    if limit is not None:
        check_count(limit, "limit")
    if isinstance(data, CrystalDataset):
        ds = data
    else:  # JSON lines read the first crystals only; other formats are cut after reading
        jsonl = str(data).startswith(BUNDLED_PREFIX) or Path(str(data)).suffix.lower() in (".jsonl", ".json", ".gz")
        ds = read_dataset(data, [target], progress=progress, **({"limit": limit} if limit and jsonl else {}))
    if limit is not None and len(ds) > limit:
        ds = ds.subset(range(limit))
    if label not in ds.targets:
        raise DataError(f"the data has the targets {ds.targets}, not {target!r}")
    ds = ds.select_targets([label])
    labelled = np.flatnonzero(~np.isnan(ds.labels[:, 0]))
    if len(labelled) < 10:
        raise DataError(f"{len(labelled)} crystals have a {target} label: ranking needs at least 10")
    ds = ds.subset(labelled)
    labels = ds.labels[:, 0]
    if task == "classification":
        labels = class_labels(labels, target, "the H-score")

    def score(vectors: np.ndarray) -> float:
        return h_score(vectors, labels) if task == "classification" else logme(vectors, labels)

    def depths(backbone) -> list[tuple[int, float]]:
        n_conv = len(backbone.stages()) - 1
        return [(k, score(embed(backbone, ds, kind="pooled", layer=k))) for k in range(n_conv + 1)]

    rows = []
    for name in names:
        backbone = load_backbone(name)
        rows += [{"backbone": name, "freeze": k, "score": s} for k, s in depths(backbone)]
    with torch.random.fork_rng():  # the caller's random state is left as it was
        torch.manual_seed(seed)
        family = get_architecture(DEFAULT_ARCHITECTURE)  # the default family and shape
        untrained = family.from_config({}, ds.with_atom_features(family.atom_feature_set).settings).eval()
    baseline_freeze, baseline = max(depths(untrained), key=lambda ks: ks[1])
    rows.sort(key=lambda r: -r["score"])
    return Ranking(target, task, "LogME" if task == "regression" else "H-score", rows, baseline, excluded, len(ds),
                   time.perf_counter() - t0, baseline_freeze)
