"""The exception hierarchy of crystalzoo: every error the library raises on bad input
derives from :class:`CrystalZooError`, so ``except CrystalZooError`` catches them all."""

from __future__ import annotations


class CrystalZooError(Exception):
    """Base class of every error raised by crystalzoo."""


class StructureError(CrystalZooError, ValueError):
    """A crystal structure (or CIF) cannot be turned into a graph."""


class ConfigError(CrystalZooError, ValueError):
    """A setting or configuration value that is out of range or of the wrong type (training
    options, graph settings, a model's ``config.json``)."""


class GraphSettingsMismatchError(CrystalZooError, ValueError):
    """Graphs built with one set of settings were fed to weights trained with another."""


class UnknownBackboneError(CrystalZooError, KeyError):
    """A backbone name that is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class WeightsError(CrystalZooError):
    """Weights that cannot be used: wrong checksum, wrong architecture, missing file."""


class ChecksumError(WeightsError):
    """A weights file whose sha256 differs from the one in the manifest."""


class HubError(CrystalZooError):
    """The Hugging Face Hub could not be reached or did not have what was asked for."""


class DataError(CrystalZooError, ValueError):
    """A data set or its labels cannot be used for training."""


class RunError(CrystalZooError):
    """A training run that cannot start or go on: its output folder holds another run or is in
    use by another process, its checkpoint belongs to another configuration, or its loss
    stopped being finite."""


class WriteError(CrystalZooError, OSError):
    """A file could not be written (full disk, read-only folder); the previous file is intact."""


class MissingExtraError(CrystalZooError, ImportError):
    """A feature needs an optional extra (``crystalzoo[dgl]``, ``crystalzoo[export]``) that is not installed."""
