"""An exponential moving average of the weights (``TrainConfig.ema``), as MACE and MatterTune
train: after every optimiser step ``w̄ ← d w̄ + (1 − d) w`` for each parameter that trains, with
the decay ``d`` held at ``(1 + n) / (10 + n)`` for the first steps ``n`` (so early averages are
not dominated by the initial weights). Validation, the best epoch and the trained model use
``w̄``; training goes on from ``w``.

Example::

    >>> import torch
    >>> layer = torch.nn.Linear(2, 1)
    >>> average = start(layer, list(layer.parameters()))
    >>> with torch.no_grad():
    ...     _ = layer.bias.fill_(1.0)
    >>> update(average, 0.9)
    >>> with averaged(average):
    ...     bool(layer.bias < 1.0)
    True
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch


def start(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> dict[str, Any]:
    """The average of ``params`` (those of ``model`` that train), starting at their values."""
    ids = {id(p) for p in params}
    named = {n: p for n, p in model.named_parameters() if id(p) in ids}
    return {"steps": 0, "live": named, "mean": {n: p.detach().clone() for n, p in named.items()}}


@torch.no_grad()
def update(average: dict[str, Any], decay: float) -> None:
    """One step of the average, after an optimiser step."""
    n = average["steps"]
    d = min(decay, (1 + n) / (10 + n))
    for name, p in average["live"].items():
        if p.requires_grad:  # a layer frozen for now (gradual unfreezing) keeps its exact weights
            average["mean"][name].mul_(d).add_(p.detach(), alpha=1 - d)
    average["steps"] = n + 1


@contextmanager
def averaged(average: dict[str, Any] | None) -> Iterator[None]:
    """The model of ``average`` with the averaged weights inside the block, its own weights
    again after it (``average`` None: nothing changes)."""
    if average is None:
        yield
        return
    live = {n: p.detach().clone() for n, p in average["live"].items()}
    with torch.no_grad():
        for n, p in average["live"].items():
            p.copy_(average["mean"][n])
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in average["live"].items():
                p.copy_(live[n])


def state(average: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a checkpoint keeps of the average (its tensors and step count)."""
    return None if average is None else {"steps": average["steps"], "mean": average["mean"]}


def restore(average: dict[str, Any], saved: Any, where: str) -> None:
    """The average of a checkpoint, checked against the run's parameters."""
    from ..errors import RunError

    if not isinstance(saved, dict) or set(saved.get("mean", {})) != set(average["mean"]):
        raise RunError(f"{where} holds no weight average of this run's parameters (it was written without --ema or "
                       "for other layers): resume with the settings of that run, or pass --overwrite")
    for name, tensor in saved["mean"].items():
        if tensor.shape != average["mean"][name].shape:
            raise RunError(f"{where}: the weight average of {name} has shape {tuple(tensor.shape)}, the model "
                           f"{tuple(average['mean'][name].shape)}")
        average["mean"][name].copy_(tensor)
    average["steps"] = int(saved["steps"])
