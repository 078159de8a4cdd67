"""Data shipped with the package: example CIFs and Materials Project band gaps."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import DataError

BUNDLED = {
    "mp-band-gap": "mp_band_gap_3000.jsonl.gz",
}


#: the units of the bundled data sets' columns (a model fine-tuned on them carries them)
BUNDLED_UNITS = {
    "mp-band-gap": {"band_gap": "eV", "formation_energy_per_atom": "eV/atom", "efermi": "eV",
                    "energy_per_atom": "eV/atom"},
}


def example_structures() -> list[Path]:
    """Paths of three small crystal structures (CIF) shipped with the package, for trying
    crystalzoo out anywhere: the sample CIFs of the CGCNN repository (MIT; see
    ``crystalzoo/bundled/README.md``).

    Example::

        >>> from crystalzoo import example_structures, load_model
        >>> [p.name for p in example_structures()]
        ['1000041.cif', '1000050.cif', '1101051.cif']
        >>> load_model("formation").predict(example_structures()[:1]).round(2)
        array([-2.11], dtype=float32)
    """
    folder = Path(str(resources.files("crystalzoo").joinpath("bundled", "structures")))
    return sorted(folder.glob("*.cif"))


def bundled_dataset(name: str) -> Path:
    """Path of a real data set shipped with the package (see ``crystalzoo/bundled/README.md``).

    ``"mp-band-gap"``: 3,000 Materials Project crystals with band gap, formation energy,
    Fermi energy and total energy per atom (CC-BY 4.0, Jain et al. 2013).
    """
    if name not in BUNDLED:
        raise DataError(f"no bundled data set {name!r}; bundled: {', '.join(BUNDLED)}")
    return Path(str(resources.files("crystalzoo").joinpath("bundled", BUNDLED[name])))


BUNDLED_PREFIX = "bundled:"
