"""Stage 3 (paper Algorithm 3): the talker denoiser + PoseGuider with E_sem and the codec frozen (Eq. 9).

    L = E ‖ε − ε_θ(z_t, t, z_sem(ref), K_target, K_ref)‖²

A training pair is two frames of one clip: the reference (its z_sem and its landmark map K_ref) and
the target (its latent z_0 and its landmark map K_target), so the model learns to move the reference
face into the target's landmarks. ``stage3_loss`` is the per-batch step shared with the Ray Train job.
Outputs: ``denoiser`` + ``pose_guider`` (EMA), ``samples_stage3.png`` and ``metrics_stage3.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from fet import storage
from fet.autoencoder import DiffusionAutoencoder
from fet.bundle import save_talker
from fet.config import from_dict
from fet.data.clip_folder import list_clips, read_clip
from fet.diffusion.ddim import ddim_invert, ddim_sample, training_scheduler
from fet.images import image_grid, save_image
from fet.landmarks.landmark_map import landmark_maps
from fet.lineage import encoder_digest, write_lineage
from fet.metrics.image_quality import psnr
from fet.models.pose_guider import PoseGuiderConfig
from fet.models.talker import TalkerDenoiser
from fet.training.config import Stage3Config
from fet.training.ema import EMA
from fet.training.losses import diffusion_loss
from fet.training.optim import apply_gradients
from fet.training.stage1 import step_generator, warmup_lambda


@dataclass
class TalkingFrames:
    """Every frame of the training clips, as tensors: frames (N, 3, S, S) in [-1, 1], landmarks
    (N, 478, 3), and for each frame the [start, end) range of its clip."""

    frames: torch.Tensor
    landmarks: np.ndarray
    clip_range: np.ndarray  # (N, 2)


def load_talking_frames(root: str, split: str, size: int, limit: int | None = None) -> TalkingFrames:
    frames, lms, ranges, n = [], [], [], 0
    for path in tqdm(list_clips(root, split)[:limit], desc=f"clips {split}", leave=False):
        clip = read_clip(path)
        if clip.frames.shape[1:3] != (size, size):
            raise ValueError(f"{path}: frames are {clip.frames.shape[1:3]}, the model expects {size}x{size}")
        T = clip.frames.shape[0]
        frames.append(torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float().div(127.5).sub(1))
        lms.append(clip.landmarks)
        ranges.append(np.tile([n, n + T], (T, 1)))
        n += T
    return TalkingFrames(torch.cat(frames), np.concatenate(lms), np.concatenate(ranges))


def sample_pairs(data: TalkingFrames, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(target indices, reference indices) of ``batch_size`` random frame pairs from the same clips."""
    target = rng.integers(0, data.frames.shape[0], batch_size)
    lo, hi = data.clip_range[target, 0], data.clip_range[target, 1]
    return target, lo + (rng.random(batch_size) * (hi - lo)).astype(np.int64)


def stage3_loss(
    talker: TalkerDenoiser,
    autoencoder: DiffusionAutoencoder,
    target: torch.Tensor,
    reference: torch.Tensor,
    target_map: torch.Tensor,
    reference_map: torch.Tensor,
    scheduler,
    generator: torch.Generator,
) -> torch.Tensor:
    """Eq. 9 on a batch: images (B, 3, S, S) in [-1, 1], maps (B, 3, S, S) in [0, 1]."""
    with torch.no_grad():  # E_sem and the codec are frozen in stage 3
        z_sem = autoencoder.encoder(reference)
        x_0 = autoencoder.codec.encode(target)
    return diffusion_loss(
        talker, x_0, z_sem, scheduler, generator, landmark_map=target_map, reference_map=reference_map
    )


def talker_param_groups(talker: TalkerDenoiser, lr: float, guider_lr_scale: float) -> list[dict]:
    """AdamW groups: the denoiser (initialised from stage 1) at ``lr``, the PoseGuider at ``lr · scale``."""
    if guider_lr_scale <= 0:
        raise ValueError(f"guider_lr_scale={guider_lr_scale}: expected a positive factor")
    return [
        {"params": list(talker.denoiser.parameters()), "lr": lr},
        {"params": list(talker.pose_guider.parameters()), "lr": lr * guider_lr_scale},
    ]


