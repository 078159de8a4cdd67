"""Fine-tuning recipes: each does what crystalzoo/training/recipes.py says, on real crystals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crystalzoo import TrainConfig, load_model, make_model, train_model
from crystalzoo.data import CrystalDataset
from crystalzoo.errors import ConfigError
from crystalzoo.training.recipes import LR_DECAY, frozen_at, param_groups

from ..conftest import DATA


@pytest.fixture(scope="module")
def splits():
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], limit=80, cache_dir=False,
                                   progress=False)
    return ds.subset(range(60)), ds.subset(range(60, 80))


def _train(splits, recipe, freeze=None, epochs=2, **options):
    train, val = splits
    model = make_model("formation", train, freeze=freeze, seed=0)
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    history = train_model(model, train, val, TrainConfig(epochs=epochs, batch_size=16, recipe=recipe, progress=False,
                                                         **options))
    moved = {n: float((p.detach() - before[n]).norm()) for n, p in model.backbone.named_parameters()}
    return model, history, moved


def test_linear_probe_trains_the_head_alone(splits):
    model, history, moved = _train(splits, "linear-probe")
    assert max(moved.values()) == 0.0 and all(np.isfinite(r["train_loss"]) for r in history.rows)
    head = make_model("formation", splits[0], seed=0).head.fc_out.weight
    assert not torch.equal(model.head.fc_out.weight, head)  # the head did train


def test_discriminative_rates_fall_from_the_head_down(splits):
    model = make_model("formation", splits[0], seed=0)
    groups = param_groups(model, "discriminative")
    assert [g["scale"] for g in groups] == [LR_DECAY ** i for i in range(len(groups))]
    assert groups[0]["params"] == list(model.head.parameters())
    assert groups[-1]["params"] == list(model.backbone.embedding.parameters())
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    _, _, moved = _train(splits, "discriminative")
    assert moved["embedding.weight"] > 0 and moved["embedding.weight"] < moved["conv_to_fc.weight"]


@pytest.mark.slow  # trains several models
def test_l2sp_keeps_the_weights_nearer_the_pretrained_ones(splits):
    _, _, free = _train(splits, "freeze", epochs=3)
    _, _, pulled = _train(splits, "l2sp", epochs=3)
    assert sum(pulled.values()) < sum(free.values())
    _, _, harder = _train(splits, "l2sp", epochs=3, l2sp_alpha=1.0)  # a stronger pull: nearer still
    assert sum(harder.values()) < sum(pulled.values())
    _, _, none = _train(splits, "l2sp", epochs=3, l2sp_alpha=0.0)  # no pull: full fine-tuning, step for step
    assert none == pytest.approx(free, rel=1e-5, abs=1e-7)


@pytest.mark.slow  # trains several models
def test_gradual_unfreezing_goes_down_one_convolution_per_phase(splits):
    assert [frozen_at(e, 10, 4, None) for e in range(1, 11)] == [4, 4, 3, 3, 2, 1, 1, 0, 0, None]
    assert [frozen_at(e, 6, 4, 2) for e in range(1, 7)] == [4, 4, 3, 3, 2, 2]
    assert [frozen_at(e, 3, 4, None) for e in range(1, 4)] == [4, 2, 0]  # fewer epochs than phases
    model, history, moved = _train(splits, "gradual", freeze=1, epochs=6)
    assert [r["frozen"] for r in history.rows] == [4, 4, 3, 2, 2, 1]
    assert moved["convs.0.fc_full.weight"] == 0 and moved["convs.1.fc_full.weight"] == 0  # freeze=1 stays fixed
    assert moved["convs.3.fc_full.weight"] > 0 and model.backbone.frozen == 1


def test_recipes_are_checked_and_recorded(tmp_path):
    from crystalzoo import finetune

    with pytest.raises(ConfigError, match="recipe = 'l2-sp' is not a fine-tuning recipe; did you mean 'l2sp'"):
        TrainConfig(recipe="l2-sp")
    for alpha in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ConfigError, match="l2sp_alpha = .*: must be a finite number >= 0, e.g. --l2sp-alpha 0.01"):
            TrainConfig(recipe="l2sp", l2sp_alpha=alpha)
    with pytest.raises(ConfigError, match="l2sp_alpha = 0.1 is a setting of the l2sp recipe, and the recipe is "
                                          "'freeze': add recipe='l2sp'"):
        TrainConfig(l2sp_alpha=0.1)
    with pytest.raises(ConfigError, match="recipe 'gradual' fine-tunes a pretrained backbone"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", backbone=None, recipe="gradual")
    r = finetune(DATA / "mp200.jsonl.gz", "band_gap", recipe="discriminative", train_size=40, val_size=10,
                 test_size=10, epochs=1, progress=False, cache_dir=tmp_path)
    assert r.metrics["recipe"] == "discriminative"
    assert np.isfinite(load_model("formation").predict([str(DATA / "cifs" / "1000041.cif")])).all()


@pytest.mark.slow  # trains several models
def test_gradual_unfreezing_is_checked_and_resumes_only_its_own_schedule(splits, tmp_path):
    from crystalzoo.errors import RunError

    train, val = splits
    model = make_model("formation", train, seed=0)
    with pytest.raises(ConfigError, match="6 phases .* give epochs >= 6"):
        train_model(model, train, val, TrainConfig(epochs=5, recipe="gradual", progress=False))
    model = make_model("formation", train, freeze=2, seed=0)
    run = tmp_path / "g"
    train_model(model, train, val, TrainConfig(epochs=3, batch_size=16, recipe="gradual", progress=False), out_dir=run)
    with pytest.raises(RunError, match="epochs \\(gradual unfreezing\\): 3 in the checkpoint, 6 now"):
        train_model(make_model("formation", train, freeze=2, seed=0), train, val,
                    TrainConfig(epochs=6, batch_size=16, recipe="gradual", progress=False), out_dir=run, resume=True)


@pytest.mark.slow  # trains several models
def test_gradual_early_stopping_waits_for_the_last_phase(splits):
    train, val = splits
    model = make_model("formation", train, freeze=2, seed=0)
    history = train_model(model, train, val, TrainConfig(epochs=6, batch_size=16, recipe="gradual", early_stopping=1,
                                                         progress=False))
    assert history.rows[-1]["frozen"] == 2  # it reached the last phase before it could stop


def test_a_probe_leaves_the_model_as_it_was_given(splits):
    model, _, moved = _train(splits, "linear-probe", freeze=None)
    assert model.backbone.frozen is None and all(p.requires_grad for p in model.parameters())
    train, val = splits
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    train_model(model, train, val, TrainConfig(epochs=1, batch_size=16, progress=False))  # then fine-tune (LP-FT)
    assert any(not torch.equal(p, before[n]) for n, p in model.backbone.named_parameters())


@pytest.mark.slow  # trains several models
def test_recipes_that_cannot_apply_are_refused(splits, tmp_path, capsys):
    from crystalzoo import finetune
    from crystalzoo.cli import main

    with pytest.raises(ConfigError, match="linear-probe' fixes the whole pretrained backbone"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", recipe="linear-probe", freeze=2, reinit=True)
    train, val = splits
    with pytest.raises(ConfigError, match="this model was made from scratch"):
        train_model(make_model(None, train), train, val, TrainConfig(epochs=1, recipe="linear-probe", progress=False))
    out = tmp_path / "run"  # the baseline from scratch of a recipe run trains with the freeze recipe
    assert main(["finetune", "--data", str(DATA / "mp200.jsonl.gz"), "--target", "band_gap", "--recipe", "l2sp",
                 "--l2sp-alpha", "0.1", "--baseline", "--epochs", "1", "--train-size", "40", "--val-size", "10", "--test-size", "10",
                 "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["recipe"] == "l2sp"
    assert json.loads((out / "metrics.json").read_text())["l2sp_alpha"] == 0.1
    assert json.loads((out / "baseline" / "metrics.json").read_text())["recipe"] == "freeze"


def test_resume_with_another_l2sp_alpha_is_refused(splits, tmp_path):
    from crystalzoo.errors import RunError

    train, val = splits
    config = TrainConfig(epochs=1, batch_size=16, recipe="l2sp", l2sp_alpha=0.1, progress=False)
    train_model(make_model("formation", train, seed=0), train, val, config, out_dir=tmp_path)
    again = TrainConfig(epochs=2, batch_size=16, recipe="l2sp", progress=False)  # the default strength
    with pytest.raises(RunError, match=r"l2sp_alpha: 0\.1 in the checkpoint, 0\.01 now"):
        train_model(make_model("formation", train, seed=0), train, val, again, out_dir=tmp_path, resume=True)
