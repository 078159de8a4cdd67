"""Training under ``torchrun``: the process group and each rank's share of an epoch."""

from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError


def process_group(device: str = "cpu") -> tuple[int, int]:
    """(world size, rank). Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is
    started here: gloo on CPU, nccl on GPU."""
    import torch.distributed as dist

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE = {os.environ['WORLD_SIZE']!r} is not a number of processes; it is set by "
                          "torchrun (unset it to train in one process)") from None
    if world <= 1:
        return 1, 0
    unset = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if unset and not dist.is_initialized():
        raise ConfigError(f"WORLD_SIZE = {world} is set but {', '.join(unset)} not: start the processes with torchrun "
                          "(docs/pretraining.md), or unset WORLD_SIZE to train in one process")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return dist.get_world_size(), dist.get_rank()


def shard(order: np.ndarray, world: int, rank: int) -> np.ndarray:
    """This rank's share of an epoch: pad the permutation to a multiple of ``world`` by
    repeating its start, then take every ``world``-th crystal, so that step k of all ranks
    together covers batch k of a single process with ``world`` times the batch size."""
    if world == 1:
        return order
    per = -(-len(order) // world)
    padded = np.concatenate([order, order[: per * world - len(order)]])
    return padded[rank::world]
