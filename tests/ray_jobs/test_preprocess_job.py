"""The Ray Data preprocessing job on real clips and photos: shards with the right timing, shapes and
landmarks, rejects with reasons, no repeated work, resume after a lost shard, and S3 in and out."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fet import storage
from fet.config import load_config
from fet.data import shards
from fet.data.preprocess import PreprocessConfig, shard_kind
from fet.data.sources import list_items
from fet.landmarks.detector import FaceLandmarkDetector
from fet.media.mp4 import write_mp4
from fet.media.video import VideoReader
from tests.conftest import media, unreachable_endpoint
from tests.fet.helpers import audio_cut, lag, shifted

pytestmark = pytest.mark.timeout(900)

CLIPS = {  # input name → shared media file
    "retalking_005": "video/retalking_5.mp4",
    "aniportrait_000": "video/aniportrait_pose_ref.mp4",
    "vertical_000": "video/latentsync_vertical_hevc.mp4",
}


def _config(inputs: Path, out: str, *extra: str) -> PreprocessConfig:
    overrides = [f"out={out}", "size=128", "segment_seconds=4.0", "rows_per_shard=2", *extra]
    data = {
        "sources": [{"kind": "hdtf", "root": str(inputs / "clips")}, {"kind": "ffhq", "root": str(inputs / "faces")}]
    }
    cfg_file = inputs / "job.yaml"
    cfg_file.write_text("# test job\n" + json.dumps(data))
    return load_config(PreprocessConfig, cfg_file, overrides)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    clips, faces = root / "clips", root / "faces"
    clips.mkdir()
    faces.mkdir()
    for name, rel in CLIPS.items():
        shutil.copy(media(rel), clips / f"{name}.mp4")
    data = media("video/retalking_5.mp4").read_bytes()
    (clips / "truncated_000.mp4").write_bytes(data[: len(data) // 3])  # moov atom at the end: unreadable
    (clips / "empty_000.mp4").write_bytes(b"")
    (clips / "late_000.mp4").write_bytes(shifted(data, 0.5))  # its sound starts 0.5 s after its first frame
    (clips / "cut_000.mp4").write_bytes(audio_cut(data, 2.0))  # its sound ends at 2 s of 4.9
    frames = VideoReader(media("video/retalking_5.mp4")).frames(np.arange(50))
    write_mp4(str(clips / "mute_000.mp4"), frames, None, 16_000, 25)  # a real video without an audio track
    shutil.copy(media("image/sadtalker_happy.png"), faces / "happy.png")
    vertical = VideoReader(media("video/latentsync_vertical_hevc.mp4")).frames(np.array([0]))[0]
    Image.fromarray(vertical[:400, :400]).save(faces / "curtain.png")  # the background: no face
    (faces / "notes.png").write_text("this is a text file, not a PNG")
    return root


@pytest.fixture(scope="module")
def first_run(local_ray, inputs, tmp_path_factory):
    from ray_jobs.preprocess import run

    out = str(tmp_path_factory.mktemp("shards"))
    cfg = _config(inputs, out)
    return cfg, run(cfg)


def _clip_rows(out: str) -> dict[str, dict]:
    return {r["clip_id"]: r for r in shards.read_rows(out, "clips")}


def test_shards_have_25fps_timing_audio_and_landmark_shapes(first_run):
    cfg, _ = first_run
    rows = _clip_rows(cfg.out)
    # 4 s segments; a last piece of at least min_seconds (1 s) is its own segment, a shorter one joins the last
    assert set(rows) == {"retalking_005", "late_000", "aniportrait_000@000", "aniportrait_000@001", "vertical_000@000",
                         "vertical_000@001", "vertical_000@002"}  # fmt: skip
    for name, rel in CLIPS.items():
        info = VideoReader(media(rel)).info
        total = sum(r["num_frames"] for k, r in rows.items() if k.split("@")[0] == name)
        assert total == int(info.seconds * 25 + 1e-6), name  # every 25 fps tick, once
    for clip_id, r in rows.items():
        T = r["num_frames"]
        assert r["fps"] == 25 and len(r["frames"]) == T
        assert shards.unpack(r["audio"]).shape == (T * 16_000 // 25,)
        assert shards.unpack(r["landmarks"]).shape == (T, 478, 3)
        assert shards.unpack(r["transform"]).shape == (T, 4, 4)
        assert shards.unpack(r["blendshapes"]).shape == (T, 52)
        assert shards.unpack(r["pose"]).shape == (T, 6)
        assert shards.unpack(r["audio_features"]).shape == (T, 320)  # mel: 80 bins x 4 sub-frames
        assert json.loads(r["audio_encoder"])["kind"] == "mel"
        assert Image.open(io.BytesIO(r["frames"][0])).size == (128, 128)
        assert r["face_ratio"] >= 0.95 and r["landmark_source"] == "mediapipe", clip_id
    assert rows["vertical_000@000"]["num_frames"] == 100 and rows["vertical_000@002"]["num_frames"] == 50
    assert (rows["vertical_000@000"]["source_width"], rows["vertical_000@000"]["source_height"]) == (1080, 1920)
    m = json.loads(storage.read_text(shards.manifest_uri(cfg.out)))
    assert m["clips"]["rows"] == 7 and m["images"]["rows"] == 1
    assert set(m["clips"]["timings"]) >= {"decode", "landmarks", "audio", "encode"}


def test_a_sound_track_that_starts_late_is_stored_in_step_with_the_frames(first_run):
    """The same talking head with its sound starting half a second late: the clip's audio is the other
    clip's, half a second later, with silence before it."""
    cfg, _ = first_run
    rows = _clip_rows(cfg.out)
    late, on_time = rows["late_000"], rows["retalking_005"]
    sound, late_sound = shards.unpack(on_time["audio"]), shards.unpack(late["audio"])
    assert lag(sound, late_sound, 8000) == pytest.approx(8000, abs=40)  # 0.5 s at 16 kHz
    assert np.abs(late_sound[:7000]).max() == 0.0


