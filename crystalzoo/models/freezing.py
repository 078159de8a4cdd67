"""Freezing the first stages of a backbone, for any registered family."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError
from .architectures import Backbone


def freeze(backbone: Backbone, k: int, reinit: bool = False) -> Backbone:
    """Freeze the embedding and the first ``k`` convolutions of ``backbone`` (in place): the
    first ``k + 1`` of its ``stages()``, for any registered architecture.

    Frozen layers get no gradients *and* their BatchNorm running statistics stay fixed, also
    after ``model.train()``. With ``reinit=True`` the layers after them (deeper convolutions
    and the hidden layer) are re-initialised, as in the paper's transfer protocol ("we
    freeze shallow layers, reinitialize deeper layers"); by default they keep their
    pretrained values.

    Example::

        >>> from crystalzoo.models import CGCNNBackbone
        >>> b = freeze(CGCNNBackbone(), 2)
        >>> [p.requires_grad for p in b.convs[1].parameters()][0], [p.requires_grad for p in b.convs[2].parameters()][0]
        (False, True)
    """
    if hasattr(backbone, "backbone") and hasattr(backbone, "head"):  # a model: its backbone is frozen
        raise ConfigError("freeze takes a backbone: freeze(model.backbone, k) (or load_backbone(name, freeze=k))")
    n = len(backbone.stages()) - 1
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ConfigError(
            f"freeze={k!r} is out of range: this backbone has {n} convolutions, so freeze must "
            f"be an integer from 0 (embedding only) to {n} (embedding and all convolutions)"
        )
    k = int(k)
    for p in backbone.parameters():
        p.requires_grad_(True)
    backbone.frozen = k
    for module in frozen_modules(backbone):
        for p in module.parameters():
            p.requires_grad_(False)
    if reinit:
        for module in [*backbone.stages()[k + 1:], *backbone.later_modules()]:
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):  # Linear weights; BatchNorm weights and statistics
                    sub.reset_parameters()
    backbone.train(backbone.training)
    hold_frozen(backbone)  # also where the architecture's train() does not know of freezing
    return backbone


def frozen_modules(backbone: Backbone) -> list[nn.Module]:
    """The stages :func:`freeze` froze (none when ``backbone.frozen`` is None)."""
    return [] if backbone.frozen is None else backbone.stages()[: backbone.frozen + 1]


def hold_frozen(backbone: Backbone) -> None:
    """Put the frozen stages of ``backbone`` back in eval mode (BatchNorm statistics fixed):
    after anything that may have called ``train()`` on them, for any architecture."""
    for module in frozen_modules(backbone):
        module.eval()


def check_freeze(freeze: Any, reinit: Any, pretrained: bool) -> None:
    """The rules of ``freeze`` and ``reinit``, in one place (:class:`ConfigError`): ``freeze``
    is a count of convolutions (an integer >= 0) and needs a pretrained backbone
    (``pretrained``), and ``reinit`` needs ``freeze``. Whether ``freeze`` fits the backbone's
    depth is checked by :func:`freeze` (and by the run's options, before any data is read).

    Example::

        >>> check_freeze(2, False, pretrained=True)
        >>> check_freeze(None, True, pretrained=True)
        Traceback (most recent call last):
        ...
        crystalzoo.errors.ConfigError: reinit needs freeze (--freeze K): it re-initialises the layers after the K frozen ones
    """
    if freeze is not None and (isinstance(freeze, bool) or not isinstance(freeze, (int, np.integer)) or freeze < 0):
        raise ConfigError(f"freeze = {freeze!r}: give the number of convolutions to freeze, an integer >= 0")
    if reinit and freeze is None:
        raise ConfigError("reinit needs freeze (--freeze K): it re-initialises the layers after the K frozen ones")
    if freeze is not None and not pretrained:
        raise ConfigError("freeze needs a pretrained backbone; a model from scratch (backbone None, --backbone none) "
                          "trains every layer")
