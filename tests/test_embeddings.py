"""Representations (issue 14): crystal and atom vectors from any backbone, on real crystals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Structure

from crystalzoo import build_arrays, collate, load_backbone, load_model
from crystalzoo.embeddings import embed
from crystalzoo.errors import ConfigError, StructureError

from .conftest import CIFS


@pytest.fixture(scope="module")
def formation():
    return load_model("formation")


def test_hidden_vectors_are_what_the_head_sees(formation, mp200_structures):
    vectors = formation.embed(mp200_structures[:50])
    assert vectors.shape == (50, formation.backbone.out_features) and vectors.dtype == np.float32
    with torch.no_grad():  # the head on the embedding gives the model's prediction
        pred = formation.output_in_units(formation.head(torch.from_numpy(vectors))).numpy()[:, 0]
    np.testing.assert_allclose(pred, formation.predict(mp200_structures[:50]), rtol=1e-5, atol=1e-5)


def test_pooled_and_atom_vectors_agree_with_the_layers(formation, mp200_structures):
    structures = mp200_structures[:20]
    g = collate(build_arrays(structures, progress=False))
    backbone = formation.backbone
    for layer in (0, 2, 4):
        atoms = embed(backbone, structures, kind="atoms", layer=layer)
        assert [len(a) for a in atoms] == g.n_atoms.tolist()
        with torch.no_grad():
            expected = backbone.atom_features(g, upto=layer).numpy()
        np.testing.assert_allclose(np.concatenate(atoms), expected, rtol=1e-5, atol=1e-6)
        pooled = embed(backbone, structures, kind="pooled", layer=layer)
        np.testing.assert_allclose(pooled, np.stack([a.mean(axis=0) for a in atoms]), rtol=1e-4, atol=1e-6)


def test_embeddings_do_not_depend_on_batches_jobs_or_atom_order(formation, mp200_structures):
    structures = mp200_structures[:80]
    reference = formation.embed(structures)
    np.testing.assert_allclose(formation.embed(structures, batch_size=7, n_jobs=2), reference, rtol=1e-5, atol=1e-6)
    shuffled = []
    for s in structures[:10]:
        order = np.random.default_rng(0).permutation(len(s))
        shuffled.append(Structure.from_sites([s[i] for i in order]))
    np.testing.assert_allclose(formation.embed(shuffled), reference[:10], rtol=1e-4, atol=1e-5)


def test_a_frozen_training_backbone_is_left_as_it_was():
    backbone = load_backbone("formation", freeze=2)
    assert backbone.training
    one = backbone.embed(CIFS[:3])
    assert backbone.training and backbone.frozen == 2
    assert all(not m.training for m in backbone.stages()[:3])  # frozen stages still fixed
    np.testing.assert_allclose(one, load_model("formation").embed(CIFS[:3]), rtol=1e-6, atol=1e-6)


def test_bad_embed_arguments_name_the_fix(formation):
    with pytest.raises(ConfigError, match="kind = 'mean'"):
        formation.embed(CIFS[:1], kind="mean")
    with pytest.raises(ConfigError, match="layer = 5: this backbone has 4 convolutions"):
        formation.embed(CIFS[:1], kind="atoms", layer=5)
    with pytest.raises(ConfigError, match="layer is for kind='pooled' or 'atoms'"):
        formation.embed(CIFS[:1], layer=2)
    with pytest.raises(ConfigError, match="embed takes a model or backbone"):
        embed("formation", CIFS[:1])
    with pytest.raises(StructureError, match="embed takes a list of crystals, not a set"):
        formation.embed(set(CIFS[:2]))
    assert formation.embed(CIFS[0]).shape == (1, 32)  # one crystal
    assert formation.embed([]).shape == (0, 32)
