"""Audio2Mesh, Audio2Pose, PoseGuider, talker, bundle and pipeline (tiny, CPU, saved and reloaded)."""

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import decord
import numpy as np
import pytest
import torch
from PIL import Image

from fet.audio.load import AudioError
from fet.bundle import BundleError, load_bundle, load_talker, save_talker
from fet.config import ConfigError
from fet.landmarks.detector import NoFaceError
from fet.metrics.image_quality import psnr
from fet.models.audio2mesh import Audio2Mesh, Audio2MeshConfig, audio2mesh_loss
from fet.models.audio2pose import Audio2Pose, Audio2PoseConfig, audio2pose_loss
from fet.models.presets import preset
from fet.models.sequence import run_windowed
from fet.models.talker import TalkerDenoiser
from fet.pipeline import FaceEditTalkerPipeline, PipelineConfig
from tests.conftest import media
from tests.fet.helpers import SIZE, tiny_config
from tests.fet.talking_helpers import GUIDER, build_bundle, speech, synthetic_face


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def pipe(bundle):
    return FaceEditTalkerPipeline.from_bundle(bundle)


def test_a_reference_id_changes_with_the_weights_and_settings_that_invert_the_face(tmp_path):
    from fet.autoencoder import DiffusionAutoencoder
    from fet.references import inversion_fingerprint, reference_id

    path = build_bundle(tmp_path / "a")
    first = inversion_fingerprint(FaceEditTalkerPipeline.from_bundle(path))
    assert inversion_fingerprint(FaceEditTalkerPipeline.from_bundle(build_bundle(tmp_path / "b"))) == first
    assert inversion_fingerprint(FaceEditTalkerPipeline.from_bundle(path, steps=5)) != first
    torch.manual_seed(1)
    build_bundle(tmp_path / "a", autoencoder=DiffusionAutoencoder(tiny_config()))  # retrained, same path
    retrained = inversion_fingerprint(FaceEditTalkerPipeline.from_bundle(path))
    assert retrained != first
    assert reference_id(first, b"face") != reference_id(retrained, b"face") != reference_id(retrained, b"other")
    assert len(reference_id(first, b"face")) == 32


def test_component_shapes():
    feats = torch.randn(2, 30, 64)
    mesh = Audio2Mesh(Audio2MeshConfig(feature_dim=64, hidden=32, layers=1, heads=2))
    assert mesh(feats, torch.randn(2, 468, 3)).shape == (2, 30, 468, 3)
    pose = Audio2Pose(Audio2PoseConfig(feature_dim=64, hidden=32, layers=1, heads=2, num_styles=3))
    assert pose(feats, torch.tensor([0, 2])).shape == (2, 30, 6)
    assert pose.generate(torch.randn(250, 64), style=1).shape == (250, 6)
    with pytest.raises(ValueError, match="pose style 3"):
        pose.generate(feats[0], style=3)
    # the paper preset's guider: 512 px maps → residuals matching the denoiser's four 64..8 levels
    paper = preset("paper")
    talker = TalkerDenoiser(paper, GUIDER.__class__(stem_channels=(16, 32, 64, 128)))
    shapes = [(c, r) for c, r in zip(talker.denoiser.level_channels, talker.denoiser.level_resolutions)]
    guider = talker.pose_guider
    with torch.no_grad():
        out = guider.stem(torch.zeros(1, 3, 512, 512))
    assert out.shape[-1] == 64 and len(guider.stages) == len(shapes) == 4


def test_pose_guider_is_exactly_zero_at_init_so_the_talker_is_the_stage1_denoiser():
    cfg = tiny_config()
    talker = TalkerDenoiser(cfg, GUIDER)
    maps = torch.rand(3, 3, SIZE, SIZE)
    residuals = talker.pose_guider(maps, maps[:1])
    assert [tuple(r.shape[1:]) for r in residuals] == [
        (c, s, s) for c, s in zip(talker.denoiser.level_channels, talker.denoiser.level_resolutions)
    ]
    assert all(torch.count_nonzero(r) == 0 for r in residuals)
    torch.nn.init.normal_(talker.denoiser.out[-1].weight)  # a denoiser that predicts something
    x, t, z = torch.randn(3, 3, SIZE, SIZE), torch.tensor([10, 500, 900]), torch.randn(3, cfg.z_dim)
    torch.testing.assert_close(talker(x, t, z, maps, maps), talker.denoiser(x, t, z))
    # and the guider gets gradients from the denoiser's loss (it can learn)
    talker(x, t, z, maps, maps).square().mean().backward()
    assert talker.pose_guider.stages[0].out.weight.grad.abs().sum() > 0


