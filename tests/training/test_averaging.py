"""Warm-up and the exponential moving average of the weights (TrainConfig.warmup, .ema), on real
crystals: the averaged weights are what is validated and returned, frozen layers stay exact, and a
resumed run gives the uninterrupted run's weights."""

from __future__ import annotations

import pytest
import torch

from crystalzoo import TrainConfig, evaluate, load_backbone, make_model, train_model
from crystalzoo.data import CrystalDataset
from crystalzoo.errors import ConfigError, RunError
from crystalzoo.training import averaging

from ..conftest import DATA


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], progress=False,
                                   cache_dir=tmp_path_factory.mktemp("cache"))
    train, val, _ = ds.split(80, 40, 0, seed=3)
    return train, val


def test_warmup_ramps_the_rate_then_the_schedule_runs_over_the_other_epochs(splits):
    train, val = splits
    model = make_model("formation", train, freeze=1, seed=0)
    rows = train_model(model, train, val, TrainConfig(epochs=4, lr=2e-3, warmup=1, schedule="cosine",
                                                      progress=False)).rows
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 2e-3, 1.5e-3, 0.5e-3])
    for bad in (4, -1, 1.5):
        with pytest.raises(ConfigError, match="warmup"):
            TrainConfig(epochs=4, warmup=bad)
    for bad in (0, 1, 1.2, "0.9", float("nan")):
        with pytest.raises(ConfigError, match="ema"):
            TrainConfig(ema=bad)


def test_the_average_follows_its_formula():
    layer = torch.nn.Linear(3, 2)
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    average = averaging.start(layer, [layer.weight])  # the bias does not train
    with torch.no_grad():
        layer.weight.add_(1.0)
        layer.bias.add_(1.0)
    averaging.update(average, 0.99)  # step 0: the decay is 1 / 10
    expected = 0.1 * before["weight"] + 0.9 * layer.weight.detach()
    torch.testing.assert_close(average["mean"]["weight"], expected)
    assert set(average["mean"]) == {"weight"}
    live = layer.weight.detach().clone()
    with averaging.averaged(average):
        torch.testing.assert_close(layer.weight.detach(), expected)
    assert torch.equal(layer.weight.detach(), live)


def test_the_averaged_weights_are_validated_and_returned_and_frozen_layers_stay_exact(splits):
    train, val = splits
    pretrained = load_backbone("formation").state_dict()
    results = {}
    for ema in (None, 0.9):
        model = make_model("formation", train, freeze=1, seed=0)
        history = train_model(model, train, val, TrainConfig(epochs=4, lr=2e-3, ema=ema, progress=False))
        results[ema] = model
        best = history.rows[history.best_epoch - 1]
        # the model returned is the one the best validation score was measured on
        assert evaluate(model, val)["mae"] == pytest.approx(best["val_mae"], rel=1e-5)
    frozen = [n for n, p in results[0.9].backbone.named_parameters() if not p.requires_grad]
    assert frozen
    for n in frozen:
        assert torch.equal(results[0.9].backbone.state_dict()[n], pretrained[n]), n
    moved = results[0.9].head.fc_out.weight.detach()
    assert not torch.equal(moved, results[None].head.fc_out.weight.detach())


def test_gradual_unfreezing_with_an_average_keeps_the_floor_exact(splits):
    train, val = splits
    pretrained = load_backbone("bulk").state_dict()
    model = make_model("bulk", train, freeze=1, seed=0)
    history = train_model(model, train, val, TrainConfig(epochs=4, recipe="gradual", ema=0.9, progress=False))
    assert history.rows[0]["frozen"] == 4 and history.rows[-1]["frozen"] == 1
    for n, p in model.backbone.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p.detach(), pretrained[n]), n


def test_a_resumed_run_with_an_average_gives_the_uninterrupted_runs_weights(splits, tmp_path):
    train, val = splits

    def run(epochs, out, resume=False, ema=0.9):
        model = make_model("formation", train, freeze=1, seed=1)
        train_model(model, train, val, TrainConfig(epochs=epochs, lr=2e-3, ema=ema, warmup=1, seed=1, progress=False),
                    out_dir=tmp_path / out, resume=resume)
        return model

    full = run(4, "full")
    run(2, "r")  # "interrupted" after 2 epochs
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    trains = {n for n, p in full.named_parameters() if p.requires_grad}
    assert ckpt["ema"]["steps"] == 2 * 2 and set(ckpt["ema"]["mean"]) == trains  # 80 crystals: 2 batches an epoch
    resumed = run(4, "r", resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # without the average now, the checkpoint of a run with one is refused, naming the setting
    with pytest.raises(RunError, match="ema"):
        run(4, "r", resume=True, ema=None)
