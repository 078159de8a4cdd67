"""A tiny external test of the bulk-modulus backbones, without any training: ASE's ``dcdft``
collection (the Delta-test crystals of the elements, Lejaeghere et al., Science 351, aad3000
(2016), shipped inside ASE) gives 71 elemental crystals with WIEN2k and, for most, experimental
bulk moduli. ``bulk`` (the original CGCNN checkpoint, log10 K in GPa) and ``combined`` (its
``log10_k_vrh`` output) predict them as registered.

    python benchmarks/dcdft_bulk.py            # needs the [ase] extra
    python benchmarks/dcdft_bulk.py --quick    # CI: the same (it takes seconds)

Reported: MAE in log10(GPa) and the Spearman correlation against WIEN2k's B, and against the
experimental B where there is one; the elements a model has no features for are left out.
No goal: a check that the zoo's moduli hold outside the Materials Project.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from _goal import finish


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from ase.collections import dcdft
    except ImportError:
        print("ASE is not installed: pip install 'crystalzoo[ase]' (its dcdft collection is the test set)")
        return finish(False, args.quick)  # --quick (CI without the extra): runs to the end; otherwise a failure
    from scipy import stats

    from crystalzoo import load_model
    from crystalzoo.errors import StructureError

    names = list(dcdft.names)
    reference = {"WIEN2k": np.array([dcdft.data[n]["wien2k_B"] for n in names], float),
                 "experiment": np.array([dcdft.data[n].get("exp_B") or np.nan for n in names], float)}
    print(f"{len(names)} elemental crystals of ASE's dcdft collection; bulk moduli in GPa, compared in log10\n")
    print(f"{'model':10s} {'reference':11s} {'crystals':>8s} {'MAE log10':>10s} {'Spearman':>9s}")
    for name, column in (("bulk", 0), ("combined", 2)):
        model = load_model(name)
        predicted = np.full(len(names), np.nan)
        for i, n in enumerate(names):
            try:
                predicted[i] = np.atleast_1d(model.predict([dcdft[n]]).reshape(-1))[column]
            except StructureError:  # an element without atom features
                pass
        for label, ref in reference.items():
            ok = np.isfinite(predicted) & np.isfinite(ref) & (ref > 0)
            mae = float(np.mean(np.abs(predicted[ok] - np.log10(ref[ok]))))
            rho = float(stats.spearmanr(predicted[ok], ref[ok]).statistic)
            print(f"{name:10s} {label:11s} {int(ok.sum()):8d} {mae:10.3f} {rho:9.2f}")
    return finish(True, args.quick)


if __name__ == "__main__":
    sys.exit(main())
