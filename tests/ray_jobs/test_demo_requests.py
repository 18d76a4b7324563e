"""The demo sends each HTTP edit to a held-out face the edit can change, chosen by the face's labels."""

from pathlib import Path

import pytest

from fet.data.shards import read_rows
from fet.editing.attributes import CELEBA_ATTRIBUTES
from ray_jobs.demo import IMAGE_REQUEST, VIDEO_REQUEST, held_out_face


def test_each_request_gets_the_first_held_out_face_with_its_labels(synthtalk_shards, tmp_path):
    out = tmp_path / "demo"  # the demo's layout: out/shards and out/synthtalk/images
    (out / "synthtalk").mkdir(parents=True)
    (out / "shards").symlink_to(synthtalk_shards)
    (out / "synthtalk/images").symlink_to(Path(synthtalk_shards).parent / "world/images")
    labels = {r["image_id"]: r["attributes"] for r in read_rows(synthtalk_shards, "images", "test")}
    for _, wanted in (IMAGE_REQUEST, VIDEO_REQUEST):
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