def test_landmarks_land_on_the_faces(first_run):
    """The stored landmarks match a fresh MediaPipe run on the stored crop, and sit on a face-sized region
    in the middle of the crop. preview_clips.png draws them over the frames for a person to check."""
    cfg, _ = first_run
    with FaceLandmarkDetector() as det:
        for r in _clip_rows(cfg.out).values():
            rec = shards.clip_record(r)
            for t in (0, rec.frames.shape[0] // 2):
                fresh = det.detect(rec.frames[t])
                assert fresh is not None
                err = np.abs(fresh.points[:, :2] - rec.landmarks[t, :, :2]).mean()
                assert err < 0.01, (r["clip_id"], t, err)
            lm = rec.landmarks[..., :2]
            centre, extent = lm.mean(1), lm.max(1) - lm.min(1)
            assert np.all(np.abs(centre - 0.5) < 0.15) and np.all((extent > 0.3) & (extent < 0.75))
    assert Path(cfg.out, "preview_clips.png").stat().st_size > 10_000


def test_bad_inputs_are_rejected_with_reasons(first_run, inputs):
    cfg, stats = first_run
    rejects = {r["item_id"]: r for r in shards.read_rejects(cfg.out)}
    expected = {"truncated_000": "corrupt", "empty_000": "empty_file", "mute_000": "no_audio",
                "cut_000": "short_audio", "curtain": "no_face", "notes": "unreadable"}  # fmt: skip
    assert {k: v["reason"] for k, v in rejects.items()} == expected
    for item, r in rejects.items():
        assert item in r["detail"] and str(inputs) in r["detail"], r  # the message names the input
    assert "no audio stream" in rejects["mute_000"]["detail"]
    assert "the audio track ends 2.8" in rejects["cut_000"]["detail"]  # of the 4.88 s segment (122 frames)
    assert stats["rows"] == 8 and stats["rejects"] == 6


def test_shards_are_cut_in_input_order(first_run):
    """Rows reach the shard writers in input order whichever actor finishes first (three of the clips are
    rejected at once while the others take seconds), so every run cuts the same inputs into the same
    shards: in input order, each shard holds segments that follow one another."""
    cfg, _ = first_run
    for source in cfg.sources:
        order = {shards.item_key(item.source, item.item_id): i for i, item in enumerate(list_items(source))}
        spans = sorted(
            sorted((order[key], segment) for key, segments in side["segments"].items() for segment in segments)
            for side in shards.read_sidecars(cfg.out, shard_kind(source))
        )
        held = [segment for span in spans for segment in span]
        assert len(spans) > 1 and held == sorted(held), (source.kind, spans)


def test_second_run_does_no_repeated_work(first_run):
    from ray_jobs.preprocess import run

    cfg, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in Path(cfg.out).rglob("part-*")}
    stats = run(cfg)
    assert stats["processed"] == 0 and stats["skipped"] == 11
    assert {p: p.stat().st_mtime_ns for p in Path(cfg.out).rglob("part-*")} == before


def test_a_lost_shard_is_redone_and_nothing_else(first_run, inputs, tmp_path):
    """A crash before a shard's sidecar is published loses that shard only; the next run redoes exactly
    its segments (a long clip's other segments are not repeated)."""
    from ray_jobs.preprocess import run

    cfg, _ = first_run
    out = tmp_path / "shards"
    shutil.copytree(cfg.out, out)
    sidecars = sorted((out / "clips").glob("part-*.json"))
    lost = next(s for s in sidecars if any(i.startswith("vertical_000@") for i in json.loads(s.read_text())["ids"]))
    lost_segments = json.loads(lost.read_text())["segments"]
    lost.unlink()
    stats = run(_config(inputs, str(out)))
    assert stats["processed"] == len(lost_segments)  # only the inputs that shard held
    assert stats["rows"] + stats["rejects"] == sum(len(v) for v in lost_segments.values())  # only its segments
    ids = [r["clip_id"] for r in shards.read_rows(str(out), "clips", columns=["clip_id"])]
    assert sorted(ids) == sorted(_clip_rows(cfg.out))  # every clip once: nothing lost, nothing doubled


