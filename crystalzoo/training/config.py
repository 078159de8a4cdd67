"""The optimisation settings of a training run (:class:`TrainConfig`): their defaults, their
checks and the help the ``crystalzoo finetune`` / ``pretrain`` options show, which the CLI
generates from these fields. No torch import here, so ``crystalzoo --help`` stays fast.

Example::

    >>> TrainConfig(epochs=5, lr=3e-4).lr_at(1)
    0.0003
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..losses import LOSSES, check_loss
from .recipes import L2SP_ALPHA, RECIPES, check_recipe

OPTIMIZERS = ("adam", "sgd")


SCHEDULES = ("constant", "cosine")


def _is_integer(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    """A real number that a float holds (an int of 400 digits is not)."""
    import numpy as np

    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _option(default: Any, help: str, kind: type = str, choices: tuple[str, ...] | None = None,
            metavar: str | None = None) -> Any:
    """A field whose metadata the CLI turns into ``--name`` (type, choices, help)."""
    return field(default=default, metadata={"help": help, "type": kind, "choices": choices, "metavar": metavar})


@dataclass
class TrainConfig:
    """Optimisation settings. The defaults fine-tune a CGCNN on about a thousand crystals."""

    epochs: int = _option(30, "number of epochs", int)
    batch_size: int = _option(64, "crystals per batch (at least 2: BatchNorm)", int)
    lr: float = _option(1e-3, "learning rate", float)
    optimizer: str = _option("adam", "adam, or sgd (momentum 0.9, as the original CGCNN)", choices=OPTIMIZERS)
    weight_decay: float = _option(0.0, "L2 weight decay of the optimizer", float)
    seed: int = _option(0, "seed of the splits, the new layers' initialisation and the batch order", int)
    device: str = _option("cpu", "cpu, cuda or cuda:N")
    early_stopping: int | None = _option(None, "stop after this many epochs (>= 1) without a better validation "
                                         "loss", int, metavar="EPOCHS")
    progress: bool = _option(True, "progress bars (the CLI's --quiet turns them off)", bool)
    schedule: str = _option("constant", "learning rate: constant, or cosine decay to 0 over the epochs after the "
                            "warm-up (lr (1 + cos(pi (epoch - 1 - warmup) / (epochs - warmup))) / 2)",
                            choices=SCHEDULES)
    warmup: int = _option(0, "epochs of linear learning-rate warm-up before the schedule: epoch e <= warmup trains at "
                          "lr e / (warmup + 1)", int, metavar="EPOCHS")
    ema: float | None = _option(None, "decay per optimiser step of an exponential moving average of the weights "
                                "(e.g. 0.99): validation, the best epoch and the trained model use the averaged "
                                "weights; None: no average", float, metavar="DECAY")
    recipe: str = _option("freeze", "how the pretrained layers train (crystalzoo.training.recipes, docs/finetuning.md): "
                          "freeze, discriminative, gradual, l2sp, linear-probe", choices=RECIPES)
    l2sp_alpha: float | None = _option(None, "strength of the l2sp recipe's pull towards the pretrained weights "
                                       f"(alpha / 2 · ||w - w0||^2, per unit of the normalised loss; None: "
                                       f"{L2SP_ALPHA:g})", float, metavar="ALPHA")
    loss: str = _option("mse", "a regression's loss on the normalised targets: mse (the original CGCNN's), or l1 "
                        "(the mean absolute error, each target in units of its spread); a classifier always trains "
                        "on cross-entropy", choices=LOSSES)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "TrainConfig":
        """A config from keyword options (``finetune(..., epochs=5)``): :class:`ConfigError`
        naming an option that is not a setting, with the nearest one."""
        import dataclasses
        import difflib

        names = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in names:
                near = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ConfigError(f"{key!r} is not a training option{hint} (options: {', '.join(names)})")
        return cls(**options)

    def alpha(self) -> float:
        """The l2sp recipe's strength: ``l2sp_alpha``, or :data:`~crystalzoo.training.recipes.L2SP_ALPHA`."""
        return L2SP_ALPHA if self.l2sp_alpha is None else self.l2sp_alpha

    def lr_at(self, epoch: int) -> float:
        """Learning rate of ``epoch`` (1-based); a function of the epoch alone, so resuming needs no state.

        Example::

            >>> [round(TrainConfig(epochs=6, warmup=2, schedule="cosine").lr_at(e) * 1e3, 3) for e in range(1, 7)]
            [0.333, 0.667, 1.0, 0.854, 0.5, 0.146]
        """
        if epoch <= self.warmup:
            return self.lr * epoch / (self.warmup + 1)
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1 - self.warmup) / (self.epochs - self.warmup)))

    def __post_init__(self) -> None:
        """Every setting is checked here, so the API and the CLI refuse the same values with
        the same :class:`ConfigError`, before any data is read."""
        from ..models.builder import check_device

        for name, least, example in (("epochs", 1, 30), ("batch_size", 2, 64)):
            value = getattr(self, name)
            if not _is_integer(value) or value < least:
                why = " (BatchNorm cannot train on a batch of one crystal)" if name == "batch_size" else ""
                raise ConfigError(f"{name} = {value!r}: must be an integer >= {least}{why}, "
                                  f"e.g. --{name.replace('_', '-')} {example}")
        if not _is_real(self.lr) or not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr = {self.lr!r}: the learning rate must be a finite number > 0, e.g. --lr 1e-3")
        if not _is_real(self.weight_decay) or not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay = {self.weight_decay!r}: must be a finite number >= 0, e.g. 0 or 1e-5")
        if not _is_integer(self.seed) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed = {self.seed!r}: must be an integer from 0 to 2**63 - 1, e.g. --seed 0")
        if self.early_stopping is not None and (not _is_integer(self.early_stopping) or self.early_stopping < 1):
            raise ConfigError(f"early_stopping = {self.early_stopping!r}: the patience is a number of epochs >= 1 "
                              "(leave it out for no early stopping)")
        if not _is_integer(self.warmup) or not 0 <= self.warmup < self.epochs:
            raise ConfigError(f"warmup = {self.warmup!r}: the warm-up is a number of epochs from 0 to epochs - 1 "
                              f"({self.epochs - 1}), e.g. --warmup 2")
        if self.ema is not None and (not _is_real(self.ema) or not 0 < self.ema < 1):
            raise ConfigError(f"ema = {self.ema!r}: the average's decay per step is a number between 0 and 1, e.g. "
                              "--ema 0.99 (leave it out for no average)")
        if not isinstance(self.progress, bool):
            raise ConfigError(f"progress = {self.progress!r}: True (progress bars) or False")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer = {self.optimizer!r}: valid: 'adam', 'sgd'")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule = {self.schedule!r}: valid: 'constant', 'cosine'")
        check_loss(self.loss)
        check_recipe(self.recipe)
        if self.l2sp_alpha is not None and (not _is_real(self.l2sp_alpha)
                                            or not (math.isfinite(self.l2sp_alpha) and self.l2sp_alpha >= 0)):
            raise ConfigError(f"l2sp_alpha = {self.l2sp_alpha!r}: must be a finite number >= 0, e.g. --l2sp-alpha "
                              f"{L2SP_ALPHA:g}")
        if self.l2sp_alpha is not None and self.recipe != "l2sp":
            raise ConfigError(f"l2sp_alpha = {self.l2sp_alpha!r} is a setting of the l2sp recipe, and the recipe is "
                              f"{self.recipe!r}: add recipe='l2sp' (--recipe l2sp), or leave l2sp_alpha out")
        check_device(self.device)
        # plain Python numbers from here on (numpy scalars are accepted above): they go into JSON
        self.epochs, self.batch_size, self.seed = int(self.epochs), int(self.batch_size), int(self.seed)
        self.lr, self.weight_decay, self.warmup = float(self.lr), float(self.weight_decay), int(self.warmup)
        if self.ema is not None:
            self.ema = float(self.ema)
        if self.l2sp_alpha is not None:
            self.l2sp_alpha = float(self.l2sp_alpha)
        if self.early_stopping is not None:
            self.early_stopping = int(self.early_stopping)
