"""The losses a regression trains on (``TrainConfig.loss``, ``RegressionHead.loss``): their
names and their check. No torch import here: the CLI's help reads them.

Example::

    >>> check_loss("l1")
    >>> LOSSES
    ('mse', 'l1')
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

#: mean squared error (the original CGCNN's) or mean absolute error, on the normalised targets
#: (a classifier always trains on cross-entropy)
LOSSES = ("mse", "l1")
#: how a learning curve names each loss (its y axis)
LABELS = {"mse": "MSE loss (normalised targets)", "l1": "MAE (L1) loss (normalised targets)"}


def check_loss(loss: Any) -> None:
    """:class:`ConfigError` unless ``loss`` is one of :data:`LOSSES`."""
    if loss not in LOSSES:
        raise ConfigError(f"loss = {loss!r}: valid: 'mse', 'l1' (e.g. --loss l1)")
