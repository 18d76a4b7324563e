"""A run that keeps its rows (``data.cache: true``) on data too large for the nodes' memory, or streams them
through a shuffle buffer larger than that memory holds, is refused before the workers read them: they would
fail only after decoding what fits, and Ray Train would restart them to read it again,
``checkpoint.max_failures`` times."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from fet.config import load_config
from fet.data.shards import ShardError, shard_files, split_rows, stored_row_bytes
from fet.training.job_config import TrainJobConfig
from fet.training.tasks import build_task
from ray_jobs import train

GiB = 2**30


def _job(shards: str, *overrides: str) -> TrainJobConfig:
    # 1024 px faces: 3 MiB each decoded
    return load_config(TrainJobConfig, "configs/train/ray/stage1_tiny.yaml",
                       [f"data.shards={shards}", "task.model.image_size=1024", *overrides])  # fmt: skip


def _nodes(*resources: dict) -> list[dict]:
    return [{"Alive": True, "Resources": r} for r in resources]


def _one_node_holds_one(held: str, memory: float, fix: str) -> str:
    """The refusal of 2 workers on one node with ``memory`` for Ray's workers, room for one share."""
    return (f"{held} for scaling.num_workers=2, but the 1 node(s) that can run a worker, with at most "
            f"{memory / GiB:.1f} GiB of memory for Ray's workers each, hold 1 such share(s); {fix}")  # fmt: skip


def test_the_workers_shares_are_laid_out_on_the_nodes_that_can_run_them(synthtalk_shards):
    job = _job(synthtalk_shards)
    task = build_task(job)
    rows = split_rows(synthtalk_shards, "images", "train")
    share = rows // 2 * 1024 * 1024 * 3  # each of 2 workers
    check = lambda *nodes, j=job: train.check_kept_memory(j, task, task.columns, _nodes(*nodes))  # noqa: E731
    check({"CPU": 2, "memory": 2 * share + 1})  # both workers on one node
    check({"CPU": 1, "memory": share + 1}, {"CPU": 1, "memory": share + 1})  # one on each
    with pytest.raises(ShardError) as refused:
        check({"CPU": 2, "memory": 1.5 * share})
    assert _one_node_holds_one(f"data.cache=true: each worker would keep its share of the {rows} training rows of "
                               f"{synthtalk_shards} decoded in memory, {share / GiB:.1f} GiB", 1.5 * share,
                               "set data.cache=false to stream the rows every epoch") == str(refused.value)  # fmt: skip
    with pytest.raises(ShardError, match="hold 0 such share"):  # the node with the memory runs no worker
        check({"CPU": 0.25, "memory": 100 * share}, {"CPU": 2, "memory": share / 2})
    dead = {"Alive": False, "Resources": {"CPU": 1, "memory": 100 * share}}
    with pytest.raises(ShardError, match="hold 1 such share"):  # room for one worker, on the one node alive
        train.check_kept_memory(job, task, task.columns, [*_nodes({"CPU": 1, "memory": share + 1}), dead])
    # streamed, each worker holds a shuffle buffer of the stored 32 px rows, not every face decoded at 1024 px
    check({"CPU": 2, "memory": 1.5 * share}, j=_job(synthtalk_shards, "data.cache=false"))
    # not checked: no node that can run a worker up yet (GPU nodes an autoscaler starts)
    check({"CPU": 16, "memory": 1}, j=_job(synthtalk_shards, "scaling.use_gpu=true", "scaling.gpus_per_worker=1"))
    check({"CPU": 2})  # a node whose memory Ray does not report
    with pytest.raises(ShardError, match="hold 1 such share"):
        check({"CPU": 16, "GPU": 8, "memory": 1.5 * share}, j=_job(synthtalk_shards, "scaling.use_gpu=true"))


def test_a_streamed_worker_holds_its_shuffle_buffer_of_rows_at_their_stored_size(synthtalk_shards):
    job = load_config(TrainJobConfig, "configs/train/ray/audio_tiny.yaml",
                      [f"data.shards={synthtalk_shards}", "data.cache=false", "data.shuffle_buffer=30",
                       "data.read_batch=2"])  # fmt: skip
    task = build_task(job)
    columns = task.train_columns(synthtalk_shards)
    tables = [pq.read_table(f, columns=columns) for f in shard_files(synthtalk_shards, "clips")]
    held = sum(t.nbytes for t in tables) / sum(t.num_rows for t in tables)  # a row as Arrow holds it
    row = stored_row_bytes(synthtalk_shards, "clips", columns)
    assert 0.98 * held < row < 1.05 * held, (row, held)  # the compressed size is about 9% less
    assert stored_row_bytes(synthtalk_shards, "clips", ["split"]) < row / 100  # the arrays are the bytes
    share = 32 * row
    check = lambda *nodes: train.check_kept_memory(job, task, columns, _nodes(*nodes))  # noqa: E731
    check({"CPU": 1, "memory": share + 1}, {"CPU": 1, "memory": share + 1})
    with pytest.raises(ShardError) as refused:
        check({"CPU": 2, "memory": 1.5 * share})
    assert _one_node_holds_one(f"data.cache=false: each worker would hold at least 32 rows of {synthtalk_shards} in "
                               f"memory (data.shuffle_buffer=30 + data.read_batch=2), {share / GiB:.1f} GiB at their "
                               "mean stored size", 1.5 * share, "lower data.shuffle_buffer") == str(refused.value)  # fmt: skip


@pytest.mark.parametrize(
    "config, settings, said",
    [  # 32768 px faces are 3 GiB each decoded, hundreds of GiB per worker
        ("stage1_tiny", ["task.model.image_size=32768"], "data.cache=true: each worker would keep its share"),
        # a billion clips in each worker's shuffle buffer
        ("audio_tiny", ["data.cache=false", "data.shuffle_buffer=1000000000"], "lower data.shuffle_buffer"),
    ],
    ids=["cached", "streamed"],
)
def test_the_training_job_refuses_to_keep_more_than_the_nodes_hold(
    local_ray, synthtalk_shards, tmp_path, capsys, config, settings, said
):
    """On this machine's Ray."""
    db = tmp_path / "mlflow.db"
    with pytest.raises(SystemExit) as done:
        train.main(["--config", f"configs/train/ray/{config}.yaml", f"data.shards={synthtalk_shards}", *settings,
                    f"storage_path={tmp_path / 'ray'}", f"out={tmp_path / 'out'}",
                    f"mlflow.tracking_uri=sqlite:///{db}", "name=too-big"])  # fmt: skip
    err = capsys.readouterr().err
    assert done.value.code == 2, err[-3000:]
    line = next(x for x in err.splitlines() if x.startswith("error: "))
    assert said in line, line
    assert "Traceback" not in err
    assert not db.exists() or not MlflowClient(f"sqlite:///{db}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{db}").search_experiments()]
    )
    assert not (tmp_path / "out").exists()