def test_talker_save_load_round_trip(tmp_path):
    talker = TalkerDenoiser(tiny_config(), GUIDER)
    for p in talker.parameters():
        torch.nn.init.normal_(p, std=0.02)
    save_talker(str(tmp_path), talker)
    again = load_talker(str(tmp_path))
    for (k, a), b in zip(talker.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_windowed_inference_matches_a_single_pass_and_crossfades():
    fn = lambda f: f * 2  # noqa: E731 — pointwise, so windowing must not change it
    x = torch.randn(97, 5)
    torch.testing.assert_close(run_windowed(fn, x, window=20, overlap=6), x * 2)
    torch.testing.assert_close(run_windowed(fn, x[:10], window=20, overlap=6), x[:10] * 2)


def test_overfitting_audio2mesh_on_one_clip_drives_its_l1_down():
    from fet.audio.features import AudioEncoder, AudioEncoderConfig
    from fet.data.clip_folder import ClipRecord
    from fet.data.synthtalk.world import make_clip
    from fet.training.motion_data import motion_targets, prepare_motion_clip

    c = make_clip(seed=0, index=3, size=32, seconds=2.0)
    record = ClipRecord("c", "c", c.frames, c.audio, c.landmarks, c.transform)
    enc = AudioEncoder(AudioEncoderConfig(n_mels=20))
    clip = prepare_motion_clip(record, enc, num_styles=1)
    ref, off, _ = motion_targets(clip, 0)
    torch.manual_seed(0)
    model = Audio2Mesh(Audio2MeshConfig(feature_dim=enc.dim, hidden=64, layers=1, heads=2, dropout=0.0, window=50))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    f, r, target = clip.features[None], torch.from_numpy(ref).float()[None], torch.from_numpy(off).float()[None]
    losses = []
    for _ in range(150):
        loss = audio2mesh_loss(model(f, r), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # measured: 0.043 cm at the start (no motion), below 0.01 cm after 150 steps
    assert losses[-1] < 0.35 * losses[0], (losses[0], losses[-1])
    mouth = np.abs(off[:, 17]).max()
    assert mouth > 0.1  # the clip really talks: the lower lip moves by more than 1 mm


def test_pose_loss_masks_padding_and_penalises_jitter():
    target = torch.zeros(1, 10, 6)
    jitter = torch.zeros(1, 10, 6)
    jitter[0, ::2, 0] = 0.05
    steady = torch.zeros(1, 10, 6)
    steady[0, :, 0] = 0.025  # the same mean error as the jitter, without the shaking
    assert audio2pose_loss(jitter, target) > audio2pose_loss(steady, target)
    mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 5)], 1)
    far = target.clone()
    far[0, 5:] = 10.0
    assert audio2pose_loss(far, target, mask) == 0


def _decode_mp4(path):
    """(video frames counted by decord, fps, audio stream seconds, the video stream) of an mp4."""
    import av

    vr = decord.VideoReader(str(path))
    with av.open(str(path)) as c:
        a, v = c.streams.audio[0], c.streams.video[0]
        audio_seconds = float(a.duration * a.time_base)
        video = v.codec_context
    return len(vr), vr.get_avg_fps(), audio_seconds, video


def test_pipeline_writes_an_mp4_whose_frames_and_audio_match_the_speech(pipe, tmp_path):
    image, lms = synthetic_face(SIZE)
    seen = []
    out = tmp_path / "talk.mp4"
    result = pipe(image, speech(1.96), text="add glasses", output=str(out), reference_landmarks=lms,
                  callback=lambda done, total: seen.append((done, total)))  # fmt: skip
    frames, fps, audio_s, vr = _decode_mp4(out)
    assert result.num_frames == frames == 49 and fps == 25
    assert abs(audio_s - 1.96) < 0.05 and abs(frames / fps - audio_s) < 0.05
    assert seen[-1] == (49, 49) and len(seen) == 13  # batches of 4
    assert result.edits.edits == {"Eyeglasses": 0.3}
    assert (vr.width, vr.height) == (SIZE, SIZE)
    # the landmarks move with the audio (random but non-zero motion heads)
    assert np.abs(result.landmarks[1:] - result.landmarks[0]).max() > 1e-4
    np.testing.assert_allclose(result.landmarks[0], lms.points[:, :2], atol=1e-5)  # held first frame


