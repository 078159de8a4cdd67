"""Fine-tuning recipes: how the layers of a pretrained backbone take part in training
(``finetune(..., recipe=NAME)``, ``crystalzoo finetune --recipe NAME``; ``TrainConfig.recipe``).

* ``"freeze"`` (default): the embedding and the first ``freeze`` convolutions are fixed, the
  rest trains at the learning rate (``freeze=None``: every layer trains).
* ``"discriminative"``: every trainable layer trains, at a rate that falls by ``LR_DECAY``
  per stage from the head down (head: lr; hidden layers: lr × 0.5; last convolution:
  lr × 0.25; …), so the general lower layers move least.
* ``"gradual"``: gradual unfreezing. Training starts with every convolution frozen; the
  epochs are cut into (nearly) equal phases, and each phase unfreezes one more convolution
  from the top, down to the embedding (or down to ``freeze``, which stays fixed); the last
  phase (with at least as many epochs as phases) trains everything that may train.
* ``"l2sp"``: every trainable layer trains, with a penalty ``α / 2 · ‖w − w₀‖²``
  (``l2sp_alpha``, default :data:`L2SP_ALPHA`)
  pulling the backbone's weights towards the pretrained ones ``w₀`` (Li et al., 2018).
* ``"linear-probe"``: the whole backbone is fixed; only the head trains, on the crystal
  vectors of the pretrained network.

Gradient boosting on frozen crystal vectors is not a recipe of the network: use
:func:`crystalzoo.boosting.fit_booster` (frozen pooled vectors and composition descriptors,
tuned on the validation split; docs/which_backbone.md), or
:class:`crystalzoo.featurizer.CrystalFeaturizer` in a scikit-learn pipeline of your own.

Example::

    >>> stages_and_rates(4, "discriminative")[:3]
    [('head', 1.0), ('hidden', 0.5), ('conv 4', 0.25)]
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

RECIPES = ("freeze", "discriminative", "gradual", "l2sp", "linear-probe")


#: the rate of each stage below, relative to the stage above (discriminative)
LR_DECAY = 0.5


#: the default strength of the pull towards the pretrained weights (l2sp, ``l2sp_alpha``),
#: per unit of the normalised loss
L2SP_ALPHA = 0.01


def check_recipe(recipe: Any) -> str:
    """``recipe`` if it is one of :data:`RECIPES`, else :class:`ConfigError` with the valid names."""
    if recipe not in RECIPES:
        import difflib

        near = difflib.get_close_matches(str(recipe), RECIPES, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"recipe = {recipe!r} is not a fine-tuning recipe{hint} (recipes: {', '.join(RECIPES)})")
    return recipe


def stages_and_rates(n_conv: int, recipe: str) -> list[tuple[str, float]]:
    """(part, learning-rate factor) from the head down: 1 for every part, except with
    ``"discriminative"``, where each part below has ``LR_DECAY`` times the rate above."""
    parts = ["head", "hidden", *[f"conv {i}" for i in range(n_conv, 0, -1)], "embedding"]
    return [(p, LR_DECAY ** i if recipe == "discriminative" else 1.0) for i, p in enumerate(parts)]


def param_groups(model, recipe: str) -> list[dict[str, Any]]:
    """The optimizer's parameter groups of ``model``, each with its ``scale`` of the learning
    rate: one group of every trainable parameter (``scale`` 1), or for ``"discriminative"``
    one group for the head, the hidden layers and each stage (parameters of an architecture
    outside these train with the head)."""
    if recipe != "discriminative":
        return [{"params": [p for p in model.parameters() if p.requires_grad], "scale": 1.0}]
    backbone = model.backbone
    stages = backbone.stages()
    modules = [model.head, backbone.later_modules(), *[stages[i] for i in range(len(stages) - 1, -1, -1)]]
    rates = stages_and_rates(len(stages) - 1, recipe)
    groups = []
    for part, (_, scale) in zip(modules, rates):
        parts = part if isinstance(part, list) else [part]
        params = [p for m in parts for p in m.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "scale": scale})
    grouped = {id(p) for group in groups for p in group["params"]}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in grouped]
    if rest:
        groups.append({"params": rest, "scale": 1.0})
    return groups


def phases(n_conv: int, floor: int | None) -> int:
    """The number of phases of gradual unfreezing: from ``n_conv`` frozen down to ``floor``
    (``None``: nothing frozen)."""
    return n_conv - (floor if floor is not None else -1) + 1


def check_phases(epochs: int, n_conv: int, floor: int | None) -> None:
    """:class:`ConfigError` unless gradual unfreezing from ``n_conv`` down to ``floor`` has
    at least one epoch per phase (fewer skip phases: the lowest layers would never train)."""
    n = phases(n_conv, floor)
    if epochs < n:
        raise ConfigError(f"gradual unfreezing of this backbone has {n} phases (convolution {n_conv} down to "
                          f"{'the embedding' if floor is None else f'freeze = {floor}'}), one or more epochs each: "
                          f"give epochs >= {n} (it is {epochs})")


def frozen_at(epoch: int, epochs: int, n_conv: int, floor: int | None) -> int | None:
    """The ``frozen`` level of a backbone in ``epoch`` (1-based) of gradual unfreezing: n_conv
    in the first phase, one less in each next phase, down to ``floor`` (``None``: all train)."""
    levels = list(range(n_conv, (floor if floor is not None else -1) - 1, -1))  # n_conv … floor (-1: none)
    level = levels[min(len(levels) - 1, (epoch - 1) * len(levels) // epochs)]  # nearly equal phases
    return None if level < 0 else level


def set_frozen(backbone, level: int | None) -> None:
    """Freeze the first ``level + 1`` stages of ``backbone`` (``None``: none), as
    :func:`~crystalzoo.models.freeze` does (gradual unfreezing moves the level down); the
    hidden layers after the stages train."""
    from ..models.freezing import freeze

    if level is None:
        for p in backbone.parameters():
            p.requires_grad_(True)
        backbone.frozen = None
        backbone.train(backbone.training)
    else:
        freeze(backbone, level)


def probe(backbone) -> None:
    """Fix the whole backbone (``"linear-probe"``): every stage and the hidden layers (until
    the run ends: then :func:`set_frozen` gives the backbone its own freezing back)."""
    set_frozen(backbone, len(backbone.stages()) - 1)
    for module in backbone.later_modules():
        for p in module.parameters():
            p.requires_grad_(False)


def penalty(model, reference: dict[str, Any] | None, alpha: float = L2SP_ALPHA):
    """The L2-SP term of the loss, ``alpha / 2 · ‖w − w₀‖²`` (``reference``: the pretrained
    weights w₀ of the trainable backbone parameters; None for other recipes)."""
    if not reference:
        return None
    total = None
    for name, p in model.backbone.named_parameters():
        if p.requires_grad and name in reference:
            term = (p - reference[name]).square().sum()
            total = term if total is None else total + term
    return None if total is None else 0.5 * alpha * total
