"""The architecture contract (:class:`Backbone`) and the registry of backbone families."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from ..errors import ConfigError, CrystalZooError, GraphSettingsMismatchError
from ..graphs.crystal_graph import CrystalGraph, as_crystal_graph
from ..graphs.settings import GraphSettings


def compiling() -> bool:
    """Whether torch.compile is tracing this call."""
    check = getattr(torch.compiler, "is_compiling", None)
    if check is None:  # torch < 2.3
        from torch._dynamo import is_compiling as check
    return bool(check())


class Backbone(Protocol):
    """What crystalzoo needs of a backbone architecture (graph → crystal vector): register a
    class that has these with :func:`register_architecture` and ``load_model``,
    ``load_backbone(freeze=k)``, ``finetune``, the frozen-prefix cache, ``save_pretrained`` and
    the Hub all work with it. ``architecture`` (its registered name) is set by the decorator.

    ``stages()`` lists the freezable stages in order: an embedding, then the convolutions;
    ``freeze(backbone, k)`` freezes the first ``k + 1``. ``atom_features(g, upto, h, start)``
    runs the convolutions ``start … upto-1`` (``h``: the atom vectors after the embedding and
    ``start`` convolutions). ``later_modules()`` are those after the stages (re-initialised
    with ``reinit``). ``to_config()`` gives the JSON dict that ``from_config(config,
    graph_settings)`` builds the same architecture from; ``from_config`` checks it
    (:class:`~crystalzoo.errors.ConfigError`) before it allocates anything, and
    ``from_config({}, settings)`` is the family's default shape.

    ``check_options(options)`` (a class method) checks the options of a new backbone before its
    graph settings are known, so that a run refuses them before it reads any data.

    A family also declares, as class attributes, the atom features its graphs carry
    (``atom_feature_set``, a name of :data:`crystalzoo.graphs.settings.ATOM_FEATURES`) and the
    words that name it on a model card (``description``, e.g. "A CGCNN crystal graph network")
    and its paper (``citation``).
    """

    architecture: str
    atom_feature_set: str
    description: str
    citation: str
    graph_settings: GraphSettings
    frozen: int | None

    @property
    def out_features(self) -> int: ...

    def stages(self) -> list[nn.Module]: ...

    def later_modules(self) -> list[nn.Module]: ...

    def atom_features(self, g: CrystalGraph, upto: int | None = None, h: torch.Tensor | None = None,
                      start: int = 0) -> torch.Tensor: ...

    def readout(self, g: CrystalGraph, atom_fea: torch.Tensor) -> torch.Tensor: ...

    def to_config(self) -> dict[str, Any]: ...

    @classmethod
    def from_config(cls, config: dict[str, Any], graph_settings: GraphSettings) -> "Backbone": ...


#: registered backbone architectures: the name in a config.json's ``architecture`` → class
ARCHITECTURES: dict[str, type] = {}


def register_architecture(name: str):
    """Class decorator: register a :class:`Backbone` architecture under ``name`` (the
    ``architecture`` of its config.json).

    Example::

        >>> sorted(ARCHITECTURES)[0]
        'cgcnn'
    """
    def add(cls: type) -> type:
        if ARCHITECTURES.get(name, cls) is not cls:
            raise ConfigError(f"architecture {name!r} is registered already (by {ARCHITECTURES[name].__qualname__})")
        cls.architecture = name
        # what a family may leave out: CGCNN's atom features, a plain description, no citation
        cls.atom_feature_set = getattr(cls, "atom_feature_set", "cgcnn-92")
        cls.description = getattr(cls, "description", f"A crystal graph network of the family {name!r}")
        cls.citation = getattr(cls, "citation", "")
        if not hasattr(cls, "check_options"):  # checked by from_config once the graph settings are known
            cls.check_options = classmethod(lambda c, options: None)
        ARCHITECTURES[name] = cls
        return cls

    return add


#: the family of a model trained from scratch when none is named (the original CGCNN)
DEFAULT_ARCHITECTURE = "cgcnn"


def get_architecture(name: Any) -> type:
    """The backbone class registered as ``name``; :class:`ConfigError` naming the registered
    families otherwise (the one place that refuses an unknown architecture).

    Example::

        >>> get_architecture("cgcnn").__name__
        'CGCNNBackbone'
    """
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; registered: {sorted(ARCHITECTURES)} (an architecture "
                          "defined outside crystalzoo is registered with register_architecture when its module "
                          "is imported)")
    return ARCHITECTURES[name]


def architecture_spec(architecture: Any) -> tuple[str, dict[str, Any]]:
    """(family name, its options) of a model to train from scratch: ``None`` (the default
    family, default shape), a registered name (``"schnet"``), or a dict ``{"name": NAME,
    **options}``; a dict without ``"name"`` holds the options of a CGCNN (as in crystalzoo
    0.1). The options are checked by the family's own ``check_options`` before a run reads any
    data, and by its ``from_config`` when the model is built.

    Example::

        >>> architecture_spec({"name": "schnet", "n_interactions": 2})
        ('schnet', {'n_interactions': 2})
        >>> architecture_spec({"n_conv": 3})
        ('cgcnn', {'n_conv': 3})
    """
    if architecture is None:
        return DEFAULT_ARCHITECTURE, {}
    if isinstance(architecture, str):
        get_architecture(architecture)
        return architecture, {}
    if not isinstance(architecture, dict):
        raise ConfigError(f"architecture = {str(architecture)[:80]}: a registered family's name "
                          f"({sorted(ARCHITECTURES)}) or a dict {{'name': NAME, **options}}")
    options = dict(architecture)
    name = options.pop("name", DEFAULT_ARCHITECTURE)
    get_architecture(name)
    return name, options


def check_graph_input(backbone: Any, g: CrystalGraph, n_atom: int, n_bond: int) -> None:
    """The checks every backbone makes of its input graph ``g``: built with the backbone's
    graph settings, and with ``n_atom`` atom and ``n_bond`` bond features
    (:class:`~crystalzoo.errors.GraphSettingsMismatchError` otherwise)."""
    # graphs made by collate know their settings (checked eagerly: torch.compile cannot trace the comparison)
    if g.settings is not None and g.settings is not backbone.graph_settings and not compiling():
        backbone.graph_settings.check_same(g.settings, "this model")
    edges = g.src.shape[0]
    if not compiling() and (g.dst.shape[0] != edges or g.bond_fea.shape[0] != edges
                            or (g.edge_weight is not None and g.edge_weight.shape[0] != edges)):
        raise CrystalZooError(f"the graph's edges disagree: {edges} in src, {g.dst.shape[0]} in dst, "
                              f"{g.bond_fea.shape[0]} rows of bond_fea"
                              + (f", {g.edge_weight.shape[0]} edge weights" if g.edge_weight is not None else "")
                              + ": change them together (or build the graph again with build_graph / collate)")
    a, b = g.atom_fea.shape[1], g.bond_fea.shape[1]
    if (a, b) != (n_atom, n_bond):
        raise GraphSettingsMismatchError(
            f"graph has {a} atom and {b} bond features, the backbone expects {n_atom} and {n_bond}: build graphs "
            "with the model's graph_settings"
        )


def run_stages(backbone: Any, g: Any, blocks: Any, n_atom: int, n_bond: int, upto: int | None = None,
               h: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
    """What every backbone's ``atom_features`` does: ``g`` as a :class:`CrystalGraph` checked
    against ``backbone`` (:func:`check_graph_input`, ``n_atom`` and ``n_bond`` features) and
    in the dtype of its ``embedding``; then the embedding, unless ``h`` holds the atom vectors
    after it and the first ``start`` blocks (the frozen-prefix cache); then ``blocks[start:upto]``."""
    g = as_crystal_graph(g)
    check_graph_input(backbone, g, n_atom, n_bond)
    dtype = backbone.embedding.weight.dtype
    if g.atom_fea.dtype != dtype:  # a model in float64 (model.double()) or half precision
        g = g.to_float(dtype)
    if h is None:
        if start != 0:
            raise ValueError("start > 0 needs the atom vectors h after the embedding and the first `start` "
                             "convolutions")
        h = backbone.embedding(g.atom_fea)
    for block in blocks[start:upto]:
        h = block(g, h, g.bond_fea)
    return h