@torch.no_grad()
def talker_samples(
    talker: TalkerDenoiser, autoencoder: DiffusionAutoencoder, data: TalkingFrames, pairs: tuple, steps: int
) -> tuple[torch.Tensor, float]:
    """Invert each reference with its own map, render it with the target's map (the inference path).
    → grid rows (reference, target, generated, target map) and the PSNR of generated vs target."""
    tgt, ref = pairs
    size = talker.cfg.image_size
    ref_img, tgt_img = data.frames[ref], data.frames[tgt]
    ref_map, tgt_map = landmark_maps(data.landmarks[ref], size), landmark_maps(data.landmarks[tgt], size)
    z = autoencoder.encoder(ref_img)
    x_T = ddim_invert(
        talker.denoise_fn(z, talker.guidance(ref_map, ref_map)), autoencoder.to_latent(ref_img), steps, talker.cfg
    )
    latent = ddim_sample(talker.denoise_fn(z, talker.guidance(tgt_map, ref_map)), x_T, steps, talker.cfg)
    gen = autoencoder.codec.decode(latent).float().cpu()
    grid = torch.cat([ref_img, tgt_img, gen.clamp(-1, 1), tgt_map * 2 - 1])
    return grid, psnr(gen, tgt_img)


def train_stage3(cfg: Stage3Config, progress: bool = True) -> dict:
    cfg.validate()
    torch.manual_seed(cfg.seed)
    ae = DiffusionAutoencoder.load(cfg.autoencoder).requires_grad_(False)
    lineage = encoder_digest(cfg.autoencoder)
    talker = TalkerDenoiser.from_stage1(ae.denoiser, from_dict(PoseGuiderConfig, cfg.guider, where="guider")).train()
    size = talker.cfg.image_size
    train = load_talking_frames(cfg.clips, "train", size, cfg.limit)
    val = load_talking_frames(cfg.clips, "val", size, cfg.limit)
    ema = EMA(talker, cfg.optim.ema_decay)
    params = list(talker.parameters())
    groups = talker_param_groups(talker, cfg.optim.lr, cfg.guider_lr_scale)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(cfg.optim.warmup_steps))
    noise = training_scheduler(talker.cfg)
    rng = np.random.default_rng(cfg.seed)
    history: list[float] = []
    start = time.time()
    for step in tqdm(range(cfg.steps), desc="stage 3", disable=not progress):
        tgt, ref = sample_pairs(train, cfg.batch_size, rng)
        loss = stage3_loss(
            talker, ae, train.frames[tgt], train.frames[ref],
            landmark_maps(train.landmarks[tgt], size), landmark_maps(train.landmarks[ref], size),
            noise, step_generator(cfg.seed, step),
        )  # fmt: skip
        apply_gradients(loss, opt, params, cfg.optim.grad_clip, sched, ema, talker)
        history.append(loss.item())
    trained = ema.shadow.eval()
    save_talker(cfg.out, trained)
    write_lineage(cfg.out, cfg.autoencoder, lineage)
    pairs = sample_pairs(val, 6, np.random.default_rng(cfg.seed + 1))
    grid, val_psnr = talker_samples(trained, ae, val, pairs, cfg.eval_steps)
    save_image(image_grid(grid, rows=4), storage.join(cfg.out, "samples_stage3.png"))
    window = max(1, min(50, len(history) // 5))
    metrics = {
        "steps": cfg.steps,
        "loss_first": float(np.mean(history[:window])),
        "loss_last": float(np.mean(history[-window:])),
        "val_target_psnr_db": val_psnr,
        "train_seconds": time.time() - start,
    }
    storage.write_text(storage.join(cfg.out, "metrics_stage3.json"), json.dumps(metrics, indent=2))
    if math.isnan(metrics["loss_last"]):
        raise RuntimeError(f"stage 3 diverged (NaN loss); lower optim.lr={cfg.optim.lr}")
    return metrics