def test_s3_in_and_out(local_ray, s3_bucket, inputs):
    from ray_jobs.preprocess import run

    storage.write_bytes(
        f"{s3_bucket}/raw/clips/retalking_005.mp4", (inputs / "clips" / "retalking_005.mp4").read_bytes()
    )
    storage.write_bytes(f"{s3_bucket}/raw/clips/empty_000.mp4", b"")
    storage.write_bytes(f"{s3_bucket}/raw/faces/happy.png", (inputs / "faces" / "happy.png").read_bytes())
    cfg = _config(inputs, f"{s3_bucket}/shards", "segment_seconds=20", f"sources.0.root={s3_bucket}/raw/clips",
                  f"sources.1.root={s3_bucket}/raw/faces")  # fmt: skip
    stats = run(cfg)
    assert stats["rows"] == 2 and stats["rejects"] == 1
    m = json.loads(storage.read_text(f"{s3_bucket}/shards/manifest.json"))
    assert m["clips"]["rows"] == 1 and m["clips"]["reject_reasons"] == {"empty_file": 1}
    row = next(shards.read_rows(f"{s3_bucket}/shards", "clips"))
    assert row["clip_id"] == "retalking_005" and row["num_frames"] == 122
    assert storage.exists(f"{s3_bucket}/shards/preview_clips.png")


def test_wav2vec2_features_in_their_own_actors(local_ray, tmp_path, monkeypatch):
    """``ray.audio_workers`` moves audio features to separate actors (GPU ones on a cluster); the rows
    carry wav2vec2 features equal to the encoder's own output on the stored audio. The job's paths are
    relative to its directory, which is not the one Ray's workers run in (the one Ray was started in)."""
    from fet.audio.features import AudioEncoder, AudioEncoderConfig
    from fet.data.synthtalk.__main__ import generate
    from ray_jobs.preprocess import main
    from tests.fet.helpers import save_tiny_wav2vec2

    save_tiny_wav2vec2(tmp_path / "w2v")
    generate(tmp_path / "st", images=0, clips=2, size=64, seconds=2.0, workers=1, progress=False)
    monkeypatch.chdir(tmp_path)
    stats = main(["out=shards", "size=64", "ray.num_workers=1", "ray.audio_workers=1",
                  "sources=[{kind: synthtalk, root: st/clips}]", "audio={kind: wav2vec2, path: w2v, stack: 2}"])  # fmt: skip
    assert stats["rows"] == 2 and stats["rejects"] == 0, stats
    encoder = AudioEncoder(AudioEncoderConfig(kind="wav2vec2", path=str(tmp_path / "w2v"), stack=2))
    for row in shards.read_rows(str(tmp_path / "shards"), "clips"):
        rec = shards.clip_record(row)
        assert json.loads(rec.encoder)["kind"] == "wav2vec2" and rec.features.shape == (50, 64)
        np.testing.assert_allclose(rec.features, encoder(rec.audio, 50).numpy(), atol=2e-2)  # stored as float16
    assert json.loads((tmp_path / "shards" / "settings.json").read_text())["audio.path"] == "w2v"  # as given


@pytest.mark.slow
def test_an_input_its_workers_cannot_read_ends_the_job_with_status_1_and_the_next_run_takes_it(
    local_ray, s3_bucket, tmp_path
):
    """The driver lists the data set on S3, but its workers cannot reach the server (in a child process
    whose Ray gives the workers an endpoint nothing listens on): the job publishes nothing for that
    input, names it and ends with exit status 1; a run whose workers reach the server processes it."""
    import os
    import subprocess
    import sys

    from fet.data.synthtalk.__main__ import generate
    from ray_jobs.preprocess import run

    generate(tmp_path / "st", images=0, clips=1, size=64, seconds=2.0, workers=1, progress=False)
    storage.upload_dir(tmp_path / "st" / "clips", f"{s3_bucket}/st/clips")
    overrides = [f"out={tmp_path / 'shards'}", "size=64", "ray.num_workers=1"]
    (tmp_path / "job.yaml").write_text(
        json.dumps({"sources": [{"kind": "synthtalk", "root": f"{s3_bucket}/st/clips"}]})
    )
    script = """
import os, sys, ray
from ray_jobs.preprocess import main
keys = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
         runtime_env={"env_vars": keys | {"AWS_ENDPOINT_URL": sys.argv[1], "GLOG_minloglevel": "2"}})
main(sys.argv[2:])
"""
    out = subprocess.run([sys.executable, "-c", script, unreachable_endpoint(), "--config", str(tmp_path / "job.yaml"), *overrides],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
                         env=os.environ | {"RAY_ADDRESS": ""})  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    assert "error: 1 input(s) could not be read for a cause outside them, e.g. s3://" in out.stderr, out.stderr[-3000:]
    assert "processed 1 inputs" in out.stdout, out.stdout[-2000:]
    cfg = load_config(PreprocessConfig, tmp_path / "job.yaml", overrides)
    stats = run(cfg)  # the workers of this Ray reach the server
    assert (stats["processed"], stats["rows"], stats["rejects"], stats["retry"]) == (1, 1, 0, 0)
