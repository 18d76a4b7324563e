"""Stage 1 (paper Algorithm 1): train E_sem and ε_θ jointly with L_simple (Eq. 7).

``stage1_loss`` is the per-batch step shared by this single-process trainer and the Ray Train job.
"""

from __future__ import annotations

import json
import math
import time

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from fet import storage
from fet.autoencoder import DiffusionAutoencoder
from fet.data.image_folder import FaceImageDataset
from fet.diffusion.ddim import training_scheduler
from fet.diffusion.timesteps import TimestepSampling
from fet.images import image_grid, save_image
from fet.metrics.image_quality import psnr
from fet.training.config import Stage1Config
from fet.training.ema import EMA
from fet.training.losses import diffusion_loss
from fet.training.optim import apply_gradients


def stage1_loss(
    model: DiffusionAutoencoder,
    images: torch.Tensor,
    scheduler,
    generator: torch.Generator,
    timesteps: TimestepSampling = "uniform",
) -> torch.Tensor:
    """images (B, 3, H, W) in [-1, 1] → L_simple with z_sem from the (trainable) semantic encoder."""
    with torch.no_grad():
        x_0 = model.codec.encode(images)  # (B, C, h, w), frozen codec
    z_sem = model.encoder(images)  # (B, z_dim)
    return diffusion_loss(model.denoiser, x_0, z_sem, scheduler, generator, timesteps)


def warmup_lambda(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / max(1, warmup_steps))


def step_generator(seed: int, step: int) -> torch.Generator:
    """Noise and timesteps of optimizer step ``step``: the same whatever happened before (resumable)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


@torch.no_grad()
def reconstruction_report(model: DiffusionAutoencoder, images: torch.Tensor, steps: int) -> tuple[float, torch.Tensor]:
    """PSNR (dB) of encode → invert → render on ``images``, and the reconstructions."""
    rec = model.reconstruct(images, steps).float().cpu()
    return psnr(rec, images), rec


def train_stage1(cfg: Stage1Config, progress: bool = True) -> dict:
    """Train ``cfg.steps`` optimizer steps on ``cfg.data``; write EMA weights, samples, metrics to ``cfg.out``."""
    torch.manual_seed(cfg.seed)
    mcfg = cfg.image_model
    train = FaceImageDataset(
        cfg.data.images, mcfg.image_size, cfg.data.attributes, "train", cfg.data.val_fraction, cfg.data.limit
    )
    val = FaceImageDataset(cfg.data.images, mcfg.image_size, cfg.data.attributes, "val", cfg.data.val_fraction, 64)
    model = DiffusionAutoencoder(mcfg).train()
    ema = EMA(model, cfg.optim.ema_decay)
    params = [p for n, p in model.named_parameters() if not n.startswith("codec.")]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(cfg.optim.warmup_steps))
    noise_schedule = training_scheduler(mcfg)
    loader = DataLoader(
        train,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(train) >= cfg.batch_size,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    history: list[float] = []
    step, start = 0, time.time()
    bar = tqdm(total=cfg.steps, desc="stage 1", disable=not progress)
    while step < cfg.steps:
        for images, _, _ in loader:
            loss = stage1_loss(model, images, noise_schedule, step_generator(cfg.seed, step), cfg.timesteps)
            apply_gradients(loss, opt, params, cfg.optim.grad_clip, sched, ema, model)
            history.append(loss.item())
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                bar.set_postfix(loss=f"{sum(history[-cfg.log_every :]) / cfg.log_every:.4f}")
            if step >= cfg.steps:
                break
    bar.close()
    trained = ema.shadow.eval()
    trained.save(cfg.out)
    images = torch.stack([val[i][0] for i in range(min(8, len(val)))])
    val_psnr, rec = reconstruction_report(trained, images, cfg.eval_steps)
    grid = image_grid(torch.cat([images, rec]), rows=2)
    grid_path = storage.join(cfg.out, "samples_stage1.png")
    save_image(grid, grid_path)
    window = max(1, min(50, len(history) // 5))
    metrics = {
        "steps": step,
        "loss_first": sum(history[:window]) / window,
        "loss_last": sum(history[-window:]) / window,
        "val_reconstruction_psnr_db": val_psnr,
        "train_seconds": time.time() - start,
        "samples_per_second": step * cfg.batch_size / max(1e-9, time.time() - start),
    }
    storage.write_text(storage.join(cfg.out, "metrics_stage1.json"), json.dumps(metrics, indent=2))
    if math.isnan(metrics["loss_last"]):
        raise RuntimeError(f"stage 1 diverged (NaN loss); lower optim.lr={cfg.optim.lr}")
    return metrics