def test_same_seed_same_frames_whatever_the_batch_size(pipe):
    image, lms = synthetic_face(SIZE, seed=1)
    ref = pipe.encode(image, lms)
    audio = speech(0.7)
    a = pipe(ref, audio, seed=7, eta=0.5, batch_size=1).frames
    b = pipe(ref, audio, seed=7, eta=0.5, batch_size=8).frames
    c = pipe(ref, audio, seed=8, eta=0.5, batch_size=8).frames
    assert a.shape == (18, SIZE, SIZE, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float kernels may round one level apart
    assert np.abs(a.astype(int) - c.astype(int)).max() > 1  # and the seed matters


def test_first_frame_reconstructs_the_reference(tmp_path, trained_tiny):
    """The stage-1 model with a fresh (zero) guider: inversion with the reference's own landmarks and
    rendering with the same landmarks give the reference back. Measured 36.6 dB at 100 steps."""
    model, images, _ = trained_tiny
    pipe = FaceEditTalkerPipeline.from_bundle(build_bundle(tmp_path, autoencoder=model), steps=100)
    reference = ((images[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    _, lms = synthetic_face(SIZE)
    frames = pipe(reference, speech(0.3), reference_landmarks=lms).frames
    first = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 127.5 - 1
    target = torch.from_numpy(reference).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert psnr(first, target) > 30.0, psnr(first, target)


def test_real_portrait_is_detected_aligned_and_edited(pipe):
    image = media("image/sadtalker_people_0.png")
    ref = pipe.encode(image)
    assert ref.image.shape == (1, 3, SIZE, SIZE) and ref.notes == []
    held = [ref.image, ref.reference_map, *ref.reference_features, ref.z_sem, ref.x_T]
    assert not [t.shape for t in held if t.requires_grad]  # kept (Serve caches 64): no autograd graph with them
    frame, parsed = pipe.edit(ref, {"Smiling": 0.5})
    assert frame.shape == (SIZE, SIZE, 3) and parsed.edits == {"Smiling": 0.5}
    with pytest.raises(NoFaceError, match="wall.png: no face found"):
        pipe.encode(np.full((200, 200, 3), 90, np.uint8), name="wall.png")


def test_landmark_scale_amplifies_only_how_frames_differ_from_the_reference(bundle):
    loaded = load_bundle(bundle)
    torch.manual_seed(3)
    for stage in loaded.talker.pose_guider.stages:  # a guider that has learned something
        torch.nn.init.normal_(stage.out.weight, std=0.05)
    torch.nn.init.normal_(loaded.talker.denoiser.out[-1].weight, std=0.05)  # and a denoiser that predicts
    plain = FaceEditTalkerPipeline(loaded, PipelineConfig(steps=4, batch_size=4))
    amplified = FaceEditTalkerPipeline(loaded, PipelineConfig(steps=4, batch_size=4, landmark_scale=3.0))
    image, lms = synthetic_face(SIZE, seed=2)
    ref = plain.encode(image, lms)
    # in the reference's own pose there is nothing to amplify: the same frame at any scale
    np.testing.assert_array_equal(plain.edit(ref)[0], amplified.edit(ref)[0])
    maps = torch.rand(2, 3, SIZE, SIZE)
    anchor = loaded.talker.guidance(ref.reference_map, ref.reference_features)
    moved = loaded.talker.guidance(maps, ref.reference_features)
    for a, m, x in zip(anchor.residuals, moved.residuals, moved.amplified(anchor, 3.0).residuals):
        torch.testing.assert_close(x - a, 3.0 * (m - a))
    assert moved.amplified(anchor, 1.0) is moved
    audio = speech(0.6)
    a, b = plain(ref, audio).frames, amplified(ref, audio).frames
    assert np.array_equal(a[0], b[0])  # the held first frame is the reference's pose
    assert np.abs(a[1:].astype(int) - b[1:].astype(int)).max() > 2  # the moving frames move further
    with pytest.raises(ConfigError, match="landmark_scale=0"):
        FaceEditTalkerPipeline.from_bundle(bundle, landmark_scale=0)


def test_a_batch_of_different_faces_renders_as_each_face_alone(bundle):
    """Serve batches frames of several requests: each frame must come out as if rendered on its own, with
    its own face, pose, edit and the landmark_scale of the bundle."""
    loaded = load_bundle(bundle)
    torch.manual_seed(4)
    for stage in loaded.talker.pose_guider.stages:
        torch.nn.init.normal_(stage.out.weight, std=0.05)
    torch.nn.init.normal_(loaded.talker.denoiser.out[-1].weight, std=0.05)
    pipe = FaceEditTalkerPipeline(loaded, PipelineConfig(steps=4, landmark_scale=2.0))
    (img_a, lms_a), (img_b, lms_b) = synthetic_face(SIZE, seed=5), synthetic_face(SIZE, seed=6)
    a, b = pipe.encode(img_a, lms_a), pipe.encode(img_b, lms_b)
    moved = lms_b.points[:, :2] + np.array([0.0, 0.03], np.float32)
    batch = pipe.render([a, b, a], np.stack([lms_a.points[:, :2], moved, moved]), [{}, {"Smiling": 0.5}, {}])
    alone = [pipe.render([a], lms_a.points[None, :, :2]), pipe.render([b], moved[None], [{"Smiling": 0.5}]),
             pipe.render([a], moved[None])]  # fmt: skip
    for got, want in zip(batch, alone):
        assert np.abs(got.astype(int) - want[0].astype(int)).max() <= 1
    assert np.abs(batch[0].astype(int) - batch[2].astype(int)).max() > 2  # the pose moved the face
    np.testing.assert_array_equal(pipe.render([a], lms_a.points[None, :, :2])[0], pipe.edit(a)[0])
    with pytest.raises(ValueError, match=r"points: expected \(2, 478, 2\)"):
        pipe.render([a, b], lms_a.points[None, :, :2])
    with pytest.raises(ValueError, match="edits: expected one dict per reference"):
        pipe.render([a], lms_a.points[None, :, :2], [{}, {}])


def test_bad_inputs_get_clear_errors_and_leave_no_file(pipe, tmp_path):
    image, lms = synthetic_face(SIZE)
    out = tmp_path / "never.mp4"
    with pytest.raises(AudioError, match="silent"):
        pipe(image, np.zeros(16000, np.float32), output=str(out), reference_landmarks=lms)
    with pytest.raises(AudioError, match="at least"):
        pipe(image, speech(0.05), output=str(out), reference_landmarks=lms)
    with pytest.raises(AudioError, match="not a readable audio file"):
        pipe(image, b"garbage bytes, not a wav", output=str(out), reference_landmarks=lms)
    with pytest.raises(ValueError, match="expected a value in"):
        pipe(image, speech(1.0), {"Eyeglasses": 3.0}, output=str(out), reference_landmarks=lms)
    for setting in ("steps", "batch_size"):  # 0 is refused, not read as the pipeline's setting
        with pytest.raises(ValueError, match=f"{setting}=0: expected 1 or more"):
            pipe(image, speech(1.0), output=str(out), reference_landmarks=lms, **{setting: 0})
    short = FaceEditTalkerPipeline(pipe.bundle, pipe.cfg.__class__(max_seconds=0.5))
    with pytest.raises(ValueError, match="longer than the maximum"):
        short(image, speech(1.0), output=str(out), reference_landmarks=lms)

    def fail_midway(done, total):
        raise KeyboardInterrupt  # e.g. the user stops the job after the first batch

    with pytest.raises(KeyboardInterrupt):
        pipe(image, speech(1.0), output=str(out), reference_landmarks=lms, callback=fail_midway)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_destination_that_cannot_take_the_video_is_refused_before_any_frame(pipe, tmp_path):
    from fet.storage import StorageError

    image, lms = synthetic_face(SIZE)
    (tmp_path / "a_file").write_bytes(b"x")
    calls = []
    for out, match in ((tmp_path / "a_file" / "talk.mp4", "a_file is a file, not a folder"), (tmp_path, "is a folder")):
        with pytest.raises(StorageError, match=match):
            pipe(image, speech(1.0), output=str(out), reference_landmarks=lms, callback=lambda *a: calls.append(a))
    assert calls == []  # refused before the reference was inverted or a frame rendered


def test_a_whole_video_that_cannot_be_published_is_kept_and_the_error_says_where(pipe, tmp_path, monkeypatch):
    from fet.storage import StorageError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    image, lms = synthetic_face(SIZE)
    folder = tmp_path / "videos"

    def folder_becomes_a_file(done, total):  # e.g. the disk was tidied while the video rendered
        if done == total:
            folder.rmdir()
            folder.write_bytes(b"not a folder")

    with pytest.raises(
        StorageError, match=r"videos/talk.mp4: the video could not be written there .*; kept at (\S+)$"
    ) as e:
        pipe(
            image, speech(1.0), output=str(folder / "talk.mp4"), reference_landmarks=lms, callback=folder_becomes_a_file
        )
    kept = Path(str(e.value).rsplit("kept at ", 1)[1])
    assert kept.parent == tmp_path / "tmp" and _decode_mp4(kept)[0] == 25  # every frame of the 1 s video


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_named_before_any_weights_are_read(tmp_path):
    from fet.device import DeviceError

    for device, match in (("cuda", "this process sees no CUDA device"), ("cuda:1", "no CUDA device"),
                          ("tpu", "not a device name")):  # fmt: skip
        with pytest.raises(DeviceError, match=match):
            load_bundle(str(tmp_path / "no bundle here"), device)  # the device is checked first


def test_bundle_missing_a_component_is_named(bundle, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "audio2pose.safetensors").unlink()
    with pytest.raises(BundleError, match="audio2pose.safetensors"):
        load_bundle(str(broken))
    with pytest.raises(BundleError, match="no bundle.json"):
        load_bundle(str(tmp_path))
    (broken / "audio2pose.safetensors").write_bytes((Path(bundle) / "audio2pose.safetensors").read_bytes())
    (broken / "face_landmarker.task").write_bytes(b"RIFF....WAVEfmt ")  # refused at load, not at the first image
    with pytest.raises(BundleError, match=r"face_landmarker.task: not a MediaPipe model bundle \(a .task zip\)"):
        load_bundle(str(broken))


def test_export_refuses_components_trained_on_another_stage1_and_keeps_the_bundle_it_would_replace(tmp_path):
    from fet.autoencoder import DiffusionAutoencoder
    from fet.bundle import export_bundle
    from fet.lineage import encoder_digest, write_lineage

    build_bundle(tmp_path)
    dirs = {"image_dir": str(tmp_path / "stage1"), "editing_dir": str(tmp_path / "stage2"),
            "talker_dir": str(tmp_path / "stage3"), "audio_dir": str(tmp_path / "audio")}  # fmt: skip
    for later in ("stage2", "stage3"):  # as the stage-2 and stage-3 trainers record it
        write_lineage(str(tmp_path / later), dirs["image_dir"], encoder_digest(dirs["image_dir"]))
    out = str(tmp_path / "served")
    export_bundle(out, **dirs)
    before = {p.name: p.read_bytes() for p in Path(out).iterdir()}
    torch.manual_seed(1)
    DiffusionAutoencoder(tiny_config()).save(str(tmp_path / "retrained"))  # stage 1 trained again: other weights
    with pytest.raises(BundleError, match=r"stage2 component was trained on the stage-1 semantic encoder of .*stage1"):
        export_bundle(out, **{**dirs, "image_dir": str(tmp_path / "retrained")})
    assert {p.name: p.read_bytes() for p in Path(out).iterdir()} == before  # refused before anything was written
    load_bundle(out)
    DiffusionAutoencoder.load(dirs["image_dir"]).save(str(tmp_path / "copy"))  # the same weights saved again
    export_bundle(out, **{**dirs, "image_dir": str(tmp_path / "copy")})
    pose_config = (tmp_path / "audio" / "audio2pose.json").read_bytes()
    (tmp_path / "audio" / "audio2pose.json").unlink()
    with pytest.raises(BundleError, match=r"audio2pose.json: missing; every bundle needs audio2pose.json"):
        export_bundle(out, **dirs)
    assert (Path(out) / "bundle.json").exists()  # the complete bundle there before stays whole
    (tmp_path / "audio" / "audio2pose.json").write_bytes(pose_config)
    export_bundle(out, **dirs, face_landmarker=media("models/face_landmarker.task"))
    before = {p.name: p.read_bytes() for p in Path(out).iterdir()}
    wav2vec2 = tmp_path / "audio_w2v"
    shutil.copytree(tmp_path / "audio", wav2vec2)
    (wav2vec2 / "audio_encoder.json").write_text(json.dumps({"kind": "wav2vec2", "path": str(tmp_path / "no_w2v")}))
    cut = tmp_path / "stage3_cut"  # an interrupted copy of the stage-3 run
    shutil.copytree(tmp_path / "stage3", cut)
    (cut / "denoiser.safetensors").write_bytes((tmp_path / "stage3" / "denoiser.safetensors").read_bytes()[:-64])
    zipped = tmp_path / "other.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("face_detector.tflite", b"")
    refused = {  # each found before the bundle there is touched
        "a sound as the landmarker": ({"face_landmarker": str(media("audio/retalking_1.wav"))}, "retalking_1.wav: not a MediaPipe model bundle"),
        "another zip": ({"face_landmarker": str(zipped)}, r"other.zip: a zip without \['face_landmarks_detector.tflite'"),
        "no such landmarker": ({"face_landmarker": str(tmp_path / "none.task")}, "none.task: no such file"),
        "wav2vec2 weights missing": ({"audio_dir": str(wav2vec2)}, rf"{tmp_path / 'no_w2v'}: no files; expected the wav2vec2 model named in"),
        "denoiser weights cut short": ({"talker_dir": str(cut)}, rf"{cut / 'denoiser.safetensors'}: cut short: "),
    }  # fmt: skip
    for case, (args, message) in refused.items():
        with pytest.raises(BundleError, match=message):
            export_bundle(out, **dirs | args)
        assert {p.name: p.read_bytes() for p in Path(out).iterdir()} == before, case
    load_bundle(out)


def test_bundle_loads_from_s3(bundle, s3_bucket, tmp_path, monkeypatch):
    from fet import storage

    storage.upload_dir(bundle, f"{s3_bucket}/bundles/tiny")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    remote = FaceEditTalkerPipeline.from_bundle(f"{s3_bucket}/bundles/tiny")
    assert not any(tmp_path.iterdir())  # no local copy left (Serve kills replicas without clean-up)
    image, lms = synthetic_face(SIZE)
    result = remote(image, speech(0.5), reference_landmarks=lms, output=f"{s3_bucket}/out/talk.mp4")
    assert storage.exists(f"{s3_bucket}/out/talk.mp4") and result.num_frames == 12
    # a bundle exported with the MediaPipe model taken from S3
    from fet.bundle import export_bundle

    stages, task = Path(bundle).parent, f"{s3_bucket}/bundles/tiny/face_landmarker.task"
    again = export_bundle(f"{s3_bucket}/bundles/again", image_dir=str(stages / "stage1"),
                          talker_dir=str(stages / "stage3"), editing_dir=str(stages / "stage2"),
                          audio_dir=str(stages / "audio"), face_landmarker=task)  # fmt: skip
    assert load_bundle(again).face_landmarker == remote.bundle.face_landmarker


def test_cli_generate_and_edit(bundle, tmp_path, capsys):
    from scipy.io import wavfile

    from fet.cli import main

    portrait = media("image/aniportrait_aragaki.png")
    wav = tmp_path / "speech.wav"
    wavfile.write(wav, 16000, speech(1.0))
    main(["generate", "--bundle", bundle, "--image", str(portrait), "--audio", str(wav), "--text", "blond hair",
          "-o", str(tmp_path / "out.mp4")])  # fmt: skip
    assert _decode_mp4(tmp_path / "out.mp4")[0] == 25
    err = capsys.readouterr().err  # the progress bar ends at every frame rendered, drawn at most every 10 s
    assert "frames: 100%" in err and err.count("frames:") <= 2, err  # in a log: not once per batch of frames
    main(["edit", "--bundle", bundle, "--image", str(portrait), "--edit", "Smiling=0.4", "-o", str(tmp_path / "e.png")])
    assert (tmp_path / "e.png").stat().st_size > 0
    with pytest.raises(SystemExit) as e:
        main(["generate", "--bundle", bundle, "--image", str(portrait), "--audio", str(tmp_path / "none.wav"),
              "-o", str(tmp_path / "bad.mp4")])  # fmt: skip
    assert e.value.code == 2 and "none.wav: no such audio file" in capsys.readouterr().err
    assert not (tmp_path / "bad.mp4").exists()
    silent, blank = tmp_path / "silent.wav", tmp_path / "blank.png"
    wavfile.write(silent, 16000, np.zeros(16000, np.int16))
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(blank)
    for image, audio, message in [(portrait, silent, f"{silent}: is silent"), (blank, wav, f"{blank}: no face found")]:
        with pytest.raises(SystemExit) as e:  # the message names the file at fault
            main(
                [
                    "generate",
                    "--bundle",
                    bundle,
                    "--image",
                    str(image),
                    "--audio",
                    str(audio),
                    "-o",
                    str(tmp_path / "bad.mp4"),
                ]
            )
        assert e.value.code == 2 and f"fet generate: error: {message}" in capsys.readouterr().err
    for flag in ("--steps", "--batch-size"):  # 0 is refused, not read as "the default"
        with pytest.raises(SystemExit) as e:
            main(["generate", "--bundle", bundle, "--image", str(portrait), "--audio", str(wav), flag, "0",
                  "-o", str(tmp_path / "bad.mp4")])  # fmt: skip
        assert e.value.code == 2
        assert f"argument {flag}: '0': expected a whole number of 1 or more" in capsys.readouterr().err
    refused = {  # each refused with a message and exit status 2, not a traceback
        ("--edit", "Wings=1"): "edit 'Wings=1': unknown attribute 'Wings'; expected one of the 40 CelebA names",
        ("--text", "make it purple"): "text: no known attribute in 'make it purple'",
        ("--device", "gpu0"): "argument --device: device 'gpu0': not a device name; expected cpu, cuda or cuda:N",
        ("-o", str(tmp_path)): "is a folder; expected a file's path",
        ("-o", str(tmp_path / "talk.avi")): "talk.avi: expected a name ending in .mp4 or .m4v",
    }
    if not torch.cuda.is_available():
        refused["--device", "cuda"] = "argument --device: device 'cuda': this process sees no CUDA device"
    for (flag, value), message in refused.items():
        args = ["--bundle", bundle, "--image", str(portrait), "--audio", str(wav), "-o", str(tmp_path / "bad.mp4")]
        with pytest.raises(SystemExit) as e:
            main(["generate", *args, flag, value])
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # refused before the inversion, which can take minutes
        main(["edit", "--bundle", bundle, "--image", str(portrait), "-o", str(tmp_path / "e.png" / "x.png")])
    assert e.value.code == 2 and "e.png is a file, not a folder" in capsys.readouterr().err
    main(
        [
            "edit",
            "--bundle",
            bundle,
            "--image",
            str(portrait),
            "--text",
            "add glasses, purple",
            "-o",
            str(tmp_path / "e.png"),
        ]
    )
    assert "ignored words that name no attribute: ['purple']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["edit", "--bundle", bundle, "--image", str(portrait), "-o", str(tmp_path / "e.gif")])
    assert e.value.code == 2 and "e.gif: expected a name ending in .png, .jpg" in capsys.readouterr().err
    assert not (tmp_path / "bad.mp4").exists()


def test_several_faces_use_the_largest_and_say_so(pipe):
    from fet.images import load_image

    big = np.asarray(load_image(media("image/sadtalker_people_0.png")))  # 474²
    small = np.asarray(load_image(media("image/sadtalker_happy.png")).resize((237, 237)))
    canvas = np.full((474, 474 + 237, 3), 255, np.uint8)
    canvas[:, :474], canvas[118:355, 474:] = big, small
    ref = pipe.encode(canvas, name="group.png")
    assert ref.notes == ["group.png: 2 faces found; using the largest"]
    # the crop is the big face: its landmarks sit in the middle of the aligned crop
    assert np.abs(ref.landmarks.points[:, :2].mean(0) - 0.5).max() < 0.1
