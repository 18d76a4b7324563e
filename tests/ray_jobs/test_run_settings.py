"""Submitting a run name again never resumes it with other settings (no Ray needed: the check runs in the
driver before Ray starts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fet import storage
from fet.config import ConfigError, load_config
from fet.training.job_config import TrainJobConfig
from ray_jobs.run_settings import check_run_settings

REPO = Path(__file__).resolve().parents[2]


def job(tmp: Path, *overrides: str) -> TrainJobConfig:
    return load_config(TrainJobConfig, REPO / "configs/train/ray/stage1_tiny.yaml",
                       [f"storage_path={tmp / 'ray'}", "name=faces", *overrides])  # fmt: skip


def checkpoint(tmp: Path) -> None:
    """A checkpoint of the run as Ray Train keeps it: a folder of files under ``storage_path/name``."""
    folder = tmp / "ray" / "faces" / "checkpoint_2026-12-06_00-00-00.000000"
    folder.mkdir()
    (folder / "state.json").write_text('{"step": 100}')


def test_an_unfinished_run_is_resumed_only_with_the_settings_it_was_started_with(tmp_path):
    assert check_run_settings(job(tmp_path, "optim.lr=1e-3"), finished=False) == []  # the first submission
    # nothing trained yet (no checkpoint): a corrected submission takes its place
    assert check_run_settings(job(tmp_path, "optim.lr=2e-3"), finished=False) == []
    checkpoint(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"run 'faces' .* was started with other settings: batch_size 8 → 16, "
        r"deepspeed_config.train_batch_size 16 → 32, deepspeed_config.train_micro_batch_size_per_gpu 8 → 16, "
        r"optim.lr 0.002 → 0.003\. ",
    ):
        check_run_settings(job(tmp_path, "optim.lr=3e-3", "batch_size=16"), finished=False)
    with pytest.raises(ConfigError, match=r"deepspeed_config.zero_optimization.stage 2 → 3"):
        check_run_settings(job(tmp_path, "optim.lr=2e-3", "deepspeed=configs/train/deepspeed/zero3.json"), False)
    free = ("out=elsewhere", "mlflow.log_every=1", "checkpoint.keep=5", "scaling.cpus_per_worker=1", "data.cache=false",
            f"data.shards={tmp_path / 'moved' / 'shards'}")  # fmt: skip
    assert check_run_settings(job(tmp_path, "optim.lr=2e-3", *free), finished=False) == []
    # a finished run is not trained again whatever it is given: the differences are only reported
    assert check_run_settings(job(tmp_path, "optim.lr=3e-3"), finished=True) == ["optim.lr 0.002 → 0.003"]
    assert storage.read_text(tmp_path / "ray" / "faces" / "fet_settings.json").count('"optim.lr": 0.002') == 1


def test_the_training_job_refuses_it_before_ray_starts(tmp_path, synthtalk_shards):
    base = [sys.executable, "-m", "ray_jobs.train_stage1", "--config", "configs/train/ray/stage1_tiny.yaml",
            f"storage_path={tmp_path / 'ray'}", "name=faces", f"data.shards={synthtalk_shards}"]  # fmt: skip
    check_run_settings(job(tmp_path, f"data.shards={synthtalk_shards}"), finished=False)
    checkpoint(tmp_path)
    out = subprocess.run([*base, "steps=400"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2 and "was started with other settings: steps 600 → 400" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "Started a local Ray instance" not in out.stderr


def test_the_training_job_refuses_what_its_workers_would_fail_on_before_ray_starts(
    tmp_path, synthtalk_shards, monkeypatch, capsys
):
    """No shards, a tracking server that does not answer (MLflow's client retried for 4 minutes, then a
    traceback), a DeepSpeed file that is not JSON: each ends the job at once with a message, before Ray
    and before an MLflow run is made."""
    from ray_jobs import train
    from tests.conftest import unreachable_endpoint

    def ray_started(address=None):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(train, "init_ray", ray_started)
    db = tmp_path / "mlflow.db"
    base = ["--config", "configs/train/ray/stage1_tiny.yaml", f"storage_path={tmp_path / 'ray'}",
            f"mlflow.tracking_uri=sqlite:///{db}"]  # fmt: skip
    (tmp_path / "zero.json").write_bytes(b"\xa4\x00 not json")
    server = unreachable_endpoint()
    cases = {
        f"data.shards={tmp_path / 'none'}": f"{tmp_path / 'none'}: no images shards; run the preprocessing job",
        f"mlflow.tracking_uri={server}": f"mlflow.tracking_uri={server}: the tracking server does not answer",
        f"deepspeed={tmp_path / 'zero.json'}": f"{tmp_path / 'zero.json'}: not valid JSON",
    }
    for override, message in cases.items():
        shards = [] if override.startswith("data.shards") else [f"data.shards={synthtalk_shards}"]
        with pytest.raises(SystemExit) as done:
            train.main([*base, *shards, override], "stage1")
        assert done.value.code == 2 and f"error: {message}" in capsys.readouterr().err, override
    assert not db.exists()  # no MLflow run left RUNNING by a job that never started


@pytest.mark.parametrize("stage", ["stage1", "audio"])
def test_a_worker_share_smaller_than_one_batch_is_refused_before_ray_starts(
    stage, tmp_path, synthtalk_shards, monkeypatch, capsys
):
    """Each worker gets the same number of training rows, so too few rows for the workers and the batch size
    is known from the shards' sidecars. Before, each worker found it after Ray and the MLflow run had started,
    and Ray Train retried it ``checkpoint.max_failures`` times."""
    from fet.data.shards import split_rows
    from ray_jobs import train

    monkeypatch.setattr(train, "init_ray", lambda address=None: pytest.fail("Ray was started"))
    kind, per_row = {"stage1": ("images", 1), "audio": ("clips", 4)}[stage]  # audio: task.windows_per_clip 4
    rows = split_rows(synthtalk_shards, kind, "train")
    each = rows // 2 * per_row
    assert each >= 8  # the shipped batch size fits the test's shards
    base = ["--config", f"configs/train/ray/{stage}_tiny.yaml", f"data.shards={synthtalk_shards}",
            f"storage_path={tmp_path / 'ray'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        train.main([*base, f"batch_size={each + 1}"], stage)
    made = "" if per_row == 1 else f" of {per_row} examples each"
    expected = (f"error: {synthtalk_shards}: {rows} training rows of {kind} (split 'train') are {rows // 2} rows"
                f"{made} per worker for scaling.num_workers=2: {each} examples, fewer than batch_size={each + 1}; "
                "use fewer workers")  # fmt: skip
    assert done.value.code == 2 and expected in capsys.readouterr().err
    job = load_config(TrainJobConfig, REPO / f"configs/train/ray/{stage}_tiny.yaml",
                      [f"data.shards={synthtalk_shards}", f"batch_size={each}"])  # fmt: skip
    train.check(train.resolve(job))  # one batch per worker exactly: trained (Ray Train's split is equal)


def test_stage2_on_faces_without_attribute_labels_is_refused_before_ray_starts(
    tmp_path, synthtalk_shards, monkeypatch, capsys
):
    """Faces with no CelebA-style labels (FFHQ, a folder of one's own) cannot train the classifiers. Before,
    each worker found it after encoding its share of the faces, and Ray Train retried it."""
    import pyarrow.parquet as pq

    from fet.autoencoder import DiffusionAutoencoder
    from fet.training.config import resolve_model
    from ray_jobs import train

    monkeypatch.setattr(train, "init_ray", lambda address=None: pytest.fail("Ray was started"))
    unlabelled = tmp_path / "shards" / "images"
    unlabelled.mkdir(parents=True)
    for part in (Path(synthtalk_shards) / "images").iterdir():  # the same faces, every label unknown (-1)
        if part.suffix == ".parquet":
            table = pq.read_table(part)
            column = table.schema.get_field_index("attributes")
            table = table.set_column(column, "attributes", [[[-1] * 40] * len(table)])
            pq.write_table(table, unlabelled / part.name)
        else:
            (unlabelled / part.name).write_bytes(part.read_bytes())
    DiffusionAutoencoder(resolve_model({"preset": "tiny", "image_size": 32})).save(str(tmp_path / "stage1"))
    config = ["--config", "configs/train/ray/stage2_tiny.yaml", f"task.autoencoder={tmp_path / 'stage1'}",
              f"storage_path={tmp_path / 'ray'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    labelled = load_config(TrainJobConfig, REPO / config[1], [*config[2:], f"data.shards={synthtalk_shards}"])
    train.check(train.resolve(labelled))  # the same faces with their labels pass
    with pytest.raises(SystemExit) as done:
        train.main([*config, f"data.shards={tmp_path / 'shards'}"], "stage2")
    expected = f"error: {tmp_path / 'shards'}: no attribute has both present (1) and absent (0) labels in the training"
    assert done.value.code == 2 and expected in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "args", "setting"),
    [
        ("preprocess", ["--config", "configs/data/synthtalk.yaml"], "out=data/shards/synthtalk"),
        ("train", ["--config", "configs/train/ray/audio_tiny.yaml", "out=/kept/audio"], "storage_path=outputs/ray_results"),
        ("train", ["--config", "configs/train/ray/audio_tiny.yaml", "out=/kept/audio", "storage_path=s3://b/ray"],
         "mlflow.tracking_uri=sqlite:///outputs/mlflow.db"),
        ("train", ["--config", "configs/train/ray/stage2_tiny.yaml", "out=/kept/2", "storage_path=s3://b/ray",
                   "mlflow.tracking_uri=http://mlflow:5000", "data.shards=/kept/shards", "task.autoencoder=no/such/1"],
         "task.autoencoder=no/such/1"),
        ("preprocess", ["--config", "configs/data/synthtalk.yaml", "out=/kept/shards", "sources.0.root=/kept/clips",
                        "sources.1.root=/kept/images", "face_landmarker=no/such.task"], "face_landmarker=no/such.task"),
        ("evaluate", ["--config", "configs/eval/synthtalk.yaml"], "out=outputs/eval/synthtalk"),
        ("evaluate", ["--config", "configs/eval/synthtalk.yaml", "out=/kept/eval", "mlflow.tracking_uri=http://m:5000",
                      "bundle=/kept/bundle", "shards=/kept/shards", "weights.fid_weights=no/such.pth"],
         "weights.fid_weights=no/such.pth"),
        ("evaluate", ["--config", "configs/eval/synthtalk.yaml", "out=s3://b/eval", "mlflow.tracking_uri=http://m:5000",
                      "bundle=no/such/bundle"], "bundle=no/such/bundle"),
        ("export_bundle", ["--out", "bundle", *[f"--{s}=/kept/{s}" for s in ("stage1", "stage2", "audio", "stage3")]],
         "--out=bundle"),
        ("export_bundle", ["--out", "/kept/bundle", "--stage1=no/such/stage1", "--stage2=/kept/2", "--audio=/kept/a",
                           "--stage3=/kept/3"], "--stage1=no/such/stage1"),
    ],
)  # fmt: skip
def test_every_job_refuses_relative_outputs_in_a_shipped_working_directory(module, args, setting, monkeypatch, capsys):
    """The driver of `ray job submit --working-dir` runs in Ray's temporary copy of that directory, and Ray
    says so in RAY_JOB_CONFIG_JSON_ENV_VAR (as set here, in the form Ray gives it): an output there would be
    deleted with it, and an input that .gitignore left out of it would be reported missing. An absolute path
    or a URI is kept."""
    import importlib

    job = importlib.import_module(f"ray_jobs.{module}")
    shipped = '{"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip", "env_vars": {}}, "metadata": {}}'
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", shipped)
    monkeypatch.setattr(job, "init_ray", lambda address=None: pytest.fail("Ray was started"), raising=False)
    with pytest.raises(SystemExit) as done:
        job.main(args)
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"error: {setting}: a relative path" in err and "(gcs://_ray_pkg_0123.zip)" in err


def test_a_key_in_the_deepspeed_config_is_not_kept_beside_the_checkpoints(tmp_path):
    """A DeepSpeed monitor's API key (comet's) is masked in ``fet_settings.json``, and a new key is no other setting."""
    ds = json.loads((REPO / "configs/train/deepspeed/zero2.json").read_text())

    def with_key(key: str) -> TrainJobConfig:
        (tmp_path / "ds.json").write_text(json.dumps(ds | {"comet": {"enabled": True, "api_key": key}}))
        return job(tmp_path, f"deepspeed={tmp_path / 'ds.json'}")

    assert check_run_settings(with_key("key-one-5Tg8"), finished=False) == []
    checkpoint(tmp_path)
    assert check_run_settings(with_key("key-two-5Tg8"), finished=False) == []  # resumed with the new key
    kept = storage.read_text(tmp_path / "ray" / "faces" / "fet_settings.json")
    assert "5Tg8" not in kept and '"deepspeed_config.comet.enabled": true' in kept
