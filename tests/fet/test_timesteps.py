"""How L_simple draws its training timesteps: uniformly (paper Eq. 7) or towards high noise, chosen by
the stage-1 config and honoured by the loss the distributed task trains with."""

from __future__ import annotations

import pytest
import torch

from fet.config import ConfigError, load_config
from fet.data.shards import read_rows
from fet.diffusion.timesteps import sample_timesteps
from fet.training.config import Stage1Config
from fet.training.job_config import TrainJobConfig
from fet.training.optim import step_generator
from fet.training.tasks import build_task

T = 1000


def test_uniform_draws_every_timestep_equally_often():
    t = sample_timesteps(100_000, T, "uniform", torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and int(t.min()) == 0 and int(t.max()) == T - 1
    counts = torch.bincount(t // 100, minlength=10).float() / len(t)  # ten bands of 100 timesteps
    assert torch.allclose(counts, torch.full((10,), 0.1), atol=0.01), counts


def test_high_noise_draws_timesteps_with_a_density_growing_linearly_in_t():
    t = sample_timesteps(100_000, T, "high_noise", torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) == T - 1
    counts = torch.bincount(t // 100, minlength=10).float() / len(t)
    expected = torch.tensor([(2 * k + 1) / 100 for k in range(10)])  # ∫ 2t/T² over each band
    assert torch.allclose(counts, expected, atol=0.01), counts
    assert abs(t.float().mean().item() - 2 * T / 3) < 5


def test_timesteps_are_a_function_of_the_generator_alone():
    for kind in ("uniform", "high_noise"):
        a = sample_timesteps(16, T, kind, torch.Generator().manual_seed(7))
        b = sample_timesteps(16, T, kind, torch.Generator().manual_seed(7))
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="'sideways'.*uniform.*high_noise"):
        sample_timesteps(4, T, "sideways")


def drawn_timesteps(shards: str, *overrides: str) -> torch.Tensor:
    """The timesteps the stage-1 task's denoiser sees over 8 training batches of 8 faces."""
    cfg = load_config(TrainJobConfig, "configs/train/ray/stage1_tiny.yaml", [f"data.shards={shards}", *overrides])
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build()
    rows = list(read_rows(shards, "images", "train", task.columns))[:8]
    batch = task.collate(task.examples(rows), None)
    seen: list[torch.Tensor] = []
    model.autoencoder.denoiser.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    with torch.no_grad():
        for step in range(8):
            model(batch, step_generator(0, step, 0))
    return torch.cat(seen)


def test_the_stage1_task_trains_with_the_configured_sampling(synthtalk_shards):
    uniform = drawn_timesteps(synthtalk_shards, "task.timesteps=uniform")
    high = drawn_timesteps(synthtalk_shards, "task.timesteps=high_noise")
    assert len(uniform) == len(high) == 64
    assert (uniform >= T // 2).float().mean() < 0.65 and (high >= T // 2).float().mean() > 0.65
    with pytest.raises(ConfigError, match="task.timesteps"):
        drawn_timesteps(synthtalk_shards, "task.timesteps=sideways")


def test_the_single_process_config_takes_the_same_choice():
    assert load_config(Stage1Config, "configs/train/stage1_tiny.yaml", []).timesteps == "uniform"
    assert (
        load_config(Stage1Config, "configs/train/stage1_tiny.yaml", ["timesteps=high_noise"]).timesteps == "high_noise"
    )
    with pytest.raises(ConfigError, match="timesteps"):
        load_config(Stage1Config, "configs/train/stage1_tiny.yaml", ["timesteps=sideways"])
