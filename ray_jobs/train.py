"""Train one stage on Ray Train with DeepSpeed, tracked in MLflow.

    python -m ray_jobs.train --config configs/train/ray/stage1_tiny.yaml [key=value ...]
    ray job submit --working-dir . -- python -m ray_jobs.train --config configs/train/ray/stage1_tiny.yaml

``python -m ray_jobs.train_stage1`` (``train_stage2``, ``train_audio``, ``train_stage3``) is the same
with the stage fixed. The run is named by ``name``: submitting the same name again resumes it from
its latest checkpoint, or, when it has finished, prints its result without training again.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from fet import storage
from fet.config import ConfigError, flatten, to_dict
from fet.data.shards import ShardError, one_listing, read_rows, split_rows, stored_row_bytes
from fet.training.job_config import STAGES, TrainJobConfig
from fet.training.tasks import TrainingTask, build_task
from ray_jobs import tracking
from ray_jobs.common import check_shipped_paths, fail, init_ray, load_job_config, parse_args
from ray_jobs.driver_lease import RunHeldError, hold
from ray_jobs.run_settings import check_run_settings, has_checkpoints
from ray_jobs.shard_reader import read_split

COMPLETE = "fet_complete.json"
MLFLOW_RUN = "fet_mlflow_run.json"  # the training run's MLflow run id, beside its checkpoints

OVERRIDES_EXAMPLE = "steps=2000 optim.lr=1e-4 scaling.num_workers=8"  # shown in --help


class DivergedError(RuntimeError):
    """The loss stopped being finite; the run ended without a restart (it would diverge again)."""


def _local_paths_absolute(value: Any) -> Any:
    """Relative local paths that exist → absolute (workers do not share the driver's working dir)."""
    if isinstance(value, dict):
        return {k: _local_paths_absolute(v) for k, v in value.items()}
    if isinstance(value, str) and "://" not in value and "/" in value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def resolve(job: TrainJobConfig) -> TrainJobConfig:
    job.storage_path = storage.absolute(job.storage_path)
    job.out = storage.absolute(job.out)
    job.data.shards = storage.absolute(job.data.shards)
    job.task = _local_paths_absolute(job.task)
    job.mlflow.tracking_uri = tracking.local_tracking_uri(job.mlflow.tracking_uri, Path.cwd())
    return job


def run_dir(job: TrainJobConfig) -> str:
    """Where the run keeps its checkpoints, settings and records: ``storage_path/name``."""
    return storage.join(job.storage_path, job.name)


def marker(job: TrainJobConfig) -> str:
    return storage.join(run_dir(job), COMPLETE)


def check(job: TrainJobConfig, data: bool = True) -> TrainingTask:
    """Fail fast in the driver on what the workers would otherwise fail on later → the stage's task
    (its section validated, its frozen inputs loaded, and with ``data`` its shards there)."""
    job.validate()
    task = build_task(job)
    if data:
        check_batches(job, task)  # raises ShardError when there are no shards, or too few rows, to train on
        task.check_rows(job.data.shards)
    return task


def check_batches(job: TrainJobConfig, task: TrainingTask) -> None:
    """Raises ShardError when a worker's share of the training rows makes less than one batch. Ray Data
    gives every worker the same number of rows (``streaming_split(equal=True)``), the remainder to none."""
    rows, workers = split_rows(job.data.shards, task.kind, "train"), job.scaling.num_workers
    share = rows // workers
    each = share * task.examples_per_row
    if each >= job.batch_size:
        return
    made = "" if task.examples_per_row == 1 else f" of {task.examples_per_row} examples each"
    raise ShardError(
        f"{job.data.shards}: {rows} training rows of {task.kind} (split 'train') are {share} row"
        f"{'' if share == 1 else 's'}{made} per worker for scaling.num_workers={workers}: {each} examples, "
        f"fewer than batch_size={job.batch_size}; use fewer workers, a smaller batch_size, or more training data"
    )


def check_kept_memory(job: TrainJobConfig, task: TrainingTask, columns: list[str], nodes: list[dict[str, Any]]) -> None:
    """Raises ShardError when no layout of the workers on the nodes that can run one (``nodes``: ``ray.nodes()``)
    keeps what each worker holds of the training rows within the node's memory for Ray's workers: with
    ``data.cache`` its share of the rows decoded, streamed at least the rows of its shuffle buffer and one
    read batch as the shards store them in ``columns`` (those the rows are read with). The run would fail
    only after reading them, and again after each restart. Not checked while no such node is up (an
    autoscaling cluster starts its GPU nodes for the job)."""
    s, data, gb = job.scaling, job.data, 2**30
    asked = {"CPU": s.cpus_per_worker, "GPU": s.gpus_per_worker if s.use_gpu else 0}
    need = {k: v for k, v in asked.items() if v > 0}
    alive = [n["Resources"] for n in nodes if n.get("Alive")]
    hosts = [r for r in alive if all(r.get(k, 0) >= v for k, v in need.items())]
    if not hosts or any("memory" not in h for h in hosts):  # none up yet, or a memory Ray does not know
        return
    if data.cache:
        rows = list(read_rows(data.shards, task.kind, "train", task.kept_columns, concurrent=True))
        share = task.kept_bytes(rows[: len(rows) // s.num_workers * s.num_workers]) / s.num_workers
        held = (f"data.cache=true: each worker would keep its share of the {len(rows)} training rows of "
                f"{data.shards} decoded in memory, {share / gb:.1f} GiB")  # fmt: skip
        fix = "set data.cache=false to stream the rows every epoch"
    else:
        n = data.shuffle_buffer + data.read_batch
        share = n * stored_row_bytes(data.shards, task.kind, columns)
        held = (f"data.cache=false: each worker would hold at least {n} rows of {data.shards} in memory "
                f"(data.shuffle_buffer={data.shuffle_buffer} + data.read_batch={data.read_batch}), "
                f"{share / gb:.1f} GiB at their mean stored size")  # fmt: skip
        fix = "lower data.shuffle_buffer"
    if share == 0:
        return
    slots = [min([int(h[k] // v) for k, v in need.items()] or [s.num_workers]) for h in hosts]  # workers a node runs
    fit = sum(min(k, int(h["memory"] // share)) for h, k in zip(hosts, slots))
    if fit >= s.num_workers:
        return
    raise ShardError(
        f"{held} for scaling.num_workers={s.num_workers}, but the {len(hosts)} node(s) that can run a worker, "
        f"with at most {max(h['memory'] for h in hosts) / gb:.1f} GiB of memory for Ray's workers each, hold "
        f"{fit} such share(s); {fix}"
    )


def dataset(job: TrainJobConfig, kind: str, columns: list[str]):
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # the trainer prints its own progress
    return read_split(job.data.shards, kind, columns, "train")


def mlflow_run(job: TrainJobConfig) -> str:
    """The id of the training run's MLflow run: the one recorded beside its checkpoints (``MLFLOW_RUN``),
    reopened, when this tracking server has it; else a new one, recorded. A new training run under a
    name used before (another ``storage_path``, or its folder deleted) gets a run of its own: in the
    old one its steps would be logged over the old steps, under the old params."""
    record = storage.join(run_dir(job), MLFLOW_RUN)
    uri, experiment = job.mlflow.tracking_uri, job.mlflow.experiment
    recorded = storage.exists(record)
    if recorded:
        known = json.loads(storage.read_text(record))["run_id"]
    elif has_checkpoints(run_dir(job)):  # checkpointed before runs were recorded
        known = tracking.find_run(uri, experiment, job.name)
    else:
        known = None
    run_id = known if known and tracking.reopen(uri, known) else None
    if run_id is None:
        run_id = tracking.new_run(uri, experiment, job.name, to_dict(job), {"fet.stage": job.stage})
    if run_id != known or not recorded:
        storage.write_text(record, json.dumps({"run_id": run_id, "experiment": experiment}))
    return run_id


def run(job: TrainJobConfig, task: TrainingTask | None = None) -> dict[str, Any]:
    """Train (or resume) ``job``; returns its final metrics. Needs Ray initialised. ``task``: what
    ``check`` returned for this job, when the caller checked it already. Raises ``RunHeldError`` when
    another driver is training the run (``driver_lease``); a finished run is reported without its lease."""
    if storage.exists(marker(resolve(job))):
        return _finished(job)
    with hold(run_dir(job)), one_listing():  # the checks and the dataset see the same shards, listed once
        if storage.exists(marker(job)):  # finished meanwhile, by the driver that held it
            return _finished(job)
        return _train(job, task)


def _finished(job: TrainJobConfig) -> dict[str, Any]:
    done = marker(job)
    result = json.loads(storage.read_text(done))
    print(f"[{job.name}] already complete ({result['steps']} steps); not training again. Result: {done}")
    diffs = check_run_settings(job, finished=True)
    if result.get("data", job.data.shards) != job.data.shards:  # paths are not among the settings compared
        diffs.append(f"data.shards {result['data']} → {job.data.shards}")
    for diff in diffs:
        print(f"[{job.name}]   it was trained with {diff.replace(' → ', ', not ')} as this submission asks")
    return result | {"already_complete": True}


def _train(job: TrainJobConfig, task: TrainingTask | None) -> dict[str, Any]:
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray_jobs.train_loop import train_loop

    task = task or check(job)
    check_run_settings(job, finished=False)  # refuses to resume it with other settings
    columns = task.train_columns(job.data.shards)
    check_kept_memory(job, task, columns, ray.nodes())
    # before the MLflow run, which a failure here would strand
    train_data = dataset(job, task.kind, columns)
    run_id = mlflow_run(job)
    print(f"[{job.name}] MLflow run {run_id} at {tracking.redact(job.mlflow.tracking_uri)}")
    resources = {"CPU": job.scaling.cpus_per_worker}
    if job.scaling.use_gpu:
        resources["GPU"] = job.scaling.gpus_per_worker
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"job": to_dict(job), "run_id": run_id, "tracking_uri": job.mlflow.tracking_uri},
        scaling_config=ScalingConfig(
            num_workers=job.scaling.num_workers, use_gpu=job.scaling.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=job.name,
            storage_path=job.storage_path,
            failure_config=FailureConfig(max_failures=job.checkpoint.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=job.checkpoint.keep),
        ),
        datasets={"train": train_data},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    start = time.time()
    try:
        result = trainer.fit()
    except BaseException as e:  # SystemExit: stopped (``ray job stop`` sends SIGTERM, which ray.init makes an exit)
        tracking.finish(job.mlflow.tracking_uri, run_id, "FAILED" if isinstance(e, Exception) else "KILLED")
        raise
    if isinstance(result.return_value, dict) and "diverged" in result.return_value:  # train_loop._diverged
        tracking.finish(job.mlflow.tracking_uri, run_id, "FAILED")
        raise DivergedError(result.return_value["diverged"])
    metrics = {k: v for k, v in result.metrics.items() if not k.startswith("_")}
    checkpoint = result.checkpoint.path if result.checkpoint else ""
    if checkpoint and "://" in job.storage_path:
        checkpoint = job.storage_path.split("://")[0] + "://" + checkpoint.lstrip("/")
    summary = {"name": job.name, "stage": job.stage, "steps": metrics.get("step"), "data": job.data.shards,
               "mlflow_run_id": run_id, "out": job.out, "checkpoint": checkpoint,
               "wall_seconds": time.time() - start, "metrics": metrics}  # fmt: skip
    if summary["steps"] != job.steps:
        raise RuntimeError(f"[{job.name}] ended at step {summary['steps']}, expected {job.steps}")
    storage.write_text(marker(job), json.dumps(summary, indent=2, default=str))
    tracking.finish(job.mlflow.tracking_uri, run_id, "FINISHED")
    return summary


def main(argv: list[str] | None = None, stage: str | None = None) -> None:
    args = parse_args(f"ray_jobs.train{'_' + stage if stage else ''}", __doc__, OVERRIDES_EXAMPLE, argv)
    job = load_job_config(TrainJobConfig, args)
    if stage is not None:
        if job.stage != stage and args.config and "stage" in _yaml_keys(args.config):
            fail(ConfigError(f"{args.config}: stage={job.stage!r}, but this entry point trains {stage!r}"))
        job.stage = stage
    with contextlib.ExitStack() as held:
        held.enter_context(one_listing())  # the checks here and in ``run`` list the shards once
        try:
            paths = {f"task.{k}": v for k, v in flatten(job.task).items() if isinstance(v, str) and "/" in v}
            inputs = {"data.shards": job.data.shards, **paths}  # task: stage 1's model, audio encoder or codec
            check_shipped_paths({"out": job.out, "storage_path": job.storage_path,
                                 "mlflow.tracking_uri": job.mlflow.tracking_uri}, inputs)  # fmt: skip
            finished = storage.exists(marker(resolve(job)))  # then it is not trained again: its shards may be gone
            if not finished:  # one driver at a time: taken before Ray starts, held until the run ends
                held.enter_context(hold(run_dir(job)))
            task = check(job, data=not finished)
            check_run_settings(job, finished=finished)  # before Ray starts
            tracking.check_reachable(job.mlflow.tracking_uri)
        except (ConfigError, ShardError, RunHeldError, ValueError, OSError) as e:
            fail(e)
        init_ray(args.address)
        try:
            summary = run(job, task)
        except (DivergedError, ShardError) as e:
            fail(e)
    print(json.dumps(summary, indent=2, default=str))


def _yaml_keys(path: str) -> set[str]:
    from fet.config import read_yaml

    return set(read_yaml(path))


def stage_main(stage: str) -> None:
    if stage not in STAGES:
        raise SystemExit(f"unknown stage {stage!r}")
    main(sys.argv[1:], stage)


if __name__ == "__main__":
    main()
