"""Preprocessing without Ray: dataset layouts, 25 fps resampling, the SynthTalk path through the same
code, and the helpers that fill gaps and score clips."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from fet.config import ConfigError, load_config
from fet.data import shards
from fet.data.celeba_attributes import format_celeba_attributes, read_celeba_attributes
from fet.data.preprocess import PreprocessConfig, run_serial
from fet.data.preprocess.clips import fill_missing, landmark_jitter
from fet.data.sources import SourceConfig, SourceError, list_items
from fet.data.synthtalk.__main__ import generate
from fet.landmarks.detector import FaceLandmarks
from fet.media.mp4 import write_mp4
from fet.media.video import VideoReader, segment_starts
from tests.conftest import media, point_s3_at_nothing


def _touch(path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_voxceleb2_layout_with_separate_audio_and_speaker_splits(tmp_path):
    for spk in ("id00012", "id00015"):
        for vid in ("abc", "xyz"):
            _touch(tmp_path / "dev" / "mp4" / spk / vid / "00001.mp4")
    items = list_items(SourceConfig(kind="voxceleb2", root=str(tmp_path / "dev" / "mp4"),
                                    audio_root=str(tmp_path / "dev" / "aac"), val_fraction=0.5))  # fmt: skip
    assert [i.item_id for i in items] == ["id00012/abc/00001", "id00012/xyz/00001", "id00015/abc/00001",
                                          "id00015/xyz/00001"]  # fmt: skip
    assert items[0].audio == str(tmp_path / "dev" / "aac" / "id00012" / "abc" / "00001.m4a")
    by_speaker = {}
    for i in items:
        by_speaker.setdefault(i.speaker, set()).add(i.split)
    assert all(len(s) == 1 for s in by_speaker.values())  # one person never spans two splits
    _touch(tmp_path / "bad" / "loose.mp4")
    with pytest.raises(SourceError, match="id<NNNNN>"):
        list_items(SourceConfig(kind="voxceleb2", root=str(tmp_path / "bad")))


def test_hdtf_vfhq_and_celeba_layouts(tmp_path):
    _touch(tmp_path / "hdtf" / "WDA_BarackObama_000.mp4")
    _touch(tmp_path / "hdtf" / "WDA_BarackObama_001.mp4")
    hdtf = list_items(SourceConfig(kind="hdtf", root=str(tmp_path / "hdtf")))
    assert {i.speaker for i in hdtf} == {"WDA_BarackObama"} and len({i.split for i in hdtf}) == 1
    for f in range(3):
        _touch(tmp_path / "vfhq" / "Clip+G0DGRma_p48+P0+C0+F11208-11383" / f"{f:08d}.png")
    (vfhq,) = list_items(SourceConfig(kind="vfhq", root=str(tmp_path / "vfhq")))
    assert vfhq.speaker == "G0DGRma_p48" and vfhq.fps == 25.0 and vfhq.audio is None
    labels = {"0.jpg": np.r_[np.ones(20), np.zeros(20)].astype(np.int8)}
    _touch(tmp_path / "celeba" / "CelebA-HQ-img" / "0.jpg")
    (tmp_path / "celeba" / "CelebAMask-HQ-attribute-anno.txt").write_text(format_celeba_attributes(labels))
    (img,) = list_items(SourceConfig(kind="celeba_hq", root=str(tmp_path / "celeba" / "CelebA-HQ-img")))
    assert np.array_equal(img.attributes, labels["0.jpg"])
    with pytest.raises(SourceError, match="unknown data set"):
        SourceConfig(kind="lrs3").validate()


def test_30fps_video_is_resampled_by_timestamp(tmp_path):
    """A 30 fps input becomes a true 25 fps clip: frame i shows the source frame at time i/25."""
    frames = np.zeros((60, 64, 64, 3), np.uint8)
    frames[:] = (np.arange(60) * 4)[:, None, None, None]  # brightness encodes the source index
    write_mp4(str(tmp_path / "v.mp4"), frames, None, 16_000, fps=30)
    reader = VideoReader(tmp_path / "v.mp4")
    assert reader.info.num_frames == 60 and reader.info.fps == pytest.approx(30)
    (_, got), *_ = list(reader.segments(25, 100))
    assert got.shape[0] == 50  # 2 s at 25 fps
    shown = np.round(got.reshape(50, -1).mean(1) / 4)
    assert np.abs(shown - np.floor(np.arange(50) * 30 / 25)).max() <= 1  # codec noise at most one step
    assert segment_starts(122, 100, 25) == [0] and segment_starts(125, 100, 25) == [0, 100]


def test_frame_folder_reads_as_video(tmp_path):
    for i in range(30):
        Image.fromarray(np.full((32, 48, 3), i * 8, np.uint8)).save(tmp_path / f"{i:04d}.png")
    reader = VideoReader(tmp_path, fps=25)
    assert (reader.info.num_frames, reader.info.width, reader.info.height) == (30, 48, 32)
    assert reader.frames(np.array([0, 29]))[1, 0, 0, 0] == 29 * 8


def test_fill_missing_interpolates_and_marks_gaps():
    def face(x: float) -> FaceLandmarks:
        return FaceLandmarks(np.full((478, 3), x, np.float32), np.eye(4), np.zeros(52, np.float32))

    out = fill_missing([face(0.2), None, None, face(0.5)])
    assert out["face_found"].tolist() == [True, False, False, True]
    assert np.allclose(out["landmarks"][:, 0, 0], [0.2, 0.3, 0.4, 0.5])
    still = np.tile(out["landmarks"][:1], (10, 1, 1))
    still[:, :, :2] += np.random.default_rng(0).normal(0, 0.01, (10, 478, 2))
    assert landmark_jitter(still, np.ones(10, bool)) > 10 * landmark_jitter(np.tile(out["landmarks"][:1], (10, 1, 1)),
                                                                            np.ones(10, bool)) - 1e-9  # fmt: skip


def test_synthtalk_through_the_serial_runner(tmp_path):
    """SynthTalk keeps its ground-truth landmarks (no detection) and runs everything else the same way;
    a second run does nothing."""
    generate(tmp_path / "st", images=6, clips=2, size=64, seconds=2.0, workers=1, progress=False)
    cfg = load_config(PreprocessConfig, None, [f"out={tmp_path / 'shards'}", "size=64", "rows_per_shard=4"])
    cfg.sources = [SourceConfig(kind="synthtalk", root=str(tmp_path / "st" / "clips")),
                   SourceConfig(kind="synthtalk_images", root=str(tmp_path / "st" / "images"))]  # fmt: skip
    stats = run_serial(cfg, progress=False)
    assert stats["rows"] == 8 and stats["rejects"] == 0
    assert set(stats["timings"]) >= {"decode", "landmarks", "audio", "encode", "write"}
    for row in shards.read_rows(cfg.out, "clips"):
        rec = shards.clip_record(row)
        side = np.load(tmp_path / "st" / "clips" / row["split"] / f"{row['clip_id']}.npz")
        assert np.array_equal(rec.landmarks, side["landmarks"]) and rec.frames.shape == (50, 64, 64, 3)
        assert rec.features.shape == (50, 320) and rec.audio.shape == (50 * 640,)
        assert np.corrcoef(rec.audio, side["audio"][: 50 * 640])[0, 1] > 0.95  # the mp4's AAC track, aligned
        assert row["sync_corr"] > 0.5  # SynthTalk's mouth follows its speech
    labels = read_celeba_attributes(str(tmp_path / "st" / "CelebAMask-HQ-attribute-anno.txt"))
    for row in shards.read_rows(cfg.out, "images"):
        assert row["attributes"] == labels[row["image_id"].split("/")[-1] + ".png"].tolist()
        assert Image.open(io.BytesIO(row["image"])).size == (64, 64)
    assert (tmp_path / "shards" / "preview_clips.png").exists() and (
        tmp_path / "shards" / "preview_images.png"
    ).exists()
    again = run_serial(cfg, progress=False)
    assert again["processed"] == 0 and again["skipped"] == 8


def test_job_entry_point_reports_config_errors_without_a_traceback(tmp_path):
    """Refused before Ray starts: the models every worker would load are checked once, by the job, and
    every source is listed (a missing data folder), without making the shard folder."""
    import subprocess
    import sys

    from fet.data.preprocess import check_models

    cases = {
        "sources.0.kind=lrs3": "override 'sources.0.kind=lrs3': source.kind: unknown data set 'lrs3'",
        f"face_landmarker={media('audio/retalking_1.wav')}": "face_landmarker: /",  # not found by each worker
        f"sources.0.root={tmp_path / 'nowhere'}": f"synthtalk source: {tmp_path / 'nowhere'}: not a directory",
    }  # fmt: skip
    for override, message in cases.items():
        out = subprocess.run([sys.executable, "-m", "ray_jobs.preprocess", "--config", "configs/data/synthtalk.yaml",
                              f"out={tmp_path / 'shards'}", override], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 2 and f"error: {message}" in out.stderr, (override, out.stderr[-2000:])
        assert "Traceback" not in out.stderr and "Started a local Ray instance" not in out.stderr
        assert not (tmp_path / "shards").exists()
    from tests.fet.helpers import save_tiny_wav2vec2

    save_tiny_wav2vec2(tmp_path / "w2v", hidden=16)
    weights = tmp_path / "w2v" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # an interrupted copy
    checked = {  # what the job checks before Ray starts, and run_serial before any work
        f"face_landmarker={tmp_path / 'none.task'}": f"face_landmarker: face landmarker bundle {tmp_path / 'none.task'}: no such file",
        f"audio={{kind: wav2vec2, path: {tmp_path}, stack: 2}}": f"audio.path: {tmp_path}: no config.json; expected a saved Wav2Vec2Model",
        f"audio={{kind: wav2vec2, path: {tmp_path / 'w2v'}, stack: 2}}": f"audio.path: {weights}: cut short: ",
    }  # fmt: skip
    for override, message in checked.items():
        cfg = load_config(PreprocessConfig, "configs/data/synthtalk.yaml", [f"out={tmp_path / 'shards'}", override])
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_models(cfg)
    cfg = load_config(PreprocessConfig, "configs/data/synthtalk.yaml", [f"out={tmp_path / 'shards'}"])
    cfg.face_landmarker = str(media("audio/retalking_1.wav"))
    with pytest.raises(ConfigError, match="retalking_1.wav: not a MediaPipe model bundle"):
        run_serial(cfg, progress=False)
    assert not (tmp_path / "shards").exists()


def test_a_shard_folder_refuses_a_run_with_other_row_settings_and_takes_more_inputs(tmp_path):
    """A run into a folder made with another crop size is refused, naming the difference, instead of
    skipping what the folder holds and adding rows made the new way. More inputs, another shard size or
    other Ray resources make the same rows, so the folder takes those."""
    import subprocess
    import sys

    generate(tmp_path / "st", images=6, clips=0, size=32, seconds=1.0, workers=1, progress=False)
    out = tmp_path / "shards"

    def config(*overrides: str, limit: int | None = None) -> PreprocessConfig:
        cfg = load_config(PreprocessConfig, None, [f"out={out}", "size=32", *overrides])
        cfg.sources = [SourceConfig(kind="synthtalk_images", root=str(tmp_path / "st" / "images"), limit=limit)]
        return cfg

    assert run_serial(config(limit=4), progress=False)["rows"] == 4
    for change, diff in (("size=48", "size 32 → 48"), ("crop_scale=2.0", "crop_scale"), ("audio.n_mels=40",
                         "audio.n_mels None → 40")):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"holds shards made with other settings \(.*{diff}"):
            run_serial(config(change), progress=False)
    stats = run_serial(config("rows_per_shard=2", "ray.num_workers=3"), progress=False)  # all 6 inputs now
    assert (stats["processed"], stats["skipped"], stats["rows"]) == (2, 4, 2)
    source = f"sources=[{{kind: synthtalk_images, root: {tmp_path / 'st' / 'images'}}}]"
    job = subprocess.run([sys.executable, "-m", "ray_jobs.preprocess", "--config", "configs/data/synthtalk.yaml",
                          f"out={out}", source, "size=64"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert job.returncode == 2 and "size 32 → 64" in job.stderr and "Traceback" not in job.stderr
    assert "Started a local Ray instance" not in job.stderr  # refused before Ray starts
    out = tmp_path / "fresh"  # a run that stopped before its first shard does not bind the folder
    lost = config()
    lost.sources[0].root = str(tmp_path / "no such folder")
    with pytest.raises(SourceError):
        run_serial(lost, progress=False)
    assert run_serial(config("size=48"), progress=False)["rows"] == 6


def test_two_inputs_with_one_id_are_refused_before_any_work(tmp_path):
    """The shards know an input by its kind and id: of two videos named alike in two folders of one data
    set, the second would pass for done (or both be stored under one clip id)."""
    data = media("video/retalking_5.mp4").read_bytes()
    for day in ("day1", "day2"):
        _touch(tmp_path / "talks" / day / "Alice_000.mp4", data)
    cfg = load_config(PreprocessConfig, None, [f"out={tmp_path / 'shards'}"])
    cfg.sources = [SourceConfig(kind="hdtf", root=str(tmp_path / "talks"))]
    with pytest.raises(SourceError, match=r"day1/Alice_000.mp4 and .*day2/Alice_000.mp4: two hdtf inputs with the id"):
        run_serial(cfg, progress=False)
    assert not (tmp_path / "shards" / "clips").exists()


def test_inputs_that_storage_cannot_serve_are_not_marked_done_and_the_next_run_processes_them(
    tmp_path, s3_bucket, monkeypatch
):
    """The data set is on S3 and the server goes away after the inputs were listed: every input becomes
    an ``unreachable`` row, which no shard keeps and which marks nothing done (it says nothing about the
    input), so the next run, with the server back, processes them all."""
    from fet import storage
    from fet.data.preprocess import make_processor, pending, retry_message, shard_kind

    generate(tmp_path / "st", images=2, clips=1, size=64, seconds=2.0, workers=1, progress=False)
    storage.upload_dir(tmp_path / "st", f"{s3_bucket}/st")
    cfg = load_config(PreprocessConfig, None, [f"out={tmp_path / 'shards'}", "size=64"])
    cfg.sources = [SourceConfig(kind="synthtalk", root=f"{s3_bucket}/st/clips"),
                   SourceConfig(kind="synthtalk_images", root=f"{s3_bucket}/st/images")]  # fmt: skip
    todo = pending(cfg)  # listed while the server answers
    assert [len(work) for _, work, _ in todo] == [1, 2]
    with monkeypatch.context() as m:
        point_s3_at_nothing(m)
        for source, work, _ in todo:
            processor = make_processor(cfg, shard_kind(source))
            rows = [r for item, skip in work for r in processor(item, skip)]
            assert {r["reject_reason"] for r in rows} == {shards.UNREACHABLE}, [r["reject_detail"] for r in rows]
            summary = shards.write_shard(cfg.out, shard_kind(source), rows)
            assert summary["retry"] == len(rows) and summary["rows"] == summary["rejects"] == 0
            assert "Could not connect" in summary["retry_detail"]
    stats = {"retry": 3, "retry_detail": summary["retry_detail"]}
    assert retry_message(stats).startswith("3 input(s) could not be read for a cause outside them, e.g. s3://")
    assert [len(work) for _, work, _ in pending(cfg)] == [1, 2]  # nothing marked done

    stats = run_serial(cfg, progress=False)
    assert (stats["processed"], stats["rows"], stats["rejects"], stats["retry"]) == (3, 3, 0, 0)
    assert retry_message(stats) == ""
    assert run_serial(cfg, progress=False)["skipped"] == 3
