"""The jobs' shard reads run on a head whose CPUs are almost all held, as on a 2-CPU head that also
serves: Serve's replicas hold one CPU, the job's own actors most of the other."""

from __future__ import annotations

import concurrent.futures

import pytest

from fet.data.shards import read_rows
from ray_jobs.shard_reader import read_split

pytestmark = pytest.mark.timeout(300)


def test_a_split_is_read_while_the_actors_hold_all_but_a_tenth_of_a_cpu(local_ray, synthtalk_shards):
    ray = local_ray
    assert ray.cluster_resources()["CPU"] == 2

    @ray.remote
    class Holder:  # stands for Serve's replicas, then for the training workers or the evaluation actor
        def ready(self) -> bool:
            return True

    serve_like = Holder.options(num_cpus=1.0).remote()
    ray.get(serve_like.ready.remote())
    ds = read_split(synthtalk_shards, "clips", ["clip_id", "split"], "test")  # built in the driver, as the jobs do
    workers_like = Holder.options(num_cpus=0.9).remote()
    ray.get(workers_like.ready.remote())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        rows = pool.submit(ds.take_all).result(timeout=120)  # Ray Data's default reader never starts here
    expected = sorted(r["clip_id"] for r in read_rows(synthtalk_shards, "clips", "test", ["clip_id", "split"]))
    assert sorted(r["clip_id"] for r in rows) == expected and len(expected) == 2
    for holder in (serve_like, workers_like):
        ray.kill(holder)


def test_the_columns_must_name_the_split():
    with pytest.raises(ValueError, match="must include 'split'"):
        read_split("shards", "clips", ["clip_id"], "train")
