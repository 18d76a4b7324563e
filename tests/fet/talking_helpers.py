"""Tiny saved-and-reloaded bundles and synthetic references for the audio-driven tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fet.audio.features import AudioEncoderConfig
from fet.autoencoder import DiffusionAutoencoder
from fet.bundle import export_bundle, save_audio_models, save_talker
from fet.data.synthtalk.identity import sample_identity
from fet.data.synthtalk.world import base_expression, render
from fet.editing.attributes import AttributeLibrary
from fet.editing.classifier import AttributeClassifier
from fet.editor import save_attribute_model
from fet.landmarks.detector import FaceLandmarks
from fet.models.audio2mesh import Audio2Mesh, Audio2MeshConfig
from fet.models.audio2pose import Audio2Pose, Audio2PoseConfig
from fet.models.pose_guider import PoseGuiderConfig
from fet.models.talker import TalkerDenoiser
from tests.fet.helpers import tiny_config

GUIDER = PoseGuiderConfig(stem_channels=(8, 16), attention_head_dim=16, num_groups=4)


def build_bundle(out: Path, autoencoder: DiffusionAutoencoder | None = None, audio: AudioEncoderConfig | None = None,
                 pipeline: dict | None = None, metrics: dict | None = None, direction: str = "classifier",
                 guider: PoseGuiderConfig = GUIDER) -> str:  # fmt: skip
    """Random (or given) tiny components → the four stage directories → ``export_bundle`` (with ``metrics``,
    stage → training metrics, as the export job reads them from each stage's ``training_run.json``).
    ``direction="label_model"`` fits the classifier's label model to random labels and edits with it;
    ``guider``: a pose guider that downsamples to the latents of an autoencoder with a codec."""
    torch.manual_seed(0)
    ae = autoencoder or DiffusionAutoencoder(tiny_config())
    ae.save(str(out / "stage1"))
    save_talker(str(out / "stage3"), TalkerDenoiser.from_stage1(ae.denoiser, guider))
    clf = AttributeClassifier(ae.cfg.z_dim, label_model=direction == "label_model")
    z = torch.randn(64, ae.cfg.z_dim)
    clf.fit_normalizer(z)
    clf.trained[:] = True
    if clf.label_model is not None:
        clf.label_model.fit(clf.normalize(z), torch.randint(0, 2, (64, 40)), ridge=1.0)
    save_attribute_model(str(out / "stage2"), clf, AttributeLibrary(direction=direction))
    audio = audio or AudioEncoderConfig(n_mels=16)
    dim = 16 * audio.stack if audio.kind == "mel" else None
    if dim is None:
        from fet.audio.features import AudioEncoder

        dim = AudioEncoder(audio).dim
    mesh = Audio2Mesh(Audio2MeshConfig(feature_dim=dim, hidden=32, layers=1, heads=2, window=20, overlap=4))
    pose = Audio2Pose(Audio2PoseConfig(feature_dim=dim, hidden=32, layers=1, heads=2, window=20, overlap=4))
    for m in (mesh, pose):  # non-zero heads, so motion actually moves the landmarks
        torch.nn.init.normal_(m.head.weight, std=0.02)
    save_audio_models(str(out / "audio"), audio, mesh, pose)
    return export_bundle(
        str(out / "bundle"), image_dir=str(out / "stage1"), talker_dir=str(out / "stage3"),
        editing_dir=str(out / "stage2"), audio_dir=str(out / "audio"), runs={"stage1": "test"},
        pipeline=pipeline or {"steps": 4, "batch_size": 4}, metrics=metrics,
    )  # fmt: skip


def synthetic_face(size: int, seed: int = 0) -> tuple[np.ndarray, FaceLandmarks]:
    """A SynthTalk face (size², uint8) with its ground-truth landmarks and transform."""
    identity = sample_identity(np.random.default_rng(seed))
    image, lms, transform = render(identity, base_expression(identity), np.zeros(6), size)
    return image, FaceLandmarks(lms, transform, np.zeros(52, np.float32))


def speech(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Speech-like audio: a 140 Hz buzz with syllable-rate amplitude modulation."""
    t = np.arange(int(seconds * sr)) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + seed)
    return (0.3 * env * np.sign(np.sin(2 * np.pi * 140 * t))).astype(np.float32)
