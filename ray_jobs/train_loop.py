"""The Ray Train worker loop shared by every stage: DeepSpeed engine, EMA, checkpoints, MLflow.

Each worker builds the stage's task (``fet.training.tasks``), wraps its model with
``deepspeed.initialize`` (ZeRO stage and the rest from the DeepSpeed JSON), and trains until the
run has taken exactly ``steps`` optimizer steps. Every ``checkpoint.every`` steps all ranks save
the DeepSpeed state (weights, optimizer, LR schedule) into one Ray Train checkpoint, with rank 0
adding the EMA weights and the position in the data; a restarted worker group loads the latest one
and carries on from the next batch, so no step is repeated or lost. Rank 0 logs to MLflow and, at
the end, exports the EMA component, logs it and registers it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from fet import storage
from fet.config import from_dict
from fet.data.shards import read_rows
from fet.training.ema import EMA
from fet.training.epochs import EpochBatches
from fet.training.job_config import TrainJobConfig, deepspeed_config
from fet.training.optim import lr_lambda, step_generator
from fet.training.tasks import StageModel, TrainingTask, build_task
from fet.training.tasks.base import all_reduce
from ray_jobs.common import say
from ray_jobs.run_logger import FINAL_WAIT, RunLogger

TAG = "ds"  # DeepSpeed checkpoint tag inside each Ray Train checkpoint


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch: int = 0  # batches of ``epoch`` already trained on (per rank)
    resumed_from: list[int] = field(default_factory=list)  # steps at which the run was resumed


def _mean_over_ranks(values: list[float]) -> list[float]:
    t = all_reduce(torch.tensor(values, dtype=torch.float64))
    return (t / (dist.get_world_size() if dist.is_initialized() else 1)).tolist()


def _min_over_ranks(value: int) -> int:
    return int(all_reduce(torch.tensor([value], dtype=torch.int64), dist.ReduceOp.MIN).item())


def _gathered(engine, module: torch.nn.Module):
    """Full parameters of ``module`` on every rank under ZeRO-3 (no-op for ZeRO 0-2)."""
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


def _rows_source(job: TrainJobConfig):
    shard = ray.train.get_dataset_shard("train")

    def rows(epoch: int):
        shuffle = {} if job.data.cache else {"local_shuffle_buffer_size": job.data.shuffle_buffer,
                                             "local_shuffle_seed": job.seed * 1000 + epoch}  # fmt: skip
        for table in shard.iter_batches(batch_size=job.data.read_batch, batch_format="pyarrow", **shuffle):
            yield table.to_pylist()

    return rows


def _val_rows(job: TrainJobConfig, task: TrainingTask) -> list[dict[str, Any]]:
    """A few held-out rows (val split, else test) for samples and metrics, read on rank 0 only."""
    for split in ("val", "test"):
        rows = []
        for row in read_rows(job.data.shards, task.kind, split, columns=task.columns):
            rows.append(row)
            if len(rows) >= job.data.val_items:
                return rows
        if rows:
            return rows
    return []


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype | None):
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        out[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    return out


def _save(engine, ema: EMA, state: TrainState, rank: int, metrics: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as d:
        engine.save_checkpoint(d, tag=TAG, client_state={"fet_state": dataclasses.asdict(state)})
        if rank == 0:
            save_file({k: v.detach().contiguous().clone() for k, v in ema.state_dict().items()},
                      str(Path(d) / "ema.safetensors"))  # fmt: skip
            (Path(d) / "state.json").write_text(json.dumps(dataclasses.asdict(state)))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _restore(engine, ema: EMA) -> TrainState:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as d:
        _, client = engine.load_checkpoint(d, tag=TAG)
        ema.load_state_dict(load_file(str(Path(d) / "ema.safetensors")))
    state = TrainState(**client["fet_state"])
    state.resumed_from.append(state.step)
    return state


def _skip_cpu_shm_kernel() -> None:
    """On CPU DeepSpeed JIT-compiles a shared-memory all-reduce kernel when it sets up communication: 40-50 s on
    2 cores, again whenever the virtual environment moves. Only its inference all-reduce calls that kernel;
    training reduces through torch.distributed (gloo), so the build is skipped."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def train_loop(config: dict[str, Any]) -> dict[str, str] | None:
    """One worker's training → None, or {"diverged": why} when the loss stopped being finite (rank 0's return
    value reaches the driver as the result's ``return_value``)."""
    import deepspeed

    job = from_dict(TrainJobConfig, config["job"], where="job")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if job.scaling.use_gpu else torch.device("cpu")
    dtype = torch.bfloat16 if job.precision == "bf16" else None
    logger = RunLogger(config["tracking_uri"], config["run_id"]) if rank == 0 else None

    task = build_task(job)
    task.to(device, dtype)
    torch.manual_seed(job.seed)  # identical initial weights on every rank
    model: StageModel = task.build().to(device)
    batches = EpochBatches(task, _rows_source(job), job.batch_size, job.seed, rank, job.data.cache)
    batches.prepare(model)
    if job.data.cache:
        batches.limit = _min_over_ranks(batches.batches_per_epoch())
        if batches.limit < 1:
            raise ValueError(f"{job.data.shards}: a worker holds fewer than batch_size={job.batch_size} "
                             f"training examples; use fewer workers or a smaller batch_size")  # fmt: skip

    ema = EMA(model.exported, job.optim.ema_decay)
    optimizer = torch.optim.AdamW(model.param_groups(job.optim.lr), weight_decay=job.optim.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(job.optim, job.steps))
    if device.type == "cpu":
        _skip_cpu_shm_kernel()
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=schedule, config=deepspeed_config(job)
    )
    accumulation = engine.gradient_accumulation_steps()
    state = _restore(engine, ema)
    ema.updates = state.step  # the EMA warm-up continues where it stopped
    if state.resumed_from and logger:
        logger.tag("fet.resumed_from", ",".join(map(str, state.resumed_from)))
        say(f"[{job.name}] resumed at step {state.step}/{job.steps} (epoch {state.epoch}, batch {state.batch})")

    val_rows = _val_rows(job, task) if rank == 0 else []
    window: list[float] = []
    t0, steps_at_t0 = time.time(), state.step
    batch_iter = batches.epoch(state.epoch, state.batch)
    engine.train()
    while state.step < job.steps:
        parts_sum: dict[str, float] = {}
        loss_sum = 0.0
        for _ in range(accumulation):
            batch = next(batch_iter, None)
            while batch is None:  # end of the epoch: the next one starts at its first batch
                if state.batch == 0:
                    raise ValueError(f"{job.data.shards}: this worker's share of the data gave no batch")
                state.epoch, state.batch = state.epoch + 1, 0
                batch_iter = batches.epoch(state.epoch)
                batch = next(batch_iter, None)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype is not None):
                loss, parts = engine(_to_device(batch, device, dtype), step_generator(job.seed, state.step, rank))
            engine.backward(loss)
            engine.step()
            state.batch += 1
            loss_sum += loss.item() / accumulation
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v / accumulation
        with _gathered(engine, model.exported):
            ema.update(model.exported)
        state.step += 1

        names = ["loss", *sorted(parts_sum)]
        values = _mean_over_ranks([loss_sum, *[parts_sum[k] for k in names[1:]]])
        if not math.isfinite(values[0]):  # a mean over the ranks: every rank stops here, at the same step
            return _diverged(job, state.step, values[0], logger)
        window.append(values[0])
        if logger:
            rate = (state.step - steps_at_t0) * job.batch_size * world * accumulation / max(1e-9, time.time() - t0)
            logger.metrics({**dict(zip(names, values)), "lr": schedule.get_last_lr()[0], "samples_per_second": rate},
                           state.step)  # fmt: skip
            if state.step % job.mlflow.log_every == 0 or state.step == job.steps:
                logger.flush()
                eta = (job.steps - state.step) * (time.time() - t0) / max(1, state.step - steps_at_t0)
                say(f"[{job.name}] step {state.step}/{job.steps} loss {sum(window) / len(window):.4f} "
                    f"{rate:.1f} samples/s eta {eta:.0f}s")  # fmt: skip
                window = []
            every = job.mlflow.sample_every
            if every and state.step % every == 0 and state.step < job.steps and val_rows:
                report = task.report(ema.shadow, val_rows)
                logger.metrics(report.metrics, state.step, report=True)
                for name, png in report.images.items():
                    logger.image(png, name, state.step)
        if state.step % job.checkpoint.every == 0 and state.step < job.steps:
            _save(engine, ema, state, rank, {"step": state.step, "loss": values[0]})

    # the last checkpoint carries the final metrics (what the driver's result shows)
    final = {"step": state.step, "resumed_from": ",".join(map(str, state.resumed_from))}
    if rank == 0:
        final |= _finish(job, task, ema, logger, val_rows)
    _save(engine, ema, state, rank, final)


