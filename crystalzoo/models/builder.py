"""The one path from a model's name or config to a model: resolve → verify → build on the meta device →
load strictly."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import torch

from ..errors import ConfigError, CrystalZooError
from ..graphs.settings import GraphSettings, check_settings
from ..registry import resolve
from ..serialization import MAX_PARAMETERS, check_fits, load_into

#: what builds a model from its config (``CrystalModel.from_config``, ``CrystalEnsemble.from_config``,
#: or :func:`crystalzoo.models.factory.from_config` for either)
Constructor = Callable[[dict[str, Any]], torch.nn.Module]


def check_device(device: Any) -> None:
    """``device`` must name a device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``…);
    :class:`ConfigError` otherwise (training and :func:`~crystalzoo.load_model` check it)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"device = {device!r} is not a device name ({exc}); use e.g. --device cpu or --device cuda") from None
    if dev.type == "cpu":
        return
    if dev.type == "meta":
        raise ConfigError("device = 'meta' holds no data; use --device cpu or --device cuda")
    try:
        torch.empty(0, device=dev)
    except Exception as exc:  # no such accelerator, no driver, or torch built without it: all say "not here"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(f"device = {device!r} is not usable on this machine ({reason}; it has {gpus} CUDA "
                          "device(s)); use --device cpu, or a device that exists") from None


#: the options of ``load_model`` and ``from_pretrained``
LOAD_OPTIONS = ("revision", "cache_dir", "graph_settings", "local_files_only", "device")


def check_options(where: str, options: dict[str, Any], valid: Any) -> None:
    """:class:`ConfigError` for keywords of ``where`` that are not in ``valid`` (a misspelt
    option, or one of another library's that crystalzoo has not), naming the valid ones."""
    import difflib

    unknown = sorted(set(options) - set(valid))
    if unknown:
        hints = [f"{u!r} (did you mean {near[0]!r}?)" if (near := difflib.get_close_matches(u, valid, n=1)) else repr(u)
                 for u in unknown]
        raise ConfigError(f"{where} has no option {', '.join(hints)}; valid: {', '.join(valid)}")


def with_revision(name: Any, revision: str | None) -> Any:
    """``name`` pinned at ``revision`` (``revision="abc123"`` on ``hf-hub:ORG/NAME`` is
    ``hf-hub:ORG/NAME@abc123``, as transformers' ``revision=``); None leaves it as it is."""
    if revision is None:
        return name
    if not isinstance(revision, str) or not revision.strip() or "@" in revision:
        raise ConfigError(f"revision = {revision!r}: a branch, tag or commit id of a Hub repo")
    if not isinstance(name, str) or not name.startswith("hf-hub:"):
        raise ConfigError(f"revision= pins a Hub repo (hf-hub:ORG/NAME); {str(name)!r} is a registered name or a "
                          "folder, whose weights are pinned already")
    if "@" in name:
        raise ConfigError(f"{name} names its revision already; give it once (name@REV or revision=)")
    return f"{name}@{revision}"


def load_with(constructor: Constructor, name: str, *, graph_settings: GraphSettings | None = None,
              local_files_only: bool | None = None, device: str = "cpu", pretrained: bool = True,
              drop: Iterable[str] = (), cache_dir: str | os.PathLike | None = None) -> torch.nn.Module:
    """The model ``name`` names, through the one funnel every loader takes (``load_model``,
    ``load_backbone``, ``from_pretrained``): :func:`crystalzoo.registry.resolve` finds the
    config and weights (registered, ``hf-hub:…`` or a folder) and verifies their checksum,
    :func:`build_model` builds ``constructor(config)`` on the meta device first and loads the
    weights strictly (``pretrained=False``: random weights; ``drop``: state-dict prefixes left
    out, such as the old head), in eval mode on ``device``; ``cache_dir``: the Hugging Face cache
    to download into and read from (default ``$HF_HUB_CACHE``).

    Example::

        >>> from crystalzoo.models import CrystalModel
        >>> load_with(CrystalModel.from_config, "formation").targets
        ['formation_energy_per_atom']
    """
    check_device(device)
    if graph_settings is not None:
        check_settings(graph_settings, "graph_settings")
    name = str(name) if isinstance(name, str) else name  # a numpy string: its plain value in meta["source"]
    config, state, source = resolve(name, local_files_only, with_weights=pretrained, cache_dir=cache_dir)
    model = build_model(config, state, source, drop, constructor=constructor)
    model.meta["source"] = source
    if graph_settings is not None:
        model.graph_settings.check_same(graph_settings, what=source)
    return model.to(device)


def build_model(config: dict[str, Any], state: dict[str, torch.Tensor] | None, source: str,
                drop: Iterable[str] = (), *, constructor: Constructor) -> torch.nn.Module:
    """The model ``constructor`` makes from ``config``, with ``state`` loaded strictly (random
    initialisation when ``state`` is None): the one way a model is built from a config, for a
    loaded model and for a new one (``make_model``) alike.

    Nothing large is allocated before the config is known to be sane: its values are checked
    against the limits in :mod:`crystalzoo.checks` (:class:`ConfigError` naming ``source``),
    the model is first built on the meta device, its size checked against
    ``MAX_PARAMETERS`` and its tensors against the weights' shapes (:class:`~crystalzoo.errors.WeightsError`)."""
    drop = tuple(drop)
    try:
        with torch.device("meta"):
            shape = constructor(config)
    except CrystalZooError as exc:  # ConfigError, GraphSettingsMismatchError: name the source
        raise type(exc)(f"config of {source}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"config of {source} is not a crystalzoo model config ({exc!r})") from None
    n_params = sum(p.numel() for p in shape.parameters())
    if n_params > MAX_PARAMETERS:
        raise ConfigError(f"config of {source} describes a model of {n_params:,} parameters, more than the "
                          f"{MAX_PARAMETERS:,} crystalzoo builds (crystalzoo.serialization.MAX_PARAMETERS)")
    if state is not None:
        check_fits(shape, state, source, drop)
    model = constructor(config)
    if state is not None:
        load_into(model, state, source, drop)
        if getattr(model, "calibration", None) is not None:  # the calibration belongs to the weights just loaded
            model.calibration = model.calibration
    model.eval()
    return model
