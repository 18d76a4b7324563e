"""The demo's training waves: every stage trained once, after what it loads, and a wave of two jobs fits
on the demo's Ray head with CPU left for the read tasks that feed its workers."""

from __future__ import annotations

from fet.config import load_config
from fet.training.job_config import TrainJobConfig
from ray_jobs.demo import HEAD_CPUS, PAIRED_WORKER_CPUS, STEPS, WAVES
from ray_jobs.shard_reader import READ_CPUS


def job(stage: str) -> TrainJobConfig:
    return load_config(TrainJobConfig, f"configs/train/ray/{stage}_tiny.yaml", [])


def test_every_stage_is_trained_once_after_the_stage_it_loads():
    order = [s for wave in WAVES for s in wave]
    assert sorted(order) == sorted(s for s, _ in STEPS)
    wave_of = {s: i for i, wave in enumerate(WAVES) for s in wave}
    for stage in order:
        if "autoencoder" in job(stage).task:  # stages 2 and 3 start from stage 1's encoder
            assert wave_of[stage] > wave_of["stage1"], stage


def test_a_wave_of_jobs_leaves_cpu_to_the_read_tasks():
    for wave in WAVES:
        if len(wave) > 1:
            held = sum(job(s).scaling.num_workers * PAIRED_WORKER_CPUS for s in wave)
            assert held + len(wave) * READ_CPUS <= HEAD_CPUS + 1e-9, (wave, held)
