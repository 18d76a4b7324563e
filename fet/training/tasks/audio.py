"""Stage A as a distributed task: Audio2Mesh (L1 on vertex offsets) + Audio2Pose on clip shards.

Audio features precomputed by preprocessing are used when they were made by the encoder this run is
configured with (same name, see ``fet.data.preprocess.config.encoder_name``); otherwise they are
computed here from the row's 16 kHz audio. When every training row has them, the audio column is not
read. Each clip yields ``windows_per_clip`` examples per epoch.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from fet.audio.features import AudioEncoder, AudioEncoderConfig
from fet.bundle import save_audio_models
from fet.config import from_dict
from fet.data.preprocess.config import encoder_name
from fet.data.shards import read_rows, unpack
from fet.landmarks.face_mesh import NUM_LANDMARKS
from fet.landmarks.head_mesh import head_mesh
from fet.metrics.sync import lag_correlation, mouth_opening
from fet.models.audio2mesh import Audio2Mesh, Audio2MeshConfig
from fet.models.audio2pose import Audio2Pose, Audio2PoseConfig
from fet.training.motion_data import MotionClip, motion_targets, motion_windows
from fet.training.stage_audio import audio_stage_loss, evaluate_motion, motion_preview
from fet.training.tasks.base import Report, StageModel, TrainingTask


@dataclass
class AudioSection:
    audio: dict[str, Any] = field(default_factory=lambda: {"kind": "mel"})  # AudioEncoderConfig fields
    audio2mesh: dict[str, Any] = field(default_factory=dict)
    audio2pose: dict[str, Any] = field(default_factory=dict)
    windows_per_clip: int = 4


class AudioStageModel(StageModel):
    def __init__(self, audio2mesh: Audio2Mesh, audio2pose: Audio2Pose) -> None:
        super().__init__()
        self.audio2mesh, self.audio2pose = audio2mesh, audio2pose

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        return audio_stage_loss(self.audio2mesh, self.audio2pose, batch)


class AudioTask(TrainingTask[AudioSection]):
    stage = "audio"
    kind = "clips"
    columns: ClassVar[list[str]] = ["clip_id", "speaker", "split", "num_frames", "audio", "audio_features",
                                    "audio_encoder", "landmarks", "transform"]  # fmt: skip
    kept_columns: ClassVar[list[str]] = ["split", "num_frames"]
    section = AudioSection

    def __init__(self, job) -> None:
        super().__init__(job)
        self.encoder = AudioEncoder(from_dict(AudioEncoderConfig, self.cfg.audio, where="task.audio")).eval()
        self.encoder_key = encoder_name(self.encoder.cfg)
        self.mesh_cfg = from_dict(
            Audio2MeshConfig, {**self.cfg.audio2mesh, "feature_dim": self.encoder.dim}, where="task.audio2mesh"
        )
        self.pose_cfg = from_dict(
            Audio2PoseConfig, {**self.cfg.audio2pose, "feature_dim": self.encoder.dim}, where="task.audio2pose"
        )
        self.window = max(self.mesh_cfg.window, self.pose_cfg.window)

    def train_columns(self, shards: str) -> list[str]:
        """Without ``audio`` when every training row holds features of this run's encoder: the audio is only
        read to compute them (about a quarter of the bytes a clip row gives stage A)."""
        rows = read_rows(shards, self.kind, "train", ["split", "audio_encoder"], concurrent=True)
        encoders = {r["audio_encoder"] for r in rows}
        return [c for c in self.columns if c != "audio"] if encoders == {self.encoder_key} else self.columns

    def kept_bytes(self, rows: list[dict[str, Any]]) -> int:
        # per frame: fp32 features, the head mesh in fp64, the fp32 head transform (a clip is kept once for
        # its windows_per_clip examples)
        return sum(int(r["num_frames"]) for r in rows) * (self.encoder.dim * 4 + NUM_LANDMARKS * 3 * 8 + 16 * 4)

    def build(self) -> AudioStageModel:
        return AudioStageModel(Audio2Mesh(self.mesh_cfg), Audio2Pose(self.pose_cfg)).train()

    @torch.no_grad()
    def motion_clip(self, row: dict[str, Any]) -> MotionClip:
        landmarks, transform = unpack(row["landmarks"]), unpack(row["transform"])
        T = landmarks.shape[0]
        if row["audio_features"] and row["audio_encoder"] == self.encoder_key:
            features = torch.from_numpy(unpack(row["audio_features"]).astype(np.float32))
        else:
            features = self.encoder(unpack(row["audio"]), T)
        meshes = np.stack([head_mesh(landmarks[t], transform[t]) for t in range(T)])
        style = zlib.crc32(row["speaker"].encode()) % self.pose_cfg.num_styles
        return MotionClip(row["clip_id"], style, features, meshes, transform)

    @property
    def examples_per_row(self) -> int:
        return self.cfg.windows_per_clip

    def examples(self, rows: list[dict[str, Any]]) -> list[MotionClip]:
        return [c for r in rows for c in [self.motion_clip(r)] * self.cfg.windows_per_clip]

    def collate(self, examples: list[MotionClip], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return motion_windows(examples, self.window, rng)

    @torch.no_grad()
    def report(self, model: AudioStageModel, rows: list[dict[str, Any]]) -> Report:
        model.eval()
        clips = [self.motion_clip(r) for r in rows]
        a2m = model.audio2mesh
        corrs = []
        for c in clips:
            ref, off, _ = motion_targets(c, 0)
            pred = a2m.generate(c.features, torch.from_numpy(ref).float()).float().cpu().numpy()
            corrs.append(mouth_correlation(ref, pred, off))
        metrics = {
            "val_mesh_l1_cm": evaluate_motion(a2m, clips),
            "val_mesh_l1_cm_no_motion": float(np.mean([np.abs(motion_targets(c, 0)[1]).mean() for c in clips])),
            "val_mouth_opening_corr": float(np.mean(corrs)),
        }
        return Report(metrics, {"landmarks_audio.png": motion_preview(a2m, model.audio2pose, clips[0])})

    def export(self, model: AudioStageModel, out: str) -> None:
        save_audio_models(out, self.encoder.cfg, model.audio2mesh, model.audio2pose)


def mouth_correlation(reference: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation over frames of the mouth opening of predicted vs ground-truth meshes:
    reference (468, 3) + offsets (T, 468, 3), in the canonical head frame, so head pose does not enter."""
    return lag_correlation(mouth_opening(reference + truth), mouth_opening(reference + predicted), 0).correlation
