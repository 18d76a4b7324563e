"""The demo's training waves: every stage trained once, after what it loads, and a wave of two jobs fits
on the demo's Ray head with CPU left for the read tasks that feed its workers; likewise the evaluation
job beside Serve."""

from __future__ import annotations

from fet.config import load_config
from fet.evaluation.config import EvalConfig
from fet.training.job_config import TrainJobConfig
from ray_jobs.demo import EVAL_WORKER_CPUS, HEAD_CPUS, PAIRED_WORKER_CPUS, STEPS, WAVES, serve_config
from ray_jobs.shard_reader import READ_CPUS
from serve.options import AppOptions


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


def test_the_evaluation_job_fits_beside_serve_at_its_most_replicas(tmp_path):
    options = AppOptions(**serve_config(tmp_path, 8000)["applications"][0]["args"])
    deployments = [options.ingress, options.encoder, options.animator, options.renderer]
    serve_cpus = sum(d.max_replicas * d.num_cpus for d in deployments)
    workers = load_config(EvalConfig, "configs/eval/synthtalk.yaml", []).ray.num_workers
    assert serve_cpus + workers * EVAL_WORKER_CPUS + READ_CPUS <= HEAD_CPUS + 1e-9, serve_cpus
