"""Speed of one stage-3 training step (paper Algorithm 3) as the Ray Train job runs it: samples/s and MFU.

    python benchmarks/stage3_step_speed.py --device cuda --batch-size 4          # paper preset, 512 px, bf16
    python benchmarks/stage3_step_speed.py --preset tiny --device cpu --steps 3  # a quick look on a CPU

The model is built by ``Stage3Task.build`` from ``configs/train/ray/stage3_<preset>.yaml`` (its PoseGuider,
optimizer groups and DeepSpeed JSON, here on one process: ZeRO-2, bf16 on a GPU), around a stage-1
autoencoder of the preset with random weights; the paper preset's SD-VAE is a random ``AutoencoderKL``
with the SD-VAE layout unless ``--codec-path`` names one (the same shapes and cost). A batch holds random
target latents, reference z_sem and landmark maps of the preset's size (values do not change the cost). One
step is what ``ray_jobs/train_loop.py`` does per batch: the talker denoiser + PoseGuider forward and
backward under bf16 autocast, and the optimizer step with gradient clipping. The frozen E_sem and codec
encode each training frame once, when its clip is decoded (``Stage3Task.encode``); ``--frozen-in-step``
times the step with their forward inside it instead, on target and reference frames.

FLOPs per step are counted once by ``torch.utils.flop_counter`` (convolutions, matrix products and
attention, forward and backward). MFU is achieved FLOP/s over the GPU's dense bf16 peak from its data
sheet (``--peak-tflops``; H100/H200 SXM 989); the same FLOP/s over an 8192³ bf16 matrix product timed
on the same GPU is printed beside it. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sd_vae import random_sd_vae
from fet.autoencoder import DiffusionAutoencoder
from fet.config import load_config
from fet.models.presets import preset
from fet.training.job_config import TrainJobConfig, deepspeed_config
from fet.training.optim import step_generator
from fet.training.tasks.stage3 import Stage3Task

CONFIGS = {"paper": "configs/train/ray/stage3_paper.yaml", "tiny": "configs/train/ray/stage3_tiny.yaml"}
DATASHEET_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense bf16 tensor-core peak (SXM)


def random_batch(cfg, batch: int, frozen_in_step: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """What ``Stage3Task.collate`` yields (or, ``frozen_in_step``, frames for the frozen encoders), with random
    values (the cost of a step does not depend on them)."""
    g, size = torch.Generator().manual_seed(seed), cfg.image_size
    maps = {"target_map": torch.rand(batch, 3, size, size, generator=g),
            "reference_map": torch.rand(batch, 3, size, size, generator=g)}  # fmt: skip
    if frozen_in_step:
        return {"target": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
                "reference": torch.rand(batch, 3, size, size, generator=g) * 2 - 1, **maps}  # fmt: skip
    latent = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    return {"x_0": torch.randn(batch, *latent, generator=g), "z_sem": torch.randn(batch, cfg.z_dim, generator=g),
            **maps}  # fmt: skip


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def count_flops(model, batch: dict[str, torch.Tensor], device: torch.device, dtype) -> tuple[int, int]:
    """(FLOPs of one forward + backward, FLOPs of the frozen E_sem + codec forward within it)."""
    ae, frozen = model.frozen[0], FlopCounterMode(display=False)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype is not None):
        if "x_0" not in batch:  # the frozen encoders run inside the step
            with frozen, torch.no_grad():
                ae.encoder(batch["reference"])
                ae.codec.encode(batch["target"])
        with FlopCounterMode(display=False) as total:
            loss, _ = model(batch, step_generator(0, 0, 0))
            loss.backward()
    model.zero_grad(set_to_none=True)
    return total.get_total_flops(), frozen.get_total_flops()


def init_single_process(backend: str) -> None:
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517", "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1"}.items():  # fmt: skip
        os.environ.setdefault(key, value)
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper", choices=["tiny", "paper"])
    ap.add_argument("--size", type=int, default=None, help="image size (default: the preset's)")
    ap.add_argument("--batch-size", type=int, default=None, help="per GPU (default: the config's)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps after 3 warm-up steps")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--codec-path", default=None, help="a diffusers AutoencoderKL directory (SD-VAE)")
    ap.add_argument("--profile", action="store_true", help="also print the torch profiler's top ops of 3 steps")
    ap.add_argument("--frozen-in-step", action="store_true",
                    help="run the frozen E_sem and codec in every step, on frames (not once per frame)")  # fmt: skip
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: by GPU name)")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"

    with tempfile.TemporaryDirectory() as d:
        overrides = {"image_size": args.size} if args.size else {}
        if args.preset == "paper":
            overrides["codec_path"] = args.codec_path or random_sd_vae(Path(d) / "vae")
        cfg = preset(args.preset, **overrides)
        torch.manual_seed(0)
        DiffusionAutoencoder(cfg).save(str(Path(d) / "stage1"))
        job = load_config(TrainJobConfig, CONFIGS[args.preset], [
            f"task.autoencoder={Path(d) / 'stage1'}", "scaling.num_workers=1", f"scaling.use_gpu={str(gpu).lower()}",
            f"precision={'bf16' if gpu else 'fp32'}",
            *([f"batch_size={args.batch_size}"] if args.batch_size else [])])  # fmt: skip
        dtype = torch.bfloat16 if job.precision == "bf16" else None
        task = Stage3Task(job)
        task.to(device, dtype)
        model = task.build().to(device)
    batch = {k: v.to(device, dtype or v.dtype)
             for k, v in random_batch(cfg, job.batch_size, args.frozen_in_step).items()}  # fmt: skip
    flops, frozen_flops = count_flops(model, batch, device, dtype)

    init_single_process("nccl" if gpu else "gloo")
    import deepspeed

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(model.param_groups(job.optim.lr), weight_decay=job.optim.weight_decay)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(job))
    engine.train()

    def step(i: int) -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype is not None):
            loss, _ = engine(batch, step_generator(job.seed, i, 0))
        engine.backward(loss)
        engine.step()
        return loss.item()

    for i in range(3):
        step(i)
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = [step(3 + i) for i in range(args.steps)]
    if gpu:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    achieved = flops / seconds / 1e12
    result = {
        "preset": args.preset, "image_size": cfg.image_size, "latent": [cfg.latent_channels, cfg.latent_size],
        "batch_size": job.batch_size, "precision": job.precision, "zero_stage": engine.zero_optimization_stage(),
        "frozen_in_step": args.frozen_in_step,
        "device": torch.cuda.get_device_name(device) if gpu else "cpu", "trainable_params_m": trainable / 1e6,
        "seconds_per_step": round(seconds, 4), "samples_per_second": round(job.batch_size / seconds, 2),
        "gflops_per_sample": round(flops / job.batch_size / 1e9, 1),
        "frozen_share_of_flops": round(frozen_flops / flops, 3), "achieved_tflops": round(achieved, 3),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
    }  # fmt: skip
    if gpu:
        name = result["device"]
        peak = args.peak_tflops or next((v for k, v in DATASHEET_TFLOPS.items() if k in name), None)
        matmul = matmul_tflops(device)
        result |= {
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            "datasheet_peak_tflops": peak, "mfu": round(achieved / peak, 4) if peak else None,
            "matmul_8192_tflops": round(matmul, 1), "share_of_matmul_peak": round(achieved / matmul, 4),
        }  # fmt: skip
    print(json.dumps(result))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
        with profile(activities=activities) as prof:
            for i in range(3):
                step(100 + i)
        key = "self_cuda_time_total" if gpu else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
        print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
