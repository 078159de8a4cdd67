"""Training and fine-tuning: MSE (or L1, ``TrainConfig.loss``) loss on normalised targets
(masked where labels are missing), MAE in the target's units, best-validation weights, early
stopping, seeded runs, per-epoch checkpoints for ``resume``, a history and a learning-curve
plot. Frozen layers are a fixed function: their output is computed once per crystal and
reused every epoch.

The modules, by job: :mod:`~crystalzoo.training.runs` (``finetune``, ``pretrain``),
:mod:`~crystalzoo.training.heads` (``make_model``: new heads and normalisers),
:mod:`~crystalzoo.training.loop` (``train_model``), :mod:`~crystalzoo.training.batches`
(batches with the frozen prefix, ``evaluate``), :mod:`~crystalzoo.training.history`,
:mod:`~crystalzoo.training.checkpoints` (resume), :mod:`~crystalzoo.training.run_folder`
(a run's folder, locked while it writes), :mod:`~crystalzoo.training.distributed` (torchrun),
:mod:`~crystalzoo.training.options`, :mod:`~crystalzoo.training.config` (``TrainConfig``) and
:mod:`~crystalzoo.training.recipes`.

Example::

    >>> from crystalzoo.training import TrainConfig
    >>> TrainConfig(epochs=5, recipe="l2sp").recipe
    'l2sp'
"""

from .batches import evaluate
from .config import TrainConfig
from .runs import FinetuneResult, finetune, pretrain
from .heads import REFERENCE_RIDGE, make_model
from .history import History
from .loop import train_model
from .options import TASKS, check_run_options
from .run_folder import CHECKPOINT, LOCK_NAME, RUN_FILES, check_not_backbone_folder, check_out_dir, claim_run_folder

__all__ = ["CHECKPOINT", "LOCK_NAME", "REFERENCE_RIDGE", "RUN_FILES", "TASKS", "FinetuneResult", "History",
           "TrainConfig", "check_not_backbone_folder", "check_out_dir", "check_run_options", "claim_run_folder",
           "evaluate", "finetune", "make_model", "pretrain", "train_model"]
