import pytest
import torch

from fet.editing.attributes import ATTRIBUTE_INDEX, AttributeLibrary
from fet.editing.classifier import AttributeClassifier
from fet.editing.edit import edit_semantic, parse_edits
from fet.editing.interpolate import slerp
from fet.training.stage2 import classifier_aurocs, fit_classifier
from tests.fet.helpers import SIZE


def two_groups(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of two visually different groups: a bright square on the upper half (label 1) or not."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.4 - 0.6
    y = torch.arange(n) % 2
    x[y == 1, :, 2:7, 4:12] = 0.9
    return x, y


@pytest.fixture(scope="module")
def glasses_classifier(trained_tiny):
    """A classifier trained on z_sem of the two groups, the group labelled as Eyeglasses."""
    model, _, _ = trained_tiny
    x, y = two_groups(64)
    with torch.no_grad():
        z = model.encode(x)
    labels = torch.full((64, 40), -1, dtype=torch.long)
    labels[:, ATTRIBUTE_INDEX["Eyeglasses"]] = y
    clf = fit_classifier(z, labels, epochs=200, lr=1e-2, weight_decay=0.0, batch_size=64, seed=0, progress=False)
    return model, clf


def test_linear_classifier_separates_two_visual_groups(glasses_classifier):
    model, clf = glasses_classifier
    x, y = two_groups(32, seed=1)  # held out
    labels = torch.full((32, 40), -1, dtype=torch.long)
    labels[:, ATTRIBUTE_INDEX["Eyeglasses"]] = y
    with torch.no_grad():
        aucs = classifier_aurocs(clf, model.encode(x), labels)
    assert clf.trained_attributes == ["Eyeglasses"]
    assert aucs["Eyeglasses"] > 0.95, aucs


def test_edit_moves_the_logit_the_expected_way(glasses_classifier):
    model, clf = glasses_classifier
    x, _ = two_groups(8, seed=2)
    with torch.no_grad():
        z = model.encode(x)
        base = clf(z)[:, ATTRIBUTE_INDEX["Eyeglasses"]]
        up = clf(edit_semantic(z, clf, {"Eyeglasses": 0.5}))[:, ATTRIBUTE_INDEX["Eyeglasses"]]
        down = clf(edit_semantic(z, clf, {"eyeglasses": -0.5}))[:, ATTRIBUTE_INDEX["Eyeglasses"]]
    assert (up > base).all() and (down < base).all()
    # the step has the documented length: α·√d in normalised space
    zn = clf.normalize(edit_semantic(z, clf, {"Eyeglasses": 0.5})) - clf.normalize(z)
    assert torch.allclose(zn.norm(dim=1), torch.full((8,), 0.5 * clf.z_dim**0.5), rtol=1e-4)


def test_edit_errors_name_the_input(glasses_classifier):
    _, clf = glasses_classifier
    z = torch.zeros(1, clf.z_dim)
    with pytest.raises(KeyError, match="unknown attribute 'Unicorn_Horn'"):
        edit_semantic(z, clf, {"Unicorn_Horn": 0.3})
    with pytest.raises(ValueError, match=r"α=3.0 for Eyeglasses: expected a value in \[-1.0, 1.0\]"):
        edit_semantic(z, clf, {"Eyeglasses": 3.0})
    with pytest.raises(ValueError, match="'Smiling' has no trained classifier"):
        edit_semantic(z, clf, {"Smiling": 0.3})
    with pytest.raises(ValueError, match="z_sem: expected"):
        edit_semantic(torch.zeros(1, 3), clf, {"Eyeglasses": 0.3})


@pytest.mark.parametrize(
    "text, expected, unknown",
    [
        ("add glasses and make her smile, no beard", {"Eyeglasses": 1, "Smiling": 1, "No_Beard": 1}, []),
        ("remove the glasses", {"Eyeglasses": -1}, []),
        ("glasses off, take off the hat", {"Eyeglasses": -1, "Wearing_Hat": -1}, []),
        ("put the glasses away, mouth closed", {"Eyeglasses": -1, "Mouth_Slightly_Open": -1}, []),
        ("without a hat but with blond hair", {"Wearing_Hat": -1, "Blond_Hair": 1}, []),
        ("add a beard", {"No_Beard": -1}, []),
        ("make him look older", {"Young": -1}, []),
        ("Gray hair; not smiling", {"Gray_Hair": 1, "Smiling": -1}, []),
        ("add glasses and a unicorn horn", {"Eyeglasses": 1}, ["unicorn", "horn"]),
        ("zebra stripes", {}, ["zebra", "stripes"]),
        ("Wearing_Lipstick", {"Wearing_Lipstick": 1}, []),
    ],
)
def test_text_parsing(text, expected, unknown):
    lib = AttributeLibrary(default_alpha=0.3)
    parsed = lib.parse_text(text)
    assert {k: round(v / 0.3) for k, v in parsed.edits.items()} == expected
    assert parsed.unknown == unknown


def test_text_that_names_no_attribute_is_refused_not_taken_as_no_edit():
    lib, clf = AttributeLibrary(default_alpha=0.3), AttributeClassifier(8)
    clf.trained[:] = True
    with pytest.raises(ValueError, match=r"text: no known attribute in 'zebra stripes'; expected phrases such as"):
        parse_edits(lib, clf, None, "zebra stripes")
    with pytest.raises(ValueError, match="no known attribute"):  # with explicit edits too: the text was not understood
        parse_edits(lib, clf, {"Smiling": 0.2}, "zebra stripes")
    parsed = parse_edits(lib, clf, None, "add glasses and a unicorn horn")  # partly understood: the rest is reported
    assert parsed.edits == {"Eyeglasses": pytest.approx(0.3)} and parsed.unknown == ["unicorn", "horn"]
    assert parse_edits(lib, clf, {"Smiling": 0.2}).edits == {"Smiling": 0.2}


def test_intensity_words_scale_alpha_within_range():
    lib = AttributeLibrary(default_alpha=0.4, max_abs_alpha=0.5)
    assert lib.parse_text("slightly smiling").edits["Smiling"] == pytest.approx(0.2)
    assert lib.parse_text("very blond").edits["Blond_Hair"] == pytest.approx(0.5)  # clipped to the range


def test_explicit_edit_spec():
    lib = AttributeLibrary()
    assert lib.parse_spec("Eyeglasses=+1, smiling=-0.5") == {"Eyeglasses": 1.0, "Smiling": -0.5}
    with pytest.raises(ValueError, match="expected Attribute=alpha"):
        lib.parse_spec("Eyeglasses")
    with pytest.raises(ValueError, match="α must be a number"):
        lib.parse_spec("Eyeglasses=lots")
    with pytest.raises(ValueError, match="edit 'Wings=1': unknown attribute 'Wings'; expected one of the 40"):
        lib.parse_spec("Eyeglasses=1,Wings=1")  # typed by a user: a ValueError (the CLI's clean error), no KeyError


def test_slerp_keeps_norm_and_endpoints():
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5).flatten(1).norm(dim=1)
    assert (mid > 0.9 * torch.minimum(a.flatten(1).norm(dim=1), b.flatten(1).norm(dim=1))).all()


def test_untrained_classifier_refuses_normaliser_of_wrong_shape():
    clf = AttributeClassifier(8)
    with pytest.raises(ValueError, match=r"expected \(N >= 2, 8\)"):
        clf.fit_normalizer(torch.zeros(5, 4))
