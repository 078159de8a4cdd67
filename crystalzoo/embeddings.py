"""Representations: crystal vectors (and atom vectors) from any backbone, for your own models
(a regression, a clustering, a map of a chemical space) or the scikit-learn featurizer
(:mod:`crystalzoo.featurizer`).

Three kinds of vectors, chosen with ``kind``:

* ``"hidden"`` (default): the crystal vector the head sees: the atom vectors after every
  convolution, mean-pooled over the crystal, through the hidden layer(s)
  (``backbone.out_features`` values; 32 for ``formation``);
* ``"pooled"``: the mean over the crystal's atoms of the atom vectors after the last
  convolution (or after ``layer`` convolutions), before the hidden layers (``atom_fea_len``
  values; 64 for ``formation``);
* ``"atoms"``: one vector per atom after ``layer`` convolutions (0: the embedding alone;
  default: all), one array per crystal.

Example::

    >>> from crystalzoo import load_model
    >>> model = load_model("formation")
    >>> model.embed(["tests/data/cifs/1000041.cif", "tests/data/cifs/1000050.cif"]).shape
    (2, 32)
    >>> [a.shape for a in model.embed(["tests/data/cifs/1000041.cif"], kind="atoms", layer=2)]
    [(8, 64)]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .crystal_graph import mean_per_crystal
from .errors import ConfigError
from .graphs import crystal_list, iter_batches

KINDS = ("hidden", "pooled", "atoms")


def _backbone(model: Any):
    """The backbone of a model (or the backbone itself); :class:`ConfigError` for anything else."""
    backbone = getattr(model, "backbone", model)
    if not all(hasattr(backbone, a) for a in ("atom_features", "readout", "stages", "graph_settings")):
        raise ConfigError(f"embed takes a model or backbone (load_model(name), load_backbone(name)), not a "
                          f"{type(model).__name__}")
    return backbone


def embed(model: Any, structures: Sequence[Any], *, kind: str = "hidden", layer: int | None = None,
          batch_size: int | None = None, n_jobs: int = 1, progress: bool = False) -> np.ndarray | list[np.ndarray]:
    """Vectors of ``structures`` (pymatgen structures, CIF paths or CIF texts; a list of them,
    or one) from the backbone of ``model`` (a model or a backbone, in any state: the
    backbone runs in eval mode here and is left as it was).

    ``kind``: ``"hidden"``, ``"pooled"`` or ``"atoms"`` (see the module docstring). ``layer``:
    the number of convolutions the atom vectors have been through, 0 … n_conv, for
    ``"pooled"`` and ``"atoms"`` (default: all). Returns float32 arrays: (n, width) for crystal
    vectors; for ``"atoms"`` a list of (n_atoms_i, width) arrays. ``batch_size`` and ``n_jobs``
    as for ``predict``.
    """
    backbone = _backbone(model)
    if kind not in KINDS:
        raise ConfigError(f"kind = {kind!r}: valid: 'hidden' (the crystal vector the head sees), 'pooled' (mean of "
                          "the atom vectors) or 'atoms' (one vector per atom)")
    n_conv = len(backbone.stages()) - 1
    if layer is not None:
        if kind == "hidden":
            raise ConfigError("layer is for kind='pooled' or 'atoms'; the hidden vector comes after every convolution")
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer <= n_conv:
            raise ConfigError(f"layer = {layer!r}: this backbone has {n_conv} convolutions, so layer is an integer "
                              f"from 0 (the embedding alone) to {n_conv} (after every convolution)")
        layer = int(layer)
    structures = crystal_list(structures, "embed")
    try:
        device = next(backbone.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    if batch_size is None:
        batch_size = 64 if device.type == "cpu" else 512
    was_training = backbone.training
    backbone.eval()
    out: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for g in iter_batches(structures, backbone.graph_settings, batch_size, n_jobs, progress):
                g = g.to(device)
                atoms = backbone.atom_features(g, upto=layer)
                if kind == "atoms":
                    out.extend(a.cpu() for a in torch.split(atoms, g.n_atoms.tolist()))
                elif kind == "pooled":
                    out.append(mean_per_crystal(g, atoms).cpu())
                else:
                    out.append(backbone.readout(g, atoms).cpu())
    finally:
        backbone.train(was_training)
    if out and out[0].dtype == torch.bfloat16:  # numpy has no bfloat16
        out = [o.float() for o in out]
    if kind == "atoms":
        return [a.numpy() for a in out]
    if not out:
        width = backbone.out_features if kind == "hidden" else 0
        return np.zeros((0, width), np.float32)
    return torch.cat(out).numpy()
