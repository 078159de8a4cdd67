"""Loading pretrained models: a name (registered, ``hf-hub:…`` or a folder) → a model or a
backbone, through the one funnel of :mod:`crystalzoo.models.builder`: resolve → verify →
build on the meta device → load strictly (a single model or an ensemble, as the config says).

Example::

    >>> from crystalzoo import example_structures
    >>> load_model("formation").predict(example_structures()[:1]).round(2)
    array([-2.11], dtype=float32)
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graphs.settings import GraphSettings
from .architectures import Backbone
from .builder import load_with, with_revision
from .crystal_model import CrystalModel, model_from_config
from .ensembles import ensemble_from_config
from .freezing import check_freeze, hold_frozen
from .freezing import freeze as freeze_stages
from .predictor import Predictor


def from_config(config: dict[str, Any]) -> Predictor:
    """A single model or an ensemble, as ``config`` says (``load_model`` builds with it).

    Example::

        >>> from crystalzoo.registry import backbone_config
        >>> type(from_config(backbone_config("formation"))).__name__
        'CrystalModel'
    """
    if isinstance(config, dict) and "ensemble" in config:
        return ensemble_from_config(config)
    return model_from_config(config)


def _single_model(config: dict[str, Any]) -> CrystalModel:
    """The single model whose backbone ``load_backbone`` takes; an ensemble is refused."""
    if isinstance(config, dict) and isinstance(config.get("ensemble"), dict):
        raise ConfigError(f"it is an ensemble of {config['ensemble'].get('members')} models, each with its own "
                          "backbone: take one, load_model(name).members[0].backbone, or fine-tune from a single model")
    return model_from_config(config)


def load_model(name: str, *, graph_settings: GraphSettings | None = None, local_files_only: bool | None = None,
               device: str = "cpu", revision: str | None = None, cache_dir: str | None = None) -> Predictor:
    """A pretrained model with its own head, in eval mode: ``model.predict(structures)``
    returns values in the target's units. A folder or repo holding an ensemble
    (``finetune(..., ensemble=N)``) gives a :class:`~crystalzoo.models.ensembles.CrystalEnsemble`.

    ``name``: ``hf-hub:ORG/NAME[@REVISION]``, a model folder, or a registered name, resolved
    in that order: an existing model folder wins over a registered name (``./band-gap``, your
    own fine-tuned model, is loaded rather than the registered ``band-gap``; a note on stderr
    says so). A folder of that name without ``config.json`` (your data, say) does not. Run from
    another folder to load the registered model.

    ``graph_settings``: the settings your graphs are built with; a mismatch with those the
    weights were trained on raises :class:`~crystalzoo.errors.GraphSettingsMismatchError`.
    ``revision`` pins an ``hf-hub:`` name (``hf-hub:ORG/NAME@REVISION``); ``cache_dir`` is the
    Hugging Face cache to use (default ``$HF_HUB_CACHE``).

    Example::

        >>> model = load_model("formation")
        >>> from crystalzoo import example_structures
        >>> model.predict(example_structures()[:1]).round(2)
        array([-2.11], dtype=float32)
    """
    return load_with(from_config, with_revision(name, revision), graph_settings=graph_settings,
                     local_files_only=local_files_only, device=device, cache_dir=cache_dir)


def load_backbone(name: str, freeze: int | None = None, *, reinit: bool = False, pretrained: bool = True,
                  graph_settings: GraphSettings | None = None, local_files_only: bool | None = None) -> Backbone:
    """A pretrained backbone of any registered family (graph → crystal vector), ready for a new head.

    ``freeze=k`` freezes the embedding and the first ``k`` convolutions (0 ≤ k ≤ n_conv):
    no gradients, and BatchNorm statistics that stay fixed in ``train()`` mode. ``None``
    (default) freezes nothing. ``reinit=True`` re-initialises the layers after the frozen
    ones, as in the paper's protocol; by default they keep their pretrained values.
    ``pretrained=False`` gives the same architecture with random weights (the baseline).

    Example::

        >>> backbone = load_backbone("formation", freeze=2)
        >>> backbone.out_features
        32
    """
    if freeze is None:  # a freeze of the wrong type or depth: freeze() names the backbone's range
        check_freeze(None, reinit, pretrained=True)
    model = load_with(_single_model, name, graph_settings=graph_settings, local_files_only=local_files_only,
                      pretrained=pretrained, drop=("head.",))  # the old head: not needed
    backbone = model.backbone
    backbone.train()
    if freeze is not None:
        freeze_stages(backbone, freeze, reinit=reinit)
    hold_frozen(backbone)  # frozen stages stay a fixed function, for any architecture
    return backbone
