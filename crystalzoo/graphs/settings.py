"""Graph settings (radius, neighbours, Gaussian bond features, atom features) and the CGCNN atom table."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from ..checks import check_count, python_numbers, real_number
from ..errors import ConfigError, GraphSettingsMismatchError


#: limits of the graph settings (docs/robustness.md, "Models and configs"): the registered
#: weights use 8 Å, 12 neighbours and 41 bond features
MAX_RADIUS = 30.0
MAX_NEIGHBORS = 256
MAX_BOND_FEATURES = 1024


#: most bond-feature values per atom (``max_neighbors`` × bond features): what a batch's
#: edge features and the convolutions' edge tensors grow with (the registered weights: 12 × 41
#: = 492; 16,384 is 64 kB of float32 per atom, 7 GB for a batch of 64 crystals of 1,728 atoms)
MAX_NEIGHBOR_FEATURES = 16_384


@dataclass(frozen=True)
class GraphSettings:
    """How a structure becomes a graph. They belong to a set of weights: a model only ever
    sees graphs built with the settings it was trained on.

    Example::

        >>> GraphSettings().n_bond_features
        41
    """

    radius: float = 8.0
    max_neighbors: int = 12
    gaussian_min: float = 0.0
    gaussian_step: float = 0.2
    gaussian_width: float = 0.2
    atom_features: str = "cgcnn-92"

    def __post_init__(self) -> None:
        """Check every setting (types and the limits above) before anything is allocated;
        :class:`ConfigError` otherwise. numpy numbers become Python numbers (for JSON)."""
        python_numbers(self)
        radius = real_number(self.radius, "radius")
        if not 0 < radius <= MAX_RADIUS:
            raise ConfigError(f"radius must be in (0, {MAX_RADIUS}] Å, got {self.radius!r}")
        check_count(self.max_neighbors, "max_neighbors", 1, MAX_NEIGHBORS)
        step, width = real_number(self.gaussian_step, "gaussian_step"), real_number(self.gaussian_width, "gaussian_width")
        if not (0 < step <= radius and 0 < width <= radius):
            raise ConfigError(f"gaussian_step and gaussian_width must be in (0, radius = {radius}] Å, got {step!r} "
                              f"and {width!r}")
        if not 0 <= real_number(self.gaussian_min, "gaussian_min") < radius:
            raise ConfigError(f"gaussian_min must lie in [0, radius = {radius}), got {self.gaussian_min!r}")
        if (radius - self.gaussian_min) / step + 1 > MAX_BOND_FEATURES:
            raise ConfigError(
                f"gaussian_step {step!r} gives more than {MAX_BOND_FEATURES} bond features from {self.gaussian_min} "
                f"to {radius} Å; use a step of at least {(radius - self.gaussian_min) / (MAX_BOND_FEATURES - 1):.3g} Å"
            )
        width = self.max_neighbors * self.n_bond_features
        if width > MAX_NEIGHBOR_FEATURES:
            raise ConfigError(
                f"max_neighbors × bond features = {self.max_neighbors} × {self.n_bond_features} = {width:,} values per "
                f"atom, more than {MAX_NEIGHBOR_FEATURES:,} (crystalzoo.graphs.MAX_NEIGHBOR_FEATURES): the edge "
                "tensors of a batch would take gigabytes. Use fewer neighbours or a larger gaussian_step"
            )
        if self.atom_features not in ATOM_FEATURES:
            raise ConfigError(f"unknown atom_features {self.atom_features!r}; valid: {sorted(ATOM_FEATURES)} (the "
                              "atom features a backbone family declares)")

    @property
    def gaussian_centers(self) -> np.ndarray:
        n = int(round((self.radius - self.gaussian_min) / self.gaussian_step)) + 1
        return (self.gaussian_min + self.gaussian_step * np.arange(n)).astype(np.float32)

    @property
    def n_bond_features(self) -> int:
        return len(self.gaussian_centers)

    @property
    def n_atom_features(self) -> int:
        return self.atom_table().shape[1]

    def atom_table(self) -> np.ndarray:
        """The (101, n_atom_features) table of these settings' ``atom_features``: row Z holds the
        features of element Z (NaN for an element it does not know)."""
        return ATOM_FEATURES[self.atom_features]()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GraphSettings":
        if not isinstance(d, dict):
            raise ConfigError(f"graph settings must be a JSON object of settings, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown graph settings {sorted(map(str, unknown))}; valid: "
                              f"{[f.name for f in dataclasses.fields(cls)]}")
        return cls(**d)

    def same_graphs(self, other: "GraphSettings") -> bool:
        """Whether graphs built with ``other`` are those of ``self`` but for the atom features,
        which a batch looks up from the atomic numbers with the reading model's settings (so a
        data set built for one family serves every family)."""
        return isinstance(other, GraphSettings) and dataclasses.replace(other, atom_features=self.atom_features) == self

    def check_same(self, other: "GraphSettings", what: str = "these weights") -> None:
        """Raise :class:`GraphSettingsMismatchError` unless ``other`` equals ``self``."""
        if other != self:
            diff = {
                f.name: (getattr(self, f.name), getattr(other, f.name))
                for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)
            }
            lines = ", ".join(f"{k}: expected {a!r}, got {b!r}" for k, (a, b) in diff.items())
            fix = "Build graphs with the model's own settings (model.graph_settings), or train new weights for the " \
                  "new settings"
            if set(diff) == {"atom_features"}:
                fix += (f"; for a CrystalDataset, dataset.with_atom_features({self.atom_features!r}) gives the same "
                        "crystals with this model's atom features")
            raise GraphSettingsMismatchError(f"graph settings differ from those {what} were trained with ({lines}). "
                                             f"{fix}.")



@lru_cache(maxsize=1)
def atom_table() -> np.ndarray:
    """(101, 92) float32 table: row Z holds the CGCNN features of element Z (row 0 unused)."""
    text = resources.files("crystalzoo").joinpath("bundled", "atom_init.json").read_text()
    raw = json.loads(text)
    width = len(next(iter(raw.values())))
    table = np.full((max(int(k) for k in raw) + 1, width), np.nan, dtype=np.float32)
    for key, values in raw.items():
        table[int(key)] = values
    return table


@lru_cache(maxsize=1)
def one_hot_table() -> np.ndarray:
    """(101, 100) float32 table: row Z is the one-hot vector of element Z (1 … 100), for a family
    that learns its own element embedding (SchNet's); the same elements as :func:`atom_table`."""
    known = ~np.isnan(atom_table()).any(axis=1)
    table = np.full((len(known), len(known) - 1), np.nan, dtype=np.float32)
    table[known] = np.eye(len(known) - 1, dtype=np.float32)[np.flatnonzero(known) - 1]
    return table


#: the atom features a graph can carry (``GraphSettings.atom_features``), by name: a function
#: that gives the table by atomic number. A backbone family declares the one it reads.
ATOM_FEATURES = {"cgcnn-92": atom_table, "one-hot-100": one_hot_table}

DEFAULT_SETTINGS = GraphSettings()


def check_settings(settings: Any, name: str = "settings") -> GraphSettings:
    """``settings`` if it is a :class:`GraphSettings`, else :class:`ConfigError` naming ``name``."""
    if not isinstance(settings, GraphSettings):
        raise ConfigError(f"{name} must be a crystalzoo GraphSettings, got a {type(settings).__name__}; from a "
                          "dict: GraphSettings.from_dict(d)")
    return settings
