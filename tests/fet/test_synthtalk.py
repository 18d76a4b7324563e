"""SynthTalk: determinism, attribute regions, audio-driven mouth motion, and the on-disk layouts."""

import json
import subprocess
import sys

import cv2
import decord
import numpy as np
import pytest

from fet.data.celeba_attributes import read_celeba_attributes
from fet.data.synthtalk.__main__ import generate
from fet.data.synthtalk.identity import sample_identity
from fet.data.synthtalk.preview import GRID_ATTRIBUTES
from fet.data.synthtalk.world import base_expression, item_rng, make_clip, make_image, render
from fet.editing.attributes import ATTRIBUTE_INDEX

SIZE = 96


def test_same_seed_same_bytes():
    a, b = make_clip(3, 7, 64, 1.0), make_clip(3, 7, 64, 1.0)
    assert a.landmarks.tobytes() == b.landmarks.tobytes() and a.audio.tobytes() == b.audio.tobytes()
    assert np.array_equal(make_image(3, 5, 64).image, make_image(3, 5, 64).image)
    assert make_clip(4, 7, 64, 1.0).audio.tobytes() != a.audio.tobytes()


def test_a_clips_video_decodes_to_its_rendered_frames_exactly(tmp_path):
    """The seed fixes what preprocessing reads: the clip's video decodes to the rendered frames in 4:2:0, to
    the last bit, however the encoder chose to code them (at CRF 18 its choices changed with the CPU load)."""
    import av

    generate(tmp_path, images=0, clips=1, size=64, seconds=1.0, seed=2, workers=1, progress=False)
    (mp4,) = tmp_path.glob("clips/*/clip00000.mp4")
    with av.open(str(mp4)) as container:
        decoded = [f.to_ndarray() for f in container.decode(video=0)]  # yuv420p planes, as coded
    rendered = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray()
                for f in make_clip(2, 0, 64, 1.0).frames]  # fmt: skip
    assert len(decoded) == len(rendered) == 25
    assert all(np.array_equal(d, r) for d, r in zip(decoded, rendered))


def test_counterfactual_image_is_the_same_face_with_one_attribute_changed():
    index = next(i for i in range(50) if not make_image(0, i, 64).labels[ATTRIBUTE_INDEX["Eyeglasses"]])
    face, glasses = make_image(0, index, 64), make_image(0, index, 64, {"Eyeglasses": True})
    changed = face.labels != glasses.labels
    assert changed.nonzero()[0].tolist() == [ATTRIBUTE_INDEX["Eyeglasses"]] and glasses.labels[changed] == 1
    assert np.array_equal(face.landmarks, glasses.landmarks)  # the same pose and expression
    assert (np.abs(face.image.astype(int) - glasses.image.astype(int)).max(axis=2) > 12).sum() >= 10
    assert np.array_equal(make_image(0, index, 64, {}).image, face.image)


