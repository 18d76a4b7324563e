"""Decoding images by content to upright 8-bit RGB: EXIF orientation is applied, a cut-out lies on
white, 16-bit grey keeps its tones, and what cannot be decoded, or is too large to decode, is an
ImageError naming its source."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fet.images import ImageError, load_image
from tests.conftest import media
from tests.fet.helpers import png_header


def test_a_readable_image_decodes_to_rgb_whatever_its_name(tmp_path):
    path = tmp_path / "portrait.jpg"  # a PNG under a JPEG name
    path.write_bytes(media("image/sadtalker_happy.png").read_bytes())
    img = load_image(path)
    assert img.mode == "RGB" and min(img.size) > 0


def test_a_photo_stored_sideways_is_turned_upright_by_its_exif_orientation():
    upright = load_image(media("image/sadtalker_happy.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90° clockwise to show, as a phone held upright writes it
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    got = np.asarray(load_image(buf.getvalue())).astype(int)
    assert got.shape == np.asarray(upright).shape
    assert np.abs(got - np.asarray(upright)).mean() < 3  # JPEG's loss only; sideways it is about 40


def test_a_cut_out_portrait_lies_on_white_whatever_its_hidden_colours():
    face = np.asarray(load_image(media("image/sadtalker_happy.png")))
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    rgba[:64, :, :] = (255, 0, 0, 0)  # a transparent band whose hidden colour is red
    rgba[64:72, :, 3] = 128  # and a half-transparent one
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    got = np.asarray(load_image(buf.getvalue())).astype(int)
    assert (got[:64] == 255).all() and np.array_equal(got[72:], face[72:])
    assert np.abs(got[64:72] - (face[64:72].astype(int) + 255) / 2).max() <= 1


def test_a_16_bit_grey_png_keeps_its_tones():
    grey = load_image(media("image/sadtalker_happy.png")).convert("L")
    deep = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # the same tones on 16 bits
    buf = io.BytesIO()
    deep.save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "I;16"
    rgb = np.asarray(load_image(buf.getvalue()))
    assert rgb.shape == (*grey.size[::-1], 3)
    assert np.array_equal(rgb[..., 0], np.asarray(grey)) and np.array_equal(rgb[..., 0], rgb[..., 2])


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
    with pytest.raises(ImageError, match=rf"{path}: not a readable image .*{match}") as e:
        load_image(path)
    assert "object at 0x" not in str(e.value)  # no in-memory buffer's repr in a message for people
    with pytest.raises(ImageError, match=r"<bytes>: not a readable image"):
        load_image(data)


def test_a_saved_image_takes_the_format_its_name_says_and_an_unknown_one_is_refused(tmp_path):
    from fet.images import save_image

    img = load_image(media("image/sadtalker_happy.png"))
    for name, fmt in (("a.png", "PNG"), ("b.JPG", "JPEG"), ("c.jpeg", "JPEG"), ("d.webp", "WEBP")):
        save_image(img, str(tmp_path / name))
        with Image.open(tmp_path / name) as saved:
            assert saved.format == fmt and saved.size == img.size, name
            if fmt != "JPEG":  # the lossless ones keep every pixel
                np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), np.asarray(img))
    for name in ("e.gif", "no_suffix"):
        with pytest.raises(ValueError, match=f"{name}: expected a name ending in .png, .jpg, .jpeg, .webp"):
            save_image(img, str(tmp_path / name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.JPG", "c.jpeg", "d.webp"]