def _diverged(job: TrainJobConfig, step: int, loss: float, logger: RunLogger | None) -> dict[str, str]:
    """The loss is NaN or infinite. Resumed from its last checkpoint with the same settings, the run would
    meet the same batches with the same weights and noise (the data position and the generators are
    restored) and diverge again, so the workers end without raising: a raise would have Ray Train restart
    them ``checkpoint.max_failures`` times, each repeating the steps since that checkpoint."""
    why = (f"[{job.name}] training diverged: the loss is {loss} at step {step}. Lower optim.lr ({job.optim.lr}) "
           f"or lengthen optim.warmup_steps ({job.optim.warmup_steps}), and submit it under another name")  # fmt: skip
    if logger:
        logger.tag("fet.diverged", why)
        logger.close(FINAL_WAIT)
    return {"diverged": why}


def _finish(job: TrainJobConfig, task: TrainingTask, ema: EMA, logger: RunLogger, val_rows) -> dict[str, Any]:
    """Rank 0 after the last step: held-out report, export of the EMA component, MLflow registry."""
    trained = ema.shadow.eval()
    report = task.report(trained, val_rows) if val_rows else None
    metrics = dict(report.metrics) if report else {}
    with tempfile.TemporaryDirectory() as d:
        task.export(trained, d)
        for name, png in (report.images if report else {}).items():
            Path(d, name).write_bytes(png)
        for f in sorted(Path(d).rglob("*")):  # the component is out before MLflow is asked for anything
            if f.is_file():
                storage.write_bytes(storage.join(job.out, f.relative_to(d).as_posix()), f.read_bytes())
        logger.metrics(metrics, job.steps, report=True)
        for name, png in (report.images if report else {}).items():
            logger.image(png, name)
        version = logger.component(d, job.model_name if job.mlflow.register else None, FINAL_WAIT)
    info = {"name": job.name, "stage": job.stage, "steps": job.steps, "mlflow_run_id": logger.run_id,
            "registered_model": job.model_name if version else None, "model_version": version,
            "mlflow_unsent": logger.unsent, "metrics": metrics}  # fmt: skip
    storage.write_text(storage.join(job.out, "training_run.json"), json.dumps(info, indent=2))
    return {**metrics, "model_version": version or ""}
