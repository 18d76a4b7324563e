"""Stage A (paper 3.4, Appendix A): Audio2Mesh (L1 on vertex offsets) and Audio2Pose on talking clips.

``audio_stage_loss`` is the per-batch step shared by this single-process trainer and the Ray Train job.
Outputs: ``audio2mesh`` / ``audio2pose`` components, ``audio_encoder.json``, ``metrics_audio.json`` and
``landmarks_audio.png`` (held-out clip: ground-truth landmark maps above predicted ones).
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fet import storage
from fet.audio.features import AudioEncoder, AudioEncoderConfig
from fet.bundle import save_audio_models
from fet.config import from_dict
from fet.data.clip_folder import list_clips, read_clip
from fet.images import encode_png
from fet.landmarks.head_mesh import animate
from fet.landmarks.landmark_map import draw_landmark_map
from fet.models.audio2mesh import Audio2Mesh, Audio2MeshConfig, audio2mesh_loss
from fet.models.audio2pose import Audio2Pose, Audio2PoseConfig, audio2pose_loss
from fet.training.config import AudioStageConfig
from fet.training.motion_data import MotionClip, motion_batch, motion_targets, prepare_motion_clip
from fet.training.optim import apply_gradients


def build_audio_models(cfg: AudioStageConfig) -> tuple[AudioEncoder, Audio2Mesh, Audio2Pose]:
    encoder = AudioEncoder(from_dict(AudioEncoderConfig, cfg.audio, where="audio"))
    mesh_cfg = from_dict(Audio2MeshConfig, {**cfg.audio2mesh, "feature_dim": encoder.dim}, where="audio2mesh")
    pose_cfg = from_dict(Audio2PoseConfig, {**cfg.audio2pose, "feature_dim": encoder.dim}, where="audio2pose")
    return encoder, Audio2Mesh(mesh_cfg), Audio2Pose(pose_cfg)


def audio_stage_loss(
    audio2mesh: Audio2Mesh, audio2pose: Audio2Pose, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch of ``motion_batch`` → total loss and its parts (mesh L1 in cm, pose loss)."""
    offsets = audio2mesh(batch["features"], batch["reference_mesh"])
    mesh = audio2mesh_loss(offsets, batch["offsets"], batch["mask"])
    poses = audio2pose(batch["features"], batch["style"])
    pose = audio2pose_loss(poses, batch["poses"], batch["mask"], audio2pose.cfg.rotation_weight)
    return mesh + pose, {"mesh_l1_cm": mesh.item(), "pose_loss": pose.item()}


def load_motion_clips(
    root: str, split: str, encoder: AudioEncoder, num_styles: int, limit: int | None
) -> list[MotionClip]:
    paths = list_clips(root, split)[:limit]
    return [
        prepare_motion_clip(read_clip(p), encoder, num_styles) for p in tqdm(paths, desc=f"clips {split}", leave=False)
    ]


@torch.no_grad()
def evaluate_motion(audio2mesh: Audio2Mesh, clips: list[MotionClip]) -> float:
    """Mean vertex L1 (cm) of whole held-out clips, reference = first frame, windowed inference."""
    errs = []
    for c in clips:
        ref, off, _ = motion_targets(c, 0)
        pred = audio2mesh.generate(c.features, torch.from_numpy(ref).float()).float().cpu()
        errs.append((pred - torch.from_numpy(off).float()).abs().mean().item())
    return float(np.mean(errs))


@torch.no_grad()
def motion_preview(
    audio2mesh: Audio2Mesh, audio2pose: Audio2Pose, clip: MotionClip, size: int = 96, n: int = 8
) -> bytes:
    """PNG: ground-truth landmark maps (top) and predicted ones (bottom) at n frames of a clip."""
    ref, off, pose = motion_targets(clip, 0)
    pred_off = audio2mesh.generate(clip.features, torch.from_numpy(ref).float()).float().cpu().numpy()
    pred_pose = audio2pose.generate(clip.features, clip.style).float().cpu().numpy()
    idx = np.linspace(0, len(off) - 1, n).round().astype(int)
    gt = animate(clip.meshes[0], off[idx], pose[idx], clip.transform[0])
    pr = animate(clip.meshes[0], pred_off[idx], pred_pose[idx], clip.transform[0])
    rows = [np.concatenate([draw_landmark_map(p, size) for p in pts], axis=1) for pts in (gt, pr)]
    return encode_png(Image.fromarray(np.concatenate(rows, axis=0)))


def train_audio_stage(cfg: AudioStageConfig, progress: bool = True) -> dict:
    cfg.validate()
    torch.manual_seed(cfg.seed)
    encoder, a2m, a2p = build_audio_models(cfg)
    train = load_motion_clips(cfg.clips, "train", encoder, a2p.cfg.num_styles, cfg.limit)
    val = load_motion_clips(cfg.clips, "val", encoder, a2p.cfg.num_styles, cfg.limit)
    params = [*a2m.parameters(), *a2p.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    rng = np.random.default_rng(cfg.seed)
    window = max(a2m.cfg.window, a2p.cfg.window)
    history = []
    start = time.time()
    a2m.train(), a2p.train()
    for step in tqdm(range(cfg.steps), desc="stage A", disable=not progress):
        batch = motion_batch(train, cfg.batch_size, window, rng)
        loss, parts = audio_stage_loss(a2m, a2p, batch)
        apply_gradients(loss, opt, params, cfg.grad_clip, sched)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": loss.item(), **parts})
    a2m.eval(), a2p.eval()
    save_audio_models(cfg.out, encoder.cfg, a2m, a2p)
    zero = float(np.mean([np.abs(motion_targets(c, 0)[1]).mean() for c in val])) if val else float("nan")
    metrics = {
        "steps": cfg.steps,
        "seconds": time.time() - start,
        "history": history,
        "val_mesh_l1_cm": evaluate_motion(a2m, val) if val else float("nan"),
        "val_mesh_l1_cm_no_motion": zero,  # the error of predicting no motion at all, for scale
        "audio_encoder": dataclasses.asdict(encoder.cfg),
    }
    storage.write_text(storage.join(cfg.out, "metrics_audio.json"), json.dumps(metrics, indent=2))
    if val:
        storage.write_bytes(storage.join(cfg.out, "landmarks_audio.png"), motion_preview(a2m, a2p, val[0]))
    return metrics
