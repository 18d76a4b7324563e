"""The demo sends each HTTP edit to a held-out face the edit can change, chosen by the face's labels."""

from pathlib import Path

import pytest

from fet.data.shards import read_rows
from fet.editing.attributes import CELEBA_ATTRIBUTES
from ray_jobs.demo import IMAGE_REQUEST, VIDEO_REQUEST, WORLD_IMAGES, held_out_face


def test_the_demo_world_holds_a_held_out_face_for_each_request(tmp_path):
    """The demo's own SynthTalk world (its default number of faces, the same seed) must have a test-split
    face with each request's labels, or the demo stops at the HTTP step after all the training."""
    from fet.data.celeba_attributes import parse_celeba_attributes
    from fet.data.synthtalk.__main__ import generate

    generate(tmp_path, images=WORLD_IMAGES, clips=0, size=32, progress=False)
    labels = parse_celeba_attributes((tmp_path / "CelebAMask-HQ-attribute-anno.txt").read_text())
    held_out = {p.name for p in (tmp_path / "images/test").iterdir()}
    for text, wanted in (IMAGE_REQUEST, VIDEO_REQUEST):
        faces = [n for n, a in labels.items()
                 if n in held_out and all(a[CELEBA_ATTRIBUTES.index(k)] == v for k, v in wanted.items())]  # fmt: skip
        assert faces, (text, wanted)


# label sets that the 160-face fixture's test split holds (the demo's own are checked on its world above)
@pytest.mark.parametrize("wanted", [{"Wearing_Hat": 0, "Bald": 0}, {"Blond_Hair": 1, "No_Beard": 1, "Eyeglasses": 0}])
def test_the_first_held_out_face_with_the_labels_is_picked(synthtalk_shards, tmp_path, wanted):
    out = tmp_path / "demo"  # the demo's layout: out/shards and out/synthtalk/images
    (out / "synthtalk").mkdir(parents=True)
    (out / "shards").symlink_to(synthtalk_shards)
    (out / "synthtalk/images").symlink_to(Path(synthtalk_shards).parent / "world/images")
    labels = {r["image_id"]: r["attributes"] for r in read_rows(synthtalk_shards, "images", "test")}
    face = held_out_face(out, wanted)
    assert face.is_file(), face
    image_id = f"test/{face.stem}"
    matching = sorted(
        i for i, a in labels.items() if all(a[CELEBA_ATTRIBUTES.index(k)] == v for k, v in wanted.items())
    )
    assert image_id == matching[0], (wanted, image_id, matching[:3])
    with pytest.raises(RuntimeError, match="no held-out face with"):
        held_out_face(out, {"Bald": 1, "Blond_Hair": 1, "Black_Hair": 1})


def test_every_demo_edit_names_an_attribute_synthtalk_labels():
    """The HTTP requests and the evaluation's Table-2 edit must parse to attributes the demo's stage 2 can
    train (SynthTalk labels them); a typo would make the request fail or the table empty."""
    from fet.data.synthtalk.identity import MODELLED
    from fet.editing.attributes import AttributeLibrary
    from ray_jobs.demo import EVAL_EDIT

    library = AttributeLibrary()
    for text in (IMAGE_REQUEST[0], VIDEO_REQUEST[0], EVAL_EDIT):
        edits = library.parse_text(text).edits
        assert edits and set(edits) <= set(MODELLED), (text, edits)
