"""Per-clip evaluation and the report tables, without Ray: a tiny saved bundle on SynthTalk test clips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fet.config import load_config
from fet.data.shards import read_rows, unpack
from fet.evaluation.clip import ClipEvaluator, unavailable
from fet.evaluation.config import EvalConfig, MetricWeights
from fet.evaluation.records import decode, encode
from fet.evaluation.report import SKIPPED, build_report, per_clip_rows, to_csv
from fet.metrics.inception import FIDInception
from fet.metrics.syncnet import SyncNet
from tests.fet.talking_helpers import build_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    return build_bundle(tmp_path_factory.mktemp("eval_bundle"))


def test_unavailable_metrics_name_the_missing_files(tmp_path):
    reasons = unavailable(MetricWeights(dlib_models_dir=str(tmp_path), fid_weights=str(tmp_path / "nope.pth")))
    assert "shape_predictor_68_face_landmarks.dat" in reasons["dlib"] and str(tmp_path) in reasons["dlib"]
    assert "nope.pth" in reasons["fid"] and "does not exist" in reasons["fid"]
    assert "syncnet_v2.model" in reasons["syncnet"] and "weights.syncnet_weights" in reasons["syncnet"]


def test_a_clip_is_generated_and_every_metric_measured(synthtalk_shards, bundle, tmp_path):
    """With (random) FID and SyncNet weights every Table 1 column is filled; the report pools the clips."""
    pytest.importorskip("dlib")
    torch.save(FIDInception().state_dict(), tmp_path / "inception.pth")
    torch.save(SyncNet().state_dict(), tmp_path / "syncnet.pth")
    cfg = load_config(EvalConfig, None, [
        f"shards={synthtalk_shards}", f"bundle={bundle}", "max_seconds=0.6", "fid_every=3", "eval_size=192",
        "edits=[add glasses]", f"weights.fid_weights={tmp_path / 'inception.pth'}",
        f"weights.syncnet_weights={tmp_path / 'syncnet.pth'}",
    ])  # fmt: skip
    evaluator = ClipEvaluator(cfg)
    assert evaluator.skipped == {}
    row = next(read_rows(synthtalk_shards, "clips", "test"))
    rec = evaluator(row)
    assert rec["frames"] == 15  # 0.6 s at 25 fps
    assert rec["gen_features"].shape == (5, 2048) and rec["real_features"].shape == (5, 2048)
    for key in ("psnr", "ssim", "cpbd", "gt_cpbd", "syncnet_min_dist", "syncnet_conf", "gt_syncnet_min_dist"):
        assert math.isfinite(rec[key]), key
    assert -15 <= rec["syncnet_offset"] <= 15
    assert 0 < rec["ssim"] <= 1 and rec["psnr"] > 10
    assert rec["preview"][:4] == b"\x89PNG"
    kept = decode(encode(rec))  # as an evaluation run again finds it (fet.evaluation.records)
    assert kept.keys() == rec.keys() and kept["preview"] == rec["preview"] and kept["psnr"] == rec["psnr"]
    assert all(np.array_equal(kept[k], rec[k]) for k in ("gen_features", "real_features"))
    # a second clip with different numbers, and no face where the sync score looks (blank frames), then the tables
    audio = unpack(row["audio"]).astype(np.float32)[: 15 * 640]
    faceless = evaluator._sync(np.zeros((15, 192, 192, 3), np.uint8), unpack(row["landmarks"])[:15], audio, 25)
    assert math.isnan(faceless["sync_corr"]) and math.isfinite(faceless["gt_sync_corr"])
    other = dict(rec, clip_id="copy", psnr=rec["psnr"] + 2.0) | faceless
    report = build_report([rec, other], evaluator.skipped, cfg.edits)
    assert ("Sync r and Sync lag leave out clip copy: MediaPipe found a face in 0% of its generated frames, and the "
            "score needs 90%") in report.notes  # fmt: skip
    generated, real = report.table1
    assert generated["PSNR"] == pytest.approx(rec["psnr"] + 1.0)
    assert math.isfinite(generated["FID"]) and generated["FID"] >= 0
    assert real["CPBD"] == pytest.approx(rec["gt_cpbd"]) and math.isnan(real["PSNR"])
    assert [r["Edit"] for r in report.table2] == ["none", "add glasses"]
    assert "generated.psnr" in report.metrics() and "real.cpbd" in report.metrics()
    assert "| Method | FID | SSIM | PSNR | CPBD | Min Dist | AVConf | AVOffset | M-LMD | F-LMD |" in report.markdown()
    csv_text = to_csv(per_clip_rows([rec, other]))
    assert csv_text.splitlines()[0].startswith("clip_id,") and "gen_features" not in csv_text


def test_skipped_metrics_are_listed_never_zero(synthtalk_shards, bundle):
    cfg = load_config(EvalConfig, None, [f"shards={synthtalk_shards}", f"bundle={bundle}", "max_seconds=0.4",
                                         "edits=[]", "weights.dlib_models_dir=/nonexistent"])  # fmt: skip
    evaluator = ClipEvaluator(cfg)
    assert set(evaluator.skipped) == {"dlib", "fid", "syncnet"}
    rec = evaluator(next(read_rows(synthtalk_shards, "clips", "test")))
    assert "m_lmd" not in rec and "gen_features" not in rec
    report = build_report([rec], evaluator.skipped, cfg.edits)
    generated = report.table1[0]
    for col in ("FID", "Min Dist", "AVConf", "AVOffset", "M-LMD", "F-LMD"):
        assert generated[col] == SKIPPED and col in report.skipped
    assert report.table2 == [{"Edit": "none", "TL-ID": SKIPPED, "TG-ID": SKIPPED}]
    assert np.isfinite(generated["PSNR"]) and "/nonexistent" in report.markdown()


def test_an_unknown_edit_fails_before_any_clip(bundle, synthtalk_shards):
    cfg = load_config(EvalConfig, None, [f"shards={synthtalk_shards}", f"bundle={bundle}", "edits=[add wings]"])
    with pytest.raises(ValueError, match="wings"):
        ClipEvaluator(cfg)


def test_kept_clip_records_go_when_the_settings_the_bundle_or_the_shards_change(tmp_path):
    """`out/clips` keeps records only for the settings, bundle.json and shard manifest they were made with."""
    from fet.config import to_dict
    from fet.evaluation.records import ClipRecords, record_settings

    (tmp_path / "bundle").mkdir()
    (tmp_path / "shards").mkdir()
    (tmp_path / "bundle" / "bundle.json").write_text('{"runs": {"stage1": "a"}}')
    (tmp_path / "shards" / "manifest.json").write_text('{"clips": {"seconds": 1.0}}')
    cfg = load_config(EvalConfig, None, [f"bundle={tmp_path / 'bundle'}", f"shards={tmp_path / 'shards'}"])
    out = str(tmp_path / "eval")

    def records() -> ClipRecords:
        return ClipRecords(out, record_settings(to_dict(cfg)))

    assert records().prepare() == 0
    records().put("clip 1", encode({"clip_id": "clip 1", "psnr": np.float32(20.5)}))
    assert records().prepare() == 1 and decode(records().get("clip 1")) == {"clip_id": "clip 1", "psnr": 20.5}
    cfg.max_clips = 1  # which clips are measured, not how: the record stays
    assert records().prepare() == 1
    for change in (lambda: setattr(cfg, "seed", 1),
                   lambda: (tmp_path / "bundle" / "bundle.json").write_text('{"runs": {"stage1": "b"}}'),
                   lambda: (tmp_path / "shards" / "manifest.json").write_text('{"clips": {"seconds": 2.0}}')):  # fmt: skip
        records().put("clip 1", encode({"clip_id": "clip 1"}))
        change()
        assert records().prepare() == 0 and records().get("clip 1") is None
