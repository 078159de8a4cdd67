"""Training and fine-tuning: MSE (or L1, ``TrainConfig.loss``) loss on normalised targets
(masked where labels are missing), MAE in the target's units, best-validation weights, early
stopping, seeded runs, per-epoch checkpoints for ``resume``, a history and a learning-curve
plot.

The modules, by job: :mod:`~crystalzoo.training.runs` (``finetune``, ``pretrain``),
:mod:`~crystalzoo.training.heads` (``make_model``: new heads and normalisers),
:mod:`~crystalzoo.training.loop` (``train_model``), :mod:`~crystalzoo.training.batches`
(batches with the frozen prefix, ``evaluate``), :mod:`~crystalzoo.training.checkpoints`
(resume), :mod:`~crystalzoo.training.run_folder` (locking), :mod:`~crystalzoo.training.distributed`
(torchrun), :mod:`~crystalzoo.training.options`, :mod:`~crystalzoo.training.config`
(``TrainConfig``) and :mod:`~crystalzoo.training.recipes`.

Frozen layers are a fixed function: their output is computed once per crystal and reused
every epoch, so fine-tuning with more frozen layers is faster.

A run's output folder belongs to that run: it is locked while the run writes to it, an
earlier run in it is replaced only with ``overwrite=True`` and continued only with
``resume=True`` (from a checkpoint of the same configuration), and every file is written
atomically (docs/robustness.md, "Training runs").

Example::

    >>> from crystalzoo import finetune
    >>> from crystalzoo.data import bundled_dataset
    >>> result = finetune(bundled_dataset("mp-band-gap"), "band_gap", backbone="formation", freeze=2,
    ...                   train_size=200, val_size=100, test_size=100, epochs=3, progress=False)
    >>> result.metrics["sizes"]
    {'train': 200, 'val': 100, 'test': 100}
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
