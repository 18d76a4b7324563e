"""What a training run's result depends on, kept beside its checkpoints, so that submitting its name again
never resumes it with other settings.

Submitting a run name again resumes that run from its latest checkpoint. With another learning rate,
batch size, model preset or ZeRO stage, the run would go on from weights, optimizer state and data
position made with the first settings, while its MLflow run lists the first ones as its params. So the
first submission writes ``fet_settings.json`` under ``storage_path/name``, and a submission of an
unfinished run that asks for other settings is refused, naming each difference. A finished run is not
trained again whatever it is given; its differences are printed beside its result.

Free to change between submissions: where the component is exported, checkpoint keeping and restarts,
MLflow logging, the CPU share, caching, the held-out rows and their sampling steps. Local paths are not
compared: ``ray job submit`` unpacks the working directory somewhere new. The DeepSpeed config is
compared by its content, not its file name.
"""

from __future__ import annotations

import json
from typing import Any

from fet import storage
from fet.config import ConfigError, flatten, to_dict
from fet.training.job_config import TrainJobConfig, deepspeed_config
from ray_jobs.tracking import redact

SETTINGS = "fet_settings.json"
FREE = {"name", "out", "storage_path", "deepspeed", "scaling.cpus_per_worker", "data.cache", "data.val_items",
        "task.eval_steps"}  # fmt: skip
FREE_SECTIONS = ("checkpoint.", "mlflow.")


def _local_path(value: Any) -> bool:
    return isinstance(value, str) and "/" in value and "://" not in value


def run_settings(job: TrainJobConfig) -> dict[str, Any]:
    """Every setting the run's result depends on, flattened, the DeepSpeed config's content included."""
    # a monitor's key in the DeepSpeed config (comet's api_key) is kept masked: the file lies beside the checkpoints
    flat = flatten(to_dict(job)) | flatten(redact(deepspeed_config(job)), "deepspeed_config.")
    return {k: v for k, v in flat.items() if k not in FREE and not k.startswith(FREE_SECTIONS) and not _local_path(v)}


def check_run_settings(job: TrainJobConfig, finished: bool) -> list[str]:
    """The differences from the settings the run ``job.name`` was started with ("key old → new"). Refuses
    (``ConfigError``) an unfinished run that has checkpoints; records the settings of a run that has none."""
    run_dir = storage.join(job.storage_path, job.name)
    uri, wanted = storage.join(run_dir, SETTINGS), run_settings(job)
    text = json.dumps(wanted, indent=2, sort_keys=True, default=str)
    if not finished and storage.create_new(uri, text.encode()):
        return []
    if not storage.exists(uri):  # a run finished before its settings were kept
        return []
    made = json.loads(storage.read_text(uri))
    wanted = json.loads(text)  # the same JSON round trip as the stored side (tuples → lists, ...)
    diffs = [f"{k} {made.get(k)!r} → {wanted.get(k)!r}" for k in sorted(made.keys() | wanted.keys())
             if made.get(k) != wanted.get(k)]  # fmt: skip
    if not diffs or finished:
        return diffs
    if not has_checkpoints(run_dir):  # nothing trained yet: this submission's settings
        storage.write_text(uri, text)
        return []
    raise ConfigError(
        f"run {job.name!r} ({run_dir}) was started with other settings: {', '.join(diffs)}. Its checkpoints "
        "were made with those: submit it with them to resume it, or give this submission another name"
    )


def has_checkpoints(run_dir: str) -> bool:
    """Whether Ray Train has written a checkpoint of the run kept in ``run_dir`` (``storage_path/name``)."""
    try:
        return any("/checkpoint_" in f for f in storage.list_files(run_dir))
    except storage.NotFoundError:  # no such folder yet
        return False
