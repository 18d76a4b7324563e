"""Ray Data over the published Parquet shards of one split, with every task of the read asking for a
small CPU share.

Ray Data's default Parquet reader (DataSource V2) starts with a file-listing task that asks for a whole
CPU whatever ``num_cpus`` the read is given. On a small head whose CPUs are mostly held (training
workers, an evaluation actor, Serve replicas), that task never runs and the job waits without a word.
The V1 reader's tasks, and the split filter, take the CPU share they are given.
"""

from __future__ import annotations

from fet.data.shards import shard_files

READ_CPUS = 0.1  # read and filter tasks: small, so they run beside the actors that hold the CPUs


def read_split(shards: str, kind: str, columns: list[str], split: str):
    """Rows of ``split`` from the published ``kind`` shards ("clips" or "images") under ``shards``,
    ``columns`` only (they must include ``split``) → a lazy ``ray.data.Dataset``. Raises ``ShardError``
    when ``shards`` holds none of that kind."""
    import ray.data
    from ray.data.expressions import col

    if "split" not in columns:
        raise ValueError(f"columns {columns}: must include 'split' to select the {split!r} rows")
    files = shard_files(shards, kind)
    context = ray.data.DataContext.get_current()
    v2, context.use_datasource_v2 = context.use_datasource_v2, False  # read_parquet picks its reader from it
    try:
        ds = ray.data.read_parquet(files, columns=columns, num_cpus=READ_CPUS)  # only these columns are read
    finally:
        context.use_datasource_v2 = v2
    return ds.filter(expr=col("split") == split, num_cpus=READ_CPUS)
