"""Every registered model predicts what it predicted when its weights were registered: the
predictions recorded by scripts/record_predictions.py on 43 real crystals (the bundled example
CIFs and the first 40 bundled Materials Project crystals), within 1e-6."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from crystalzoo import list_backbones, load_model

ROOT = Path(__file__).resolve().parents[2]
RECORDED = json.loads((ROOT / "tests" / "data" / "registered_predictions.json").read_text())


def _crystals():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from record_predictions import crystals
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return crystals()


def test_every_registered_model_has_recorded_predictions():
    assert sorted(k for k in RECORDED if k != "ids") == list_backbones()
    assert len(RECORDED["ids"]) == 43


@pytest.mark.parametrize("name", list_backbones())
def test_a_registered_model_predicts_as_recorded(name):
    ids, structures = _crystals()
    assert ids == RECORDED["ids"]
    got = np.asarray(load_model(name).predict(structures), dtype=np.float64).reshape(len(ids), -1)
    want = np.asarray(RECORDED[name])
    assert got.shape == want.shape and np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
