"""Convert the original CGCNN checkpoints (torch pickles) to safetensors, once, offline.

    python scripts/convert_cgcnn.py ../shared/reference/cgcnn-original/pre-trained

Writes ``crystalzoo/weights/<name>.safetensors`` and the matching entries of
``crystalzoo/weights_manifest.json`` (sha256, size, config, normaliser, training-set size,
validation metric from the checkpoint). The pickles are read with ``weights_only=False``
because they hold argparse values: only run this on the authors' files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crystalzoo.maintainer import update_entry, write_manifest  # noqa: E402
from crystalzoo.manifest import read_manifest  # noqa: E402
from crystalzoo.models import BackboneConfig, CrystalModel, CGCNNBackbone, make_head  # noqa: E402
from crystalzoo.serialization import save_weights  # noqa: E402

XIE_CITATION = (
    "T. Xie and J. C. Grossman, Crystal Graph Convolutional Neural Networks for an Accurate and "
    "Interpretable Prediction of Material Properties, Phys. Rev. Lett. 120, 145301 (2018); "
    "data: A. Jain et al., The Materials Project, APL Materials 1, 011002 (2013)"
)
LICENSE = "MIT, Copyright (c) 2018 Tian Xie (see crystalzoo/weights/LICENSE-cgcnn)"

# registry name -> (checkpoint file, target, units, description)
ORIGINALS = {
    "formation": ("formation-energy-per-atom", "formation_energy_per_atom", "eV/atom",
                  "Formation energy per atom"),
    "bulk": ("bulk-moduli", "log10_bulk_modulus", "log10(GPa)", "Bulk modulus (Voigt-Reuss-Hill), log10 GPa"),
    "shear": ("shear-moduli", "log10_shear_modulus", "log10(GPa)", "Shear modulus (Voigt-Reuss-Hill), log10 GPa"),
    "band-gap": ("band-gap", "band_gap", "eV", "PBE band gap (trained on semiconductors only)"),
    "fermi-energy": ("efermi", "efermi", "eV", "Fermi energy"),
    "total-energy": ("final-energy-per-atom", "energy_per_atom", "eV/atom", "Total DFT energy per atom"),
    "poisson-ratio": ("poisson-ratio", "poisson_ratio", "", "Poisson ratio"),
    "metal-classifier": ("semi-metal-classification", "is_metal", "", "Metal (1) vs semiconductor (0)"),
}
DATASETS = {
    "20170419_high_accu.json": ("Materials Project, 2017-04-19 snapshot (CGCNN paper)", "mp-ids-46744.csv"),
    "20170419_semi.json": ("Materials Project semiconductors, 2017-04-19 snapshot (CGCNN paper)", "mp-ids-27430.csv"),
    "20170419_mecha.json": ("Materials Project elastic data, 2017-04-19 snapshot (CGCNN paper)", "mp-ids-3402.csv"),
}


def convert(path: Path, name: str) -> tuple[CrystalModel, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    args = ckpt["args"]
    _, target, units, description = ORIGINALS[name]
    config = BackboneConfig(atom_fea_len=args["atom_fea_len"], n_conv=args["n_conv"],
                            h_fea_len=args["h_fea_len"], n_h=args["n_h"])
    backbone = CGCNNBackbone(config)
    if args["task"] == "classification":
        head = make_head({"task": "classification", "targets": [target],
                          "classes": ["semiconductor", "metal"]}, config.h_fea_len)
    else:
        head = make_head({"task": "regression", "targets": [target], "units": [units]}, config.h_fea_len)
        head.mean.fill_(float(ckpt["normalizer"]["mean"]))
        head.std.fill_(float(ckpt["normalizer"]["std"]))
    model = CrystalModel(backbone, head)
    state = {}
    for key, value in ckpt["state_dict"].items():
        state[("head." if key.startswith("fc_out") else "backbone.") + key] = value
    for key, value in model.state_dict().items():  # buffers newer torch adds, and the normaliser
        if key.endswith("num_batches_tracked") or key in ("head.mean", "head.std"):
            state.setdefault(key, value)
    model.load_state_dict(state, strict=True)

    dataset_file = Path(args["data_options"][0]).name
    data_name, id_list = DATASETS[dataset_file]
    metric = ({"name": "roc_auc", "value": round(float(ckpt["best_mae_error"]), 4), "units": ""}
              if args["task"] == "classification" else
              {"name": "mae", "value": round(float(ckpt["best_mae_error"]), 4), "units": units})
    metric.update(dataset=data_name, split="validation",
                  note=f"best validation score stored in the original checkpoint (epoch {ckpt['epoch']})")
    info = {
        "description": description,
        "source": f"original CGCNN checkpoint pre-trained/{path.name} (txie-93/cgcnn), converted by scripts/convert_cgcnn.py",
        "license": LICENSE,
        "citation": XIE_CITATION,
        "training_data": {
            "dataset": data_name,
            "mp_ids": f"{id_list} of the CGCNN repository",
            "train": args["train_size"], "val": args["val_size"], "test": args["test_size"],
        },
        "metrics": [metric],
    }
    return model, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the original pre-trained/ folder")
    args = parser.parse_args()
    manifest = read_manifest()
    weights_dir = ROOT / "crystalzoo" / "weights"
    for name, (stem, *_rest) in ORIGINALS.items():
        model, info = convert(args.folder / f"{stem}.pth.tar", name)
        filename = f"cgcnn-{name}.safetensors"
        save_weights(model, weights_dir / filename)
        update_entry(manifest, name, model, weights_dir / filename, bundled=True, **info)
        print(f"{name:18s} <- {stem}.pth.tar")
    write_manifest(manifest)


if __name__ == "__main__":
    main()
