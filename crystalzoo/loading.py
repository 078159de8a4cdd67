"""Loading pretrained models: a name (registered, ``hf-hub:…`` or a folder) → a model or a
backbone, through one funnel: :func:`crystalzoo.registry.resolve` finds and verifies the
config and weights, :func:`crystalzoo.models.load_with` builds them (a single model or an
ensemble, as the config says).

Example::

    >>> from crystalzoo import example_structures
    >>> load_model("formation").predict(example_structures()[:1]).round(2)
    array([-2.11], dtype=float32)
"""

from __future__ import annotations

from .ensembles import from_config
from .errors import ConfigError
from .graphs import GraphSettings
from .models import Backbone, Predictor, freeze as _freeze, hold_frozen, load_with
from .registry import resolve
from .serialization import build_model


def load_model(name: str, *, graph_settings: GraphSettings | None = None,
               local_files_only: bool | None = None, device: str = "cpu") -> Predictor:
    """A pretrained model with its own head, in eval mode: ``model.predict(structures)``
    returns values in the target's units. A folder or repo holding an ensemble
    (``finetune(..., ensemble=N)``) gives a :class:`~crystalzoo.ensembles.CrystalEnsemble`.

    ``name``: ``hf-hub:ORG/NAME[@REVISION]``, a model folder, or a registered name, resolved
    in that order: an existing model folder wins over a registered name (``./band-gap``, your
    own fine-tuned model, is loaded rather than the registered ``band-gap``; a note on stderr
    says so). A folder of that name without ``config.json`` (your data, say) does not. Run from
    another folder to load the registered model.

    ``graph_settings``: the settings your graphs are built with; a mismatch with those the
    weights were trained on raises :class:`~crystalzoo.errors.GraphSettingsMismatchError`.

    Example::

        >>> model = load_model("formation")
        >>> from crystalzoo import example_structures
        >>> model.predict(example_structures()[:1]).round(2)
        array([-2.11], dtype=float32)
    """
    return load_with(from_config, name, graph_settings=graph_settings, local_files_only=local_files_only,
                     device=device)


def load_backbone(name: str, freeze: int | None = None, *, reinit: bool = False, pretrained: bool = True,
                  graph_settings: GraphSettings | None = None, local_files_only: bool | None = None) -> Backbone:
    """A pretrained CGCNN backbone (graph → crystal vector), ready for a new head.

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
    config, state, source = resolve(name, local_files_only, with_weights=pretrained)
    if isinstance(config.get("ensemble"), dict):
        raise ConfigError(f"{source} is an ensemble of {config['ensemble'].get('members')} models, each with its own "
                          "backbone: take one, load_model(name).members[0].backbone, or fine-tune from a single model")
    model = build_model(config, state, source, drop=("head.",), constructor=from_config)  # the old head: not needed
    if graph_settings is not None:
        model.graph_settings.check_same(graph_settings, what=source)
    backbone = model.backbone
    if freeze is not None:
        _freeze(backbone, freeze, reinit=reinit)
    elif reinit:
        raise ConfigError("reinit=True needs freeze=k: it re-initialises the layers after the k frozen ones")
    backbone.train()
    hold_frozen(backbone)  # frozen stages stay a fixed function, for any architecture
    return backbone