def _regions(lm: np.ndarray) -> dict[str, np.ndarray]:
    """Image regions (bool masks) from the ground-truth landmarks, in pixels of a SIZE image."""
    p = lm[:, :2] * SIZE
    brow = (p[105] + p[334]) / 2
    face = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(face, [np.round(cv2.convexHull(p[:468].astype(np.float32))).astype(np.int32)], 1)

    def box(x0, y0, x1, y1):
        m = np.zeros((SIZE, SIZE), bool)
        m[max(0, int(y0)) : int(np.ceil(y1)), max(0, int(x0)) : int(np.ceil(x1))] = True
        return m

    x0, x1 = p[:468, 0].min(), p[:468, 0].max()
    eyes = box(x0 - 6, brow[1] - 2, x1 + 6, p[5, 1] + 2)
    mouth = box(p[61, 0] - 6, p[0, 1] - 5, p[291, 0] + 6, p[17, 1] + 4)
    lower = box(0, p[2, 1] - 4, SIZE, SIZE)  # from the nose bottom down (a beard reaches the cheeks)
    above_brows = box(0, 0, SIZE, brow[1] + 2)
    outside = cv2.dilate((face == 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # silhouette edge included
    head_and_hair = outside | above_brows | box(0, 0, SIZE, brow[1] + 6)
    return {
        "Eyeglasses": eyes, "Smiling": mouth, "Mouth_Slightly_Open": lower, "Wearing_Lipstick": mouth,
        "Blond_Hair": outside | above_brows, "Black_Hair": outside | above_brows, "Gray_Hair": outside | above_brows,
        "Bald": outside | above_brows, "Bangs": above_brows, "Wearing_Hat": above_brows | outside,
        "No_Beard": lower, "Mustache": mouth | box(p[61, 0] - 6, p[2, 1] - 3, p[291, 0] + 6, p[13, 1]),
        "Goatee": lower, "Pale_Skin": np.ones_like(outside), "Male": head_and_hair,
    }  # fmt: skip


def _plain_identity(k: int):
    return sample_identity(item_rng(0, "test", k)).with_attributes(
        Male=True, Brown_Hair=True, Eyeglasses=False, Wearing_Hat=False, Smiling=False, Mouth_Slightly_Open=False,
        Pale_Skin=False, Wearing_Lipstick=False, No_Beard=True, Bangs=False,
    )  # fmt: skip


@pytest.mark.parametrize("attribute", GRID_ATTRIBUTES)
def test_each_attribute_changes_pixels_in_its_region_only(attribute):
    ident = _plain_identity(1)
    pose = np.zeros(6)
    base, lm, _ = render(ident, base_expression(ident), pose, SIZE)
    flipped = ident.with_attributes(**{attribute: not ident.has(attribute)})
    assert flipped.labels()[ATTRIBUTE_INDEX[attribute]] != ident.labels()[ATTRIBUTE_INDEX[attribute]]
    other, _, _ = render(flipped, base_expression(flipped), pose, SIZE)
    changed = np.abs(other.astype(int) - base.astype(int)).max(axis=2) > 12
    region = _regions(lm)[attribute]
    inside, outside = (changed & region).sum(), (changed & ~region).sum()
    assert inside >= 15, f"{attribute}: only {inside} pixels changed in its region"
    assert outside <= 0.003 * SIZE * SIZE, f"{attribute}: {outside} pixels changed outside its region"


def test_mouth_opening_follows_the_audio_envelope():
    """Measured over 6 clips: correlation ≈ 0.6–0.75 at the best lag, the mouth leading by 1–2 frames."""
    best = []
    for i in range(6):
        clip = make_clip(0, i, 64, 4.0)
        lips = (clip.landmarks[:, 14, 1] - clip.landmarks[:, 13, 1]) * 64  # inner-lip gap in pixels
        hop = 16000 // 25
        env = np.sqrt((clip.audio[: len(lips) * hop].reshape(len(lips), hop) ** 2).mean(1))
        corr = {lag: np.corrcoef(lips[max(0, -lag) : len(lips) - max(0, lag)], env[max(0, lag) : len(env) - max(0, -lag)])[0, 1]
                for lag in range(-4, 5)}  # fmt: skip
        lag = max(corr, key=corr.get)
        best.append((lag, corr[lag]))
    assert np.mean([c for _, c in best]) > 0.5, best
    assert all(0 <= lag <= 3 for lag, _ in best), best  # audio follows the mouth (viseme lead)


def test_generated_dataset_layout_and_media(tmp_path):
    stats = generate(tmp_path, images=12, clips=2, size=64, seconds=2.0, seed=1, workers=2, progress=False)
    assert stats["images"] == 12 and stats["clips"] == 2
    pngs = sorted(tmp_path.glob("images/*/*.png"))
    labels = read_celeba_attributes(str(tmp_path / "CelebAMask-HQ-attribute-anno.txt"))
    assert len(pngs) == 12 and set(labels) == {p.name for p in pngs}
    assert all(labels[p.name][ATTRIBUTE_INDEX["Attractive"]] == -1 for p in pngs)  # not modelled → unknown
    mp4s = sorted(tmp_path.glob("clips/*/*.mp4"))
    assert len(mp4s) == 2
    for mp4 in mp4s:
        vr = decord.VideoReader(str(mp4))
        assert len(vr) == 50 and vr.get_avg_fps() == pytest.approx(25.0)
        assert vr[0].shape == (64, 64, 3)
        ar = decord.AudioReader(str(mp4), sample_rate=16000, mono=True)
        assert ar.duration() == pytest.approx(2.0, abs=0.1)
        gt = np.load(mp4.with_suffix(".npz"))
        assert (
            gt["landmarks"].shape == (50, 478, 3)
            and gt["pose"].shape == (50, 6)
            and gt["transform"].shape == (50, 4, 4)
        )
    meta = json.loads((tmp_path / "synthtalk.json").read_text())
    assert meta["fps"] == 25 and meta["sample_rate"] == 16000


def test_cli_writes_previews(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fet.data.synthtalk", "--out", str(tmp_path), "--images", "4", "--clips", "0",
                          "--preview"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "preview_grid.png").stat().st_size > 10_000 and (tmp_path / "preview_strip.png").exists()
    bad = subprocess.run([sys.executable, "-m", "fet.data.synthtalk", "--out", str(tmp_path), "--size", "63"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "--size 63: expected an even number" in bad.stderr


def test_cli_refuses_counts_it_cannot_make_and_a_folder_it_cannot_create(tmp_path, capsys):
    from fet.data.synthtalk.__main__ import main

    (tmp_path / "file").write_text("x")
    cases = {("--images", "-5"): "--images -5: expected 0 or more", ("--workers", "0"): "--workers 0: expected 1 or more",
             ("--clips", "1", "--seconds", "0"): "--seconds 0: expected a positive clip length"}  # fmt: skip
    for args, message in cases.items():
        with pytest.raises(SystemExit) as e:
            main(["--out", str(tmp_path / "w"), "--images", "0", "--clips", "0", *args])
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a file where the folder would go: a message, not a traceback
        main(["--out", str(tmp_path / "file" / "w"), "--images", "1", "--clips", "0"])
    assert e.value.code == 2 and "cannot be created" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("attribute", GRID_ATTRIBUTES)
def test_each_attribute_shows_at_the_embedded_default_size(attribute):
    """At the tiny preset's 32 px (1 px ≈ 1 cm of face) every attribute still changes a visible patch: a cue
    below a pixel cannot be learned from the images, whatever the model."""
    changed = []
    for k in range(4):
        ident = _plain_identity(k)
        flipped = ident.with_attributes(**{attribute: not ident.has(attribute)})
        a, b = (render(i, base_expression(i), np.zeros(6), 32)[0].astype(int) for i in (ident, flipped))
        changed.append((np.abs(a - b).max(axis=2) > 24).sum())
    assert np.mean(changed) >= 10, f"{attribute}: {changed} pixels of 32 × 32 changed"


def test_forehead_shows_below_the_hairline_and_bangs_cover_it():
    ident = _plain_identity(1)
    for bangs in (False, True):
        f = ident.with_attributes(Bangs=bangs)
        image, lm, _ = render(f, base_expression(f), np.zeros(6), SIZE)
        p = lm[:, :2] * SIZE
        brow = (p[105] + p[334]) / 2
        x, y = np.round(brow + 0.45 * (p[10] - brow)).astype(int)  # mid-forehead
        gap = np.abs(image[y - 1 : y + 2, x - 1 : x + 2].astype(int) - f.hair_colour).max()
        assert (gap <= 12) if bangs else (gap > 40), (bangs, image[y, x], f.hair_colour)
