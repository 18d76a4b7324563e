"""Decoding images by content: what cannot be decoded, or is too large to decode, is an ImageError
naming its source."""

from __future__ import annotations

import pytest

from fet.images import ImageError, load_image
from tests.conftest import media
from tests.fet.helpers import png_header


def test_a_readable_image_decodes_to_rgb_whatever_its_name(tmp_path):
    path = tmp_path / "portrait.jpg"  # a PNG under a JPEG name
    path.write_bytes(media("image/sadtalker_happy.png").read_bytes())
    img = load_image(path)
    assert img.mode == "RGB" and min(img.size) > 0


@pytest.mark.parametrize(
    "data, match",
    [
        (b"hello, I am text\n" * 20, "cannot identify image"),
        (png_header(15000), r"225000000 pixels"),  # PIL's decompression-bomb guard
    ],
    ids=["text", "decompression bomb"],
)
def test_an_unreadable_or_oversized_image_is_an_image_error_naming_its_source(tmp_path, data, match):
    path = tmp_path / "face.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=rf"{path}: not a readable image .*{match}"):
        load_image(path)
    with pytest.raises(ImageError, match=r"<bytes>: not a readable image"):
        load_image(data)
