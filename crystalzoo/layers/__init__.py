"""Layers that families build backbones and models from: BatchNorm over weighted edges
(:mod:`~crystalzoo.layers.edge_norm`), graph convolutions (:mod:`~crystalzoo.layers.convolutions`)
and heads (:mod:`~crystalzoo.layers.heads`)."""

from .convolutions import AttentionConv, GatedConv
from .edge_norm import EdgeNorm, NormGate, batch_stats, norm_edges
from .heads import ClassificationHead, RegressionHead, make_head

__all__ = ["AttentionConv", "ClassificationHead", "EdgeNorm", "GatedConv", "NormGate", "RegressionHead", "batch_stats",
           "make_head", "norm_edges"]
