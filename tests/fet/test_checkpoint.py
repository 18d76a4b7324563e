import json

import pytest
import torch

from fet.autoencoder import DiffusionAutoencoder
from fet.checkpoint import CheckpointError
from tests.fet.helpers import tiny_config


def test_save_load_round_trip_is_bit_identical(trained_tiny, tmp_path):
    model, images, _ = trained_tiny
    model.save(str(tmp_path))
    loaded = DiffusionAutoencoder.load(str(tmp_path))
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.equal(model.encode(images), loaded.encode(images))
    assert loaded.cfg == model.cfg


def test_missing_and_mismatched_checkpoints_are_named(trained_tiny, tmp_path):
    model, _, _ = trained_tiny
    with pytest.raises(CheckpointError, match="semantic_encoder.json: missing"):
        DiffusionAutoencoder.load(str(tmp_path))
    model.save(str(tmp_path))
    (tmp_path / "denoiser.safetensors").unlink()
    with pytest.raises(CheckpointError, match="denoiser.safetensors: missing weights file"):
        DiffusionAutoencoder.load(str(tmp_path))

    # weights of a bigger model under the tiny config: every mismatch is reported
    other = tmp_path / "other"
    DiffusionAutoencoder(tiny_config(base_channels=32)).save(str(other))
    meta = json.loads((other / "denoiser.json").read_text())
    meta["config"]["base_channels"] = 16
    (other / "denoiser.json").write_text(json.dumps(meta))
    (other / "semantic_encoder.json").write_text(json.dumps(meta | {"kind": "semantic_encoder"}))
    with pytest.raises(CheckpointError, match="weights do not match the config.*shape mismatches"):
        DiffusionAutoencoder.load(str(other))


def test_wrong_kind_and_bad_file_are_rejected(trained_tiny, tmp_path):
    model, _, _ = trained_tiny
    model.save(str(tmp_path))
    (tmp_path / "denoiser.json").write_text((tmp_path / "semantic_encoder.json").read_text())
    with pytest.raises(CheckpointError, match="holds a 'semantic_encoder' component, expected 'denoiser'"):
        DiffusionAutoencoder.load(str(tmp_path))
    model.save(str(tmp_path))
    (tmp_path / "denoiser.safetensors").write_bytes(b"\x80\x04pickle, not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        DiffusionAutoencoder.load(str(tmp_path))


def test_checkpoint_round_trip_through_s3(trained_tiny, s3_bucket):
    model, images, _ = trained_tiny
    uri = f"{s3_bucket}/run1/model"
    model.save(uri)
    loaded = DiffusionAutoencoder.load(uri)
    assert torch.equal(model.encode(images), loaded.encode(images))
