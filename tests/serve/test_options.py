"""The Serve application's options: a misspelt or unknown one is refused by name, not silently ignored; a
bundle that is not there, or not whole, is named with what it lacks when the application is built."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from fet.bundle import BundleError
from serve.app import build_app
from serve.options import AppOptions
from tests.fet.talking_helpers import build_bundle


def test_an_unknown_option_is_refused_by_name():
    assert AppOptions(bundle="b", job_ttl_seconds=60, encoder={"max_replicas": 3}).encoder.max_replicas == 3
    with pytest.raises(ValidationError, match="job_ttl_secs"):
        AppOptions(bundle="b", job_ttl_secs=60)
    with pytest.raises(ValidationError, match=r"encoder\.max_replica\b"):
        AppOptions(bundle="b", encoder={"max_replica": 3})


def test_a_bundle_that_is_missing_or_not_whole_is_named_with_what_it_lacks(tmp_path):
    with pytest.raises(BundleError, match="nowhere: no bundle.json; expected a bundle written by export_bundle"):
        build_app({"bundle": str(tmp_path / "nowhere")})
    partial = tmp_path / "partial"
    shutil.copytree(build_bundle(tmp_path), partial)
    for name in ("attribute_library.json", "pose_guider.safetensors"):
        (partial / name).unlink()
    with pytest.raises(
        BundleError, match=r"missing component file\(s\) pose_guider.safetensors, attribute_library.json"
    ):
        build_app({"bundle": str(partial)})
    whole = build_bundle(tmp_path)  # a bundle whose upload or copy stopped part-way through a weights file
    weights = (Path(whole) / "denoiser.safetensors").read_bytes()
    (partial / "attribute_library.json").write_bytes((Path(whole) / "attribute_library.json").read_bytes())
    (partial / "pose_guider.safetensors").write_bytes((Path(whole) / "pose_guider.safetensors").read_bytes())
    (partial / "denoiser.safetensors").write_bytes(weights[: len(weights) // 3])
    with pytest.raises(BundleError, match=rf"bundle {partial}: {partial / 'denoiser.safetensors'}: cut short: "):
        build_app({"bundle": str(partial)})
