"""Edits by the attribute label model: what turning an attribute on implies, the closed-form fit (whole or
summed over shards), and that its edit changes the target alone where the classifier's normal drags a
correlated attribute with it. Codes are drawn from a known linear world, so the right answer is known."""

from __future__ import annotations

import pytest
import torch

from fet.editing.attributes import ATTRIBUTE_INDEX, AttributeLibrary
from fet.editing.classifier import AttributeClassifier
from fet.editing.edit import edit_semantic
from fet.editing.implications import implied_labels
from fet.editing.label_model import AttributeLabelModel
from fet.editor import load_attribute_classifier, load_attribute_library, save_attribute_model
from fet.training.stage2 import fit_classifier

Z_DIM = 24
BLOND, BANGS, GLASSES, BROWN = (ATTRIBUTE_INDEX[a] for a in ("Blond_Hair", "Bangs", "Eyeglasses", "Brown_Hair"))


def world(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes z = labels · B + unit noise where blond hair and bangs go together (85% agree), so a blond
    classifier leans on the bangs too; brown hair is the other hair colour. Returns (z, labels (n, 40) with -1 for attributes this world has no label for, B)."""
    g = torch.Generator().manual_seed(seed)
    blond = torch.rand(n, generator=g) < 0.5
    bangs = torch.where(torch.rand(n, generator=g) < 0.85, blond, ~blond)
    glasses = torch.rand(n, generator=g) < 0.4
    labels = torch.full((n, 40), -1, dtype=torch.long)
    for i, v in ((BLOND, blond), (BROWN, ~blond), (BANGS, bangs), (GLASSES, glasses)):
        labels[:, i] = v.long()
    basis = torch.linalg.qr(torch.randn(Z_DIM, Z_DIM, generator=g))[0][:4] * 3.0  # orthogonal rows
    z = torch.stack([blond, bangs, glasses, ~blond], 1).float() @ basis + torch.randn(n, Z_DIM, generator=g)
    return z, labels, basis


@pytest.fixture(scope="module")
def fitted():
    z, labels, _ = world(1500)
    return fit_classifier(z, labels, epochs=60, lr=5e-2, weight_decay=0.0, batch_size=128, seed=0, progress=False)


def test_turning_a_hair_colour_on_turns_the_others_off_and_turning_off_implies_nothing():
    labels = torch.zeros(2, 40, dtype=torch.bool)
    labels[0, BROWN] = labels[1, ATTRIBUTE_INDEX["Bald"]] = labels[:, GLASSES] = True
    blond = implied_labels(labels, "Blond_Hair")
    assert blond[:, BLOND].all() and not blond[:, BROWN].any() and not blond[:, ATTRIBUTE_INDEX["Bald"]].any()
    assert blond[:, GLASSES].all()  # unrelated attributes stay
    assert torch.equal(implied_labels(labels, "Brown_Hair", on=False)[:, BLOND], labels[:, BLOND])
    beard = implied_labels(torch.ones(1, 40, dtype=torch.bool), "No_Beard")
    assert not beard[0, ATTRIBUTE_INDEX["Mustache"]] and not beard[0, ATTRIBUTE_INDEX["Goatee"]]
    with pytest.raises(KeyError, match="Blonde"):
        implied_labels(labels, "Blonde")
    with pytest.raises(ValueError, match=r"\(B, 40\)"):
        implied_labels(labels[:, :16], "Bald")


def test_fit_recovers_the_world_and_shard_sums_give_the_same_model():
    z, labels, basis = world(2000)
    model = AttributeLabelModel(Z_DIM, 40).fit(z, labels, ridge=1.0)
    before = torch.zeros(2, 40, dtype=torch.bool)
    before[0, BROWN] = before[1, BLOND] = before[1, BANGS] = True  # faces this world has
    after = before.clone()
    after[:, GLASSES] = True
    error = (model.shift(before, after) - basis[2]).norm(dim=1) / basis[2].norm()  # against the glasses row of B
    assert (error < 0.2).all(), error  # 0.09–0.11 at this noise and size
    halves = [model.statistics(z[s], labels[s]) for s in (slice(0, 700), slice(700, None))]
    sharded = AttributeLabelModel(Z_DIM, 40)
    sharded.solve(halves[0][0] + halves[1][0], halves[0][1] + halves[1][1], ridge=1.0)
    assert torch.allclose(sharded.weight, model.weight, atol=1e-5)
    with pytest.raises(ValueError, match="ridge"):
        sharded.solve(*halves[0], ridge=0.0)
    with pytest.raises(ValueError, match="not fitted"):
        AttributeLabelModel(Z_DIM, 40).shift(before, after)


def test_label_model_edit_changes_the_target_alone_where_the_normal_drags_a_correlated_attribute(fitted):
    z, labels, _ = world(400, seed=1)
    lacking = (labels[:, BLOND] == 0) & (labels[:, BANGS] == 0)
    faces = z[lacking]
    normal = fitted.labels(edit_semantic(faces, fitted, {"Blond_Hair": 1.0}, AttributeLibrary(1.0, 2.0)))
    label_model = AttributeLibrary(1.0, 2.0, direction="label_model")
    shifted = fitted.labels(edit_semantic(faces, fitted, {"Blond_Hair": 1.0}, label_model))
    assert shifted[:, BLOND].float().mean() > 0.95 and shifted[:, BROWN].float().mean() < 0.05  # no longer brown
    assert shifted[:, BANGS].float().mean() < 0.2
    assert shifted[:, GLASSES].eq(fitted.labels(faces)[:, GLASSES]).float().mean() > 0.95
    assert normal[:, BANGS].float().mean() > 0.5  # the classifier's normal turns bangs on with the blond hair
    wearing = z[labels[:, GLASSES] == 1]
    removed = fitted.labels(edit_semantic(wearing, fitted, {"Eyeglasses": -1.0}, label_model))
    assert removed[:, GLASSES].float().mean() < 0.05
    assert removed[:, BLOND].eq(fitted.labels(wearing)[:, BLOND]).float().mean() > 0.95
    read = fitted.labels(faces)
    brown = faces[read[:, BROWN] & ~read[:, BLOND]]  # already brown as the classifiers read them: no shift
    assert len(brown) > 100 and torch.allclose(edit_semantic(brown, fitted, {"Brown_Hair": 1.0}, label_model), brown)


def test_label_model_survives_save_and_load_and_an_old_classifier_is_refused_clearly(fitted, tmp_path):
    library = AttributeLibrary(1.0, 2.0, direction="label_model")
    save_attribute_model(str(tmp_path / "new"), fitted, library)
    loaded, loaded_library = (
        load_attribute_classifier(str(tmp_path / "new")),
        load_attribute_library(str(tmp_path / "new")),
    )
    assert loaded_library.direction == "label_model"
    z, _, _ = world(8, seed=2)
    assert torch.allclose(edit_semantic(z, loaded, {"Eyeglasses": 1.0}, loaded_library),
                          edit_semantic(z, fitted, {"Eyeglasses": 1.0}, library), atol=1e-5)  # fmt: skip
    old = AttributeClassifier(Z_DIM)  # as stage 2 wrote it before the label model
    old.load_state_dict({k: v for k, v in fitted.state_dict().items() if not k.startswith("label_model.")})
    save_attribute_model(str(tmp_path / "old"), old, AttributeLibrary(1.0, 2.0))
    reloaded = load_attribute_classifier(str(tmp_path / "old"))
    assert reloaded.label_model is None
    assert torch.allclose(edit_semantic(z, reloaded, {"Eyeglasses": 1.0}, AttributeLibrary(1.0, 2.0)),
                          edit_semantic(z, fitted, {"Eyeglasses": 1.0}, AttributeLibrary(1.0, 2.0)), atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="label model"):
        edit_semantic(z, reloaded, {"Eyeglasses": 1.0}, library)
    with pytest.raises(ValueError, match="direction='sideways'"):
        AttributeLibrary(1.0, 2.0, direction="sideways")
