"""The evaluation metrics against their reference implementations and known answers, on real media."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from fet.metrics.fid import FeatureStats, feature_stats, fid, frechet_distance, inception_features
from fet.metrics.identity import identity_consistency
from fet.metrics.image_quality import psnr, psnr_per_image, ssim, ssim_per_image
from fet.metrics.inception import FIDInception, load_fid_inception
from fet.metrics.landmark_distance import f_lmd, m_lmd
from fet.metrics.sharpness import cpbd, gray
from fet.metrics.sync import landmark_audio_sync
from fet.metrics.syncnet import (
    SyncNet,
    face_crops,
    load_syncnet,
    offset_distances,
    sync_scores,
    syncnet_score,
)
from fet.metrics.weights import MissingWeightsError
from tests.conftest import media


def rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(media(f"image/{name}")).convert("RGB"))


def degraded(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(1.5)))


@pytest.fixture(scope="module")
def dlib_face():
    pytest.importorskip("dlib")
    from fet.metrics.dlib_face import DlibFace, default_models_dir

    if default_models_dir() is None:
        pytest.skip("face_recognition_models is not installed")
    return DlibFace()


# -- PSNR, SSIM, CPBD --------------------------------------------------------------------------------------
@pytest.mark.parametrize("a, b", [("sadtalker_happy.png", "sadtalker_sad.png"), ("diffae_interp_a.png", None)])
def test_psnr_and_ssim_equal_scikit_image(a, b):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    x = rgb(a)
    y = rgb(b) if b else degraded(x)
    ref_psnr = peak_signal_noise_ratio(x, y, data_range=255)
    assert abs(psnr(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), 255.0) - ref_psnr) < 1e-6
    assert abs(psnr_per_image(x[None], y[None])[0] - ref_psnr) < 1e-6
    ref_ssim = structural_similarity(
        x, y, data_range=255, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert abs(ssim(x, y) - ref_ssim) < 1e-4
    assert ssim(x, x) == pytest.approx(1.0)
    # a batch gives each pair its own score
    both = ssim_per_image(np.stack([x, x]), np.stack([y, x]))
    assert both[0] == pytest.approx(ref_ssim, abs=1e-4) and both[1] == pytest.approx(1.0)


def test_ssim_rejects_mismatched_images():
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(np.zeros((32, 32, 3)), np.zeros((32, 30, 3)))


@pytest.mark.parametrize("name", ["sadtalker_people_0.png", "diffae_sandy_aligned.png", "aniportrait_aragaki.png"])
def test_cpbd_equals_the_cpbd_package(name):
    import scipy.ndimage

    if not hasattr(scipy.ndimage, "imread"):  # cpbd 1.0.7 imports it for its command line only; SciPy dropped it
        scipy.ndimage.imread = None
    reference = pytest.importorskip("cpbd.compute")

    image = gray(rgb(name))
    ours = cpbd(image)
    assert abs(ours - reference.compute(image)) < 1e-3
    assert 0.0 < ours < 1.0
    blurred = gray(degraded(rgb(name)))
    assert abs(cpbd(blurred) - reference.compute(blurred)) < 1e-3
    assert cpbd(blurred) < ours  # blur lowers sharpness


# -- landmark distance -----------------------------------------------------------------------------------
def test_landmark_distance_zero_for_identical_frames_and_grows_with_a_known_shift(dlib_face):
    points = dlib_face.landmarks(rgb("sadtalker_happy.png"))
    assert points is not None and points.shape == (68, 2)
    truth = np.repeat(points[None], 5, axis=0)
    assert m_lmd(truth, truth) == 0.0 and f_lmd(truth, truth) == 0.0
    # moving the whole face is not a landmark error: every set is centred on its mean
    assert m_lmd(truth + np.array([7.0, -3.0]), truth) == pytest.approx(0.0, abs=1e-9)
    # open the mouth: the lower lip (k of the 20 mouth points) moves down by d pixels; after centring, the
    # moved points differ by d(1 − k/n) and the others by d·k/n, so the mean distance is 2·d·k(n − k)/n²
    lower_lip = [*range(55, 60), *range(65, 68)]  # outer 55–59 and inner 65–67: k = 8
    k = len(lower_lip)
    for d in (1.0, 2.0, 4.0):
        moved = truth.copy()
        moved[:, lower_lip, 1] += d
        assert m_lmd(moved, truth) == pytest.approx(2 * d * k * (20 - k) / 20**2)
        assert f_lmd(moved, truth) == pytest.approx(2 * d * k * (68 - k) / 68**2)
    # frames without a face are left out, not counted as zero
    gaps = truth.copy()
    gaps[0] = np.nan
    moved = gaps.copy()
    moved[:, lower_lip, 1] += 2.0
    assert m_lmd(moved, gaps) == pytest.approx(2 * 2.0 * k * (20 - k) / 400)


def test_real_expressions_have_a_larger_mouth_distance_than_the_same_frame(dlib_face):
    happy = dlib_face.landmarks(rgb("sadtalker_happy.png"))[None]
    sad = dlib_face.landmarks(rgb("sadtalker_sad.png"))[None]
    assert m_lmd(happy, sad) > 1.0  # a smile against a closed mouth, in pixels of the 256² portraits


# -- TL-ID / TG-ID ----------------------------------------------------------------------------------------
def test_identity_consistency_keeps_one_person_and_drops_when_frames_alternate_people(dlib_face):
    happy, sad, other = (
        dlib_face.embedding(rgb(n)) for n in ("sadtalker_happy.png", "sadtalker_sad.png", "sadtalker_people_0.png")
    )
    source = np.stack([happy, sad] * 4)  # one woman, changing expression
    itself = identity_consistency(source, source)
    assert itself.tl_id == pytest.approx(1.0) and itself.tg_id == pytest.approx(1.0) and itself.frames == 8
    # the same woman in the other expression order keeps her identity
    same = identity_consistency(source, np.stack([sad, happy] * 4))
    assert same.tl_id > 0.99 and same.tg_id > 0.99
    # every other frame another person: adjacent frames change identity
    mixed = identity_consistency(source, np.stack([happy, other] * 4))
    assert mixed.tl_id < 0.93 and mixed.tl_id < same.tl_id - 0.05
    assert mixed.tg_id < same.tg_id
    # a face missing in one frame drops that frame from both videos
    gap = source.copy()
    gap[3] = np.nan
    assert identity_consistency(source, gap).frames == 7


def test_dlib_upscales_small_frames_and_reports_no_face(dlib_face):
    small = np.asarray(Image.fromarray(rgb("sadtalker_happy.png")).resize((64, 64), Image.BICUBIC))
    points = dlib_face.landmarks(small)
    full = dlib_face.landmarks(rgb("sadtalker_happy.png"))
    assert points is not None and np.abs(points * 4 - full).mean() < 4.0  # same face, in the small frame's pixels
    track = dlib_face.analyse(np.stack([small, np.full_like(small, 128)]))
    assert track.found.tolist() == [True, False]
    assert np.allclose(track.landmarks[0], points) and np.isnan(track.landmarks[1]).all()
    x0, y0, x1, y1 = track.boxes[0]
    assert x0 < points[:, 0].mean() < x1 and y0 < points[:, 1].mean() < y1


def test_dlib_models_dir_that_lacks_the_files_names_them(tmp_path):
    pytest.importorskip("dlib")
    from fet.metrics.dlib_face import DlibFace

    with pytest.raises(MissingWeightsError, match="shape_predictor_68_face_landmarks.dat"):
        DlibFace(tmp_path)


# -- FID ------------------------------------------------------------------------------------------------
def test_frechet_distance_of_gaussians_with_known_statistics():
    rng = np.random.default_rng(0)
    d = 6
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # a shared rotation: the covariances commute
    s1, s2 = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    a = FeatureStats(rng.normal(size=d), q @ np.diag(s1) @ q.T, 0)
    b = FeatureStats(rng.normal(size=d), q @ np.diag(s2) @ q.T, 0)
    expected = np.sum((a.mean - b.mean) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # from samples: the fitted Gaussians converge to the true distance
    x = rng.multivariate_normal(a.mean, a.cov, 20_000)
    y = rng.multivariate_normal(b.mean, b.cov, 20_000)
    assert fid(x, y) == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError, match="N ≥ 2"):
        feature_stats(x[:1])


def test_fid_network_loads_a_saved_state_dict_and_names_a_missing_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        load_fid_inception(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    net = FIDInception()
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    loaded = load_fid_inception(path)
    images = np.stack([rgb("diffae_interp_a.png")[::4, ::4], rgb("diffae_interp_b.png")[::4, ::4]])
    feats = inception_features(loaded, images)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not the FID Inception state dict"):
        load_fid_inception(tmp_path / "other.pth")
    # a file that is no weights at all, or a pickle of more than tensors: named, and never the advice of
    # torch's own message to load it with weights_only=False
    (tmp_path / "notes.pth").write_text("these are notes, not weights")
    torch.save({"code": FIDInception}, tmp_path / "pickled.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    reasons = {"notes.pth": "", "pickled.pth": "Unsupported global: GLOBAL fet.metrics.inception",
               "empty.pth": "EOFError (an empty or cut-short file)"}  # fmt: skip
    for name, reason in reasons.items():
        with pytest.raises(ValueError, match=f"{tmp_path / name}: not a PyTorch weights file of FID Inception") as e:
            load_fid_inception(tmp_path / name)
        assert reason in str(e.value) and "weights_only" not in str(e.value), str(e.value)


# -- SyncNet --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lead", [-4, 0, 3, 9])
def test_syncnet_offset_from_synthetic_distance_tables(lead):
    rng = np.random.default_rng(lead + 10)
    n, d = 60, 32
    stream = torch.from_numpy(rng.normal(size=(n + 40, d))).float()
    video = stream[20 : 20 + n]
    audio = stream[20 + lead : 20 + lead + n]  # video frame i matches audio window i − lead: the audio leads
    score = sync_scores(offset_distances(video, audio))
    assert score.offset == lead
    # at the matching shift only windows whose partner lies past either end (zero padding) add distance
    outside = [i for i in range(n) if not 0 <= i - lead < n]
    expected = float(sum(torch.linalg.vector_norm(video[i]) for i in outside)) / n
    assert score.min_dist == pytest.approx(expected, rel=1e-4, abs=1e-4) and score.confidence > 1.0


def test_syncnet_formulas_on_a_hand_made_table():
    table = torch.full((4, 31), 10.0)
    table[:, 12] = torch.tensor([3.0, 4.0, 5.0, 4.0])  # column 12: shift −3 ⇒ offset 15 − 12 = 3
    table[:, 20] = 8.0
    score = sync_scores(table)
    assert score.offset == 3 and score.min_dist == pytest.approx(4.0) and score.confidence == pytest.approx(6.0)


def test_syncnet_network_loads_and_scores_a_real_clip(tmp_path):
    from fet.audio.load import load_audio
    from fet.media.video import VideoReader

    with pytest.raises(MissingWeightsError, match="syncnet_v2.model"):
        load_syncnet(None)
    path = tmp_path / "syncnet.pth"
    torch.save(SyncNet().state_dict(), path)
    model = load_syncnet(path)
    clip = media("video/retalking_5.mp4")
    frames = VideoReader(str(clip)).frames(np.arange(12))
    h, w = frames.shape[1:3]
    boxes = np.tile([w * 0.3, h * 0.25, w * 0.7, h * 0.75], (12, 1))
    crops = face_crops(frames, boxes)
    assert crops.shape == (12, 224, 224, 3)
    score = syncnet_score(model, crops, load_audio(str(clip))[: 12 * 640])
    assert -15 <= score.offset <= 15 and score.confidence >= 0 and np.isfinite(score.min_dist)


# -- the weight-free score -------------------------------------------------------------------------------
def test_weight_free_sync_finds_a_known_audio_delay_on_a_real_clip():
    from fet.audio.load import load_audio
    from fet.landmarks.detector import FaceLandmarkDetector
    from fet.media.video import VideoReader

    clip = media("video/hdtf_style_aoc.mp4")
    reader = VideoReader(str(clip))
    frames = reader.frames(np.arange(reader.info.num_frames))
    frames = np.stack([np.asarray(Image.fromarray(f).resize((256, 256))) for f in frames])
    with FaceLandmarkDetector(media("models/face_landmarker.task")) as detector:
        points = np.stack([f.points for f in detector.detect_video(frames)])
    audio = load_audio(str(clip))
    base = landmark_audio_sync(points, audio, max_lag=14)
    assert base.correlation > 0.2  # real speech drives the real mouth
    for delay in (-6, 4, 8):  # > 0: the audio comes later than it did
        shifted = np.roll(audio, delay * 640)
        if delay > 0:
            shifted[: delay * 640] = 0
        else:
            shifted[delay * 640 :] = 0
        found = landmark_audio_sync(points, shifted, max_lag=14)
        assert abs(found.offset - (base.offset - delay)) <= 1, (delay, base, found)


def test_metric_weights_load_from_s3(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # S3 copies land here, to look for after
    from fet import storage
    from fet.metrics.weights import weights_exist

    path = tmp_path / "syncnet.pth"
    torch.save(SyncNet().state_dict(), path)
    uri = f"{s3_bucket}/models/syncnet_v2.model"
    assert not weights_exist(uri)
    with pytest.raises(MissingWeightsError, match="syncnet_v2.model"):
        load_syncnet(uri)
    storage.write_bytes(uri, path.read_bytes())
    assert weights_exist(uri)
    model = load_syncnet(uri)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(model.netfcaud[0].weight, saved["netfcaud.0.weight"])
    assert not list(tmp_path.rglob("fet-s3-*/**/syncnet_v2.model"))  # the S3 copy is gone once loaded
