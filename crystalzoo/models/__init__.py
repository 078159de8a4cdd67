"""Models: the architecture registry, one module per backbone family, freezing, the single
model (:class:`CrystalModel`), ensembles, and the one funnel that loads them
(:mod:`~crystalzoo.models.factory` → :mod:`~crystalzoo.models.builder`).

A family is one module that registers its backbone class with
:func:`~crystalzoo.models.architectures.register_architecture`, plus one import line below
(docs/architectures.md).

Example::

    >>> from crystalzoo.models import ARCHITECTURES
    >>> sorted(ARCHITECTURES)[:2]  # and any family registered after them
    ['cgcnn', 'schnet']
"""

from ..checks import MAX_FEATURES, MAX_HEADS, MAX_LAYERS, MAX_OUTPUTS
from ..layers.convolutions import AttentionConv, GatedConv
from ..layers.heads import ClassificationHead, RegressionHead, make_head
from .architectures import ARCHITECTURES, Backbone, get_architecture, register_architecture
from .builder import check_device, load_with
from .crystal_model import (CONFIG_FORMAT, REFERENCE_FORMAT, SINGLE_FORMAT, CrystalModel, calibration_in,
                            config_format, model_from_config)
from .ensembles import CrystalEnsemble
from .factory import load_backbone, load_model
from .freezing import freeze, frozen_modules, hold_frozen
from .predictor import FRAME_COLUMNS, Predictor

# the families, one module each, registered when imported (adding a family: its module and one line here)
from .cgcnn import BackboneConfig, CGCNNBackbone
from .schnet import SchNetBackbone, SchNetConfig

__all__ = ["ARCHITECTURES", "CONFIG_FORMAT", "FRAME_COLUMNS", "MAX_FEATURES", "MAX_HEADS", "MAX_LAYERS", "MAX_OUTPUTS",
           "REFERENCE_FORMAT", "SINGLE_FORMAT", "AttentionConv", "Backbone", "BackboneConfig", "CGCNNBackbone",
           "ClassificationHead", "CrystalEnsemble", "CrystalModel", "GatedConv", "Predictor", "RegressionHead",
           "SchNetBackbone", "SchNetConfig", "calibration_in", "check_device", "config_format", "freeze",
           "frozen_modules", "get_architecture", "hold_frozen", "load_backbone", "load_model", "load_with",
           "make_head", "model_from_config", "register_architecture"]
