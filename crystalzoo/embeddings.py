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
    >>> from crystalzoo import example_structures
    >>> model.embed(example_structures()[:2]).shape
    (2, 32)
    >>> from crystalzoo import example_structures
    >>> [a.shape for a in model.embed(example_structures()[:1], kind="atoms", layer=2)]
    [(8, 64)]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .checks import check_finite_predictions
from .composition import element_statistics
from .errors import ConfigError
from .graphs.building import crystal_batches
from .graphs.crystal_graph import mean_per_crystal

KINDS = ("hidden", "pooled", "atoms")


def _backbone(model: Any):
    """The backbone of a model (or the backbone itself); :class:`ConfigError` for anything else."""
    members = getattr(model, "members", None)
    if members is not None and not hasattr(model, "backbone"):  # an ensemble
        raise ConfigError(f"an ensemble's {len(members)} members give different crystal vectors: embed with one of "
                          "them, e.g. model.members[0]")
    backbone = getattr(model, "backbone", model)
    if not all(hasattr(backbone, a) for a in ("atom_features", "readout", "stages", "graph_settings")):
        raise ConfigError(f"embed takes a model or backbone (load_model(name), load_backbone(name)), not a "
                          f"{type(model).__name__}")
    return backbone


def embed(model: Any, structures: Sequence[Any], *, kind: str = "hidden", layer: int | None = None,
          batch_size: int | None = None, n_jobs: int = 1, progress: bool = False,
          composition: bool = False) -> np.ndarray | list[np.ndarray]:
    """Vectors of ``structures`` (pymatgen structures, CIF paths or CIF texts; a list of them,
    or one; or a :class:`~crystalzoo.data.CrystalDataset`, whose cached graphs are used) from
    the backbone of ``model`` (a model or a backbone, in any state: the backbone runs in eval
    mode here and is left as it was).

    ``kind``: ``"hidden"``, ``"pooled"`` or ``"atoms"`` (see the module docstring). ``layer``:
    the number of convolutions the atom vectors have been through, 0 … n_conv, for
    ``"pooled"`` and ``"atoms"`` (default: all). Returns float32 arrays: (n, width) for crystal
    vectors; for ``"atoms"`` a list of (n_atoms_i, width) arrays. ``batch_size`` and ``n_jobs``
    as for ``predict``. ``composition=True`` appends the composition descriptors of
    :mod:`crystalzoo.composition` to each crystal vector (columns ``COMPOSITION_NAMES``).

    Example::

        >>> from crystalzoo import example_structures, load_backbone
        >>> embed(load_backbone("formation"), example_structures()[:2], kind="pooled", composition=True).shape
        (2, 196)
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
    if not isinstance(composition, bool) or (composition and kind == "atoms"):
        raise ConfigError(f"composition = {composition!r}: True appends a crystal's composition descriptors to its "
                          "vector (kind 'hidden' or 'pooled'), False (the default) leaves them out")
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
            for g in crystal_batches(structures, backbone.graph_settings, batch_size, n_jobs, progress, "embed"):
                g = g.to(device)
                atoms = backbone.atom_features(g, upto=layer)
                if kind == "atoms":
                    out.extend(a.cpu() for a in torch.split(atoms, g.n_atoms.tolist()))
                elif kind == "pooled":
                    out.append(mean_per_crystal(g, atoms).cpu())
                else:
                    out.append(backbone.readout(g, atoms).cpu())
                if composition:
                    described = element_statistics(g.z.cpu().numpy(), g.crystal.cpu().numpy(), g.n_crystals)
                    out[-1] = torch.cat([out[-1].float(), torch.from_numpy(described)], dim=1)
    finally:
        backbone.train(was_training)
    if out and out[0].dtype == torch.bfloat16:  # numpy has no bfloat16
        out = [o.float() for o in out]
    if kind == "atoms":
        finite = np.array([bool(torch.isfinite(a).all()) for a in out])  # per crystal
        check_finite_predictions(np.where(finite, 0.0, np.nan)[None], "gives an atom vector")
        return [a.numpy() for a in out]
    if out:
        check_finite_predictions(torch.cat(out).numpy()[None], "gives a crystal vector")
    if not out:  # no crystal: the width of one, from a one-atom crystal
        from pymatgen.core import Lattice, Structure

        one = embed(backbone, [Structure(Lattice.cubic(3.0), ["Na"], [[0, 0, 0]])], kind=kind, layer=layer,
                    composition=composition)
        return np.zeros((0, one.shape[1]), one.dtype)
    return torch.cat(out).numpy()


#: the table formats ``write_table`` writes, by file name ending
VECTOR_FORMATS = (".csv", ".npz", ".parquet")


def check_vector_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The path of a table of vectors to write, checked before any work
    (:func:`crystalzoo.tables.check_table_path`)."""
    from .tables import check_table_path as check

    return check(path, overwrite, formats=VECTOR_FORMATS, example="vectors")


def write_table(path: str | os.PathLike, ids: Sequence[str], vectors: np.ndarray, prefix: str = "hidden",
                overwrite: bool = False, names: Sequence[str] = ()) -> Path:
    """Write crystal vectors with their ids: CSV (a column ``id``, then ``{prefix}_0`` …, and
    the last columns named by ``names``, e.g. the composition descriptors'), NPZ (arrays
    ``ids`` and ``vectors``) or Parquet (the CSV's columns; needs pyarrow). Written whole or
    not at all.

    Example::

        >>> write_table("/tmp/v.csv", ["a", "b"], np.eye(2, dtype=np.float32), overwrite=True).name
        'v.csv'
    """
    import pandas as pd

    from .files import atomic_write
    from .tables import write_frame

    path = check_vector_path(path, overwrite)
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        raise ConfigError("write_table takes crystal vectors, a 2-D array (one row per crystal), not "
                          f"{type(vectors).__name__ if not isinstance(vectors, np.ndarray) else f'{vectors.ndim}-D'}")
    if isinstance(ids, str) or len(ids) != len(vectors):
        raise ConfigError(f"write_table takes one id per crystal ({len(vectors)}), got {str(ids)[:60]}")
    kind = path.suffix.lower()
    if kind == ".npz":
        altered = [i for i in map(str, ids) if i.endswith("\0")]
        if altered:  # numpy's string arrays drop trailing NUL characters
            raise ConfigError(f"id {altered[0]!r} ends with a NUL character, which an NPZ file cannot keep (the id would "
                              "change); write .csv or .parquet, or give ids without it")

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, ids=np.array(ids, dtype=str), vectors=vectors)
        atomic_write(path, write)
        return path
    names = list(names)
    if len(names) > vectors.shape[1]:
        raise ConfigError(f"write_table: {len(names)} column names for {vectors.shape[1]} values per crystal")
    table = pd.DataFrame(vectors, columns=[f"{prefix}_{i}" for i in range(vectors.shape[1] - len(names))] + names)
    table.insert(0, "id", list(ids))
    return write_frame(table, path, overwrite=True)  # checked above
