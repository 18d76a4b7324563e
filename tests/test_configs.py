"""Every YAML in configs/ loads into its dataclass and validates."""

from pathlib import Path

import pytest

from fet.config import ConfigError, apply_overrides, load_config, read_yaml
from fet.models.presets import ImageModelConfig
from fet.training.config import AudioStageConfig, Stage1Config, Stage2Config, Stage3Config, resolve_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_class(path: Path):
    """Which dataclass a config file fills, by its folder and name."""
    if path.parent.name == "model":
        return None
    if path.parent.name == "ray":
        from fet.training.job_config import TrainJobConfig

        return TrainJobConfig
    if path.parent.name == "train":
        prefixes = {"stage1": Stage1Config, "stage2": Stage2Config, "audio": AudioStageConfig, "stage3": Stage3Config}
        return next(cls for prefix, cls in prefixes.items() if path.name.startswith(prefix))
    if path.parent.name == "data":
        from fet.data.preprocess import PreprocessConfig

        return PreprocessConfig
    if path.parent.name == "eval":
        from fet.evaluation.config import EvalConfig

        return EvalConfig
    raise AssertionError(f"no config class known for {path}")


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_yaml_validates(path):
    assert path.read_text().startswith("#"), "each config opens with a comment showing how it is used"
    cls = config_class(path)
    if cls is None:
        assert isinstance(resolve_model(read_yaml(path)), ImageModelConfig)
    else:
        cfg = load_config(cls, path)
        if type(cfg).__name__ == "TrainJobConfig":
            check_train_job(cfg, path)
        if isinstance(cfg, Stage1Config):
            cfg.image_model.validate()
        if isinstance(cfg, AudioStageConfig):
            from fet.audio.features import AudioEncoderConfig
            from fet.config import from_dict
            from fet.models.audio2mesh import Audio2MeshConfig
            from fet.models.audio2pose import Audio2PoseConfig

            from_dict(AudioEncoderConfig, cfg.audio).validate()
            from_dict(Audio2MeshConfig, cfg.audio2mesh)
            from_dict(Audio2PoseConfig, cfg.audio2pose)
        if isinstance(cfg, Stage3Config):
            from fet.config import from_dict
            from fet.models.pose_guider import PoseGuiderConfig

            from_dict(PoseGuiderConfig, cfg.guider)


def test_overrides_and_errors():
    cfg = load_config(
        Stage1Config, CONFIGS / "train/stage1_tiny.yaml", ["steps=7", "optim.lr=1e-3", "model.image_size=32"]
    )
    assert (cfg.steps, cfg.optim.lr, cfg.image_model.image_size) == (7, 1e-3, 32)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\]"):
        load_config(Stage1Config, None, ["stepz=3"])
    with pytest.raises(ConfigError, match="optim.lr: expected a number, got 'fast'"):
        load_config(Stage1Config, None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="model.preset: unknown preset 'huge'"):
        load_config(Stage1Config, None, ["model.preset=huge"])
    with pytest.raises(ConfigError, match="model: latent size 18 must be divisible"):
        load_config(Stage1Config, None, ["model.image_size=18"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["steps"])


def test_an_error_names_the_override_that_caused_it_and_a_file_only_when_the_file_is_at_fault(tmp_path):
    path = CONFIGS / "train/stage1_tiny.yaml"
    with pytest.raises(ConfigError) as e:  # the file is fine: the message must not send the reader to it
        load_config(Stage1Config, path, ["steps=7", "optim.lrr=1e-3", "steps=abc"])
    assert str(e.value).startswith("override 'optim.lrr=1e-3': optim: unknown key(s) ['lrr']")
    with pytest.raises(ConfigError, match=r"^override 'steps=-1': steps="):  # refused by validate()
        load_config(Stage1Config, path, ["steps=-1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: Stage1Config: unknown key\(s\) \['stepz'\]"):
        load_config(Stage1Config, bad, ["steps=7"])
    with pytest.raises(ConfigError, match=r"^override 'steps.x=3': 'steps' is a value, not a section$"):
        load_config(Stage1Config, path, ["steps=5", "steps.x=3"])  # named once
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x80\x00\xff" * 10)
    with pytest.raises(ConfigError, match=rf"^{binary}: not a text file \(expected YAML in UTF-8\)"):
        load_config(Stage1Config, binary)


@pytest.mark.parametrize("job", ["train", "preprocess", "evaluate"])
def test_each_jobs_help_example_overrides_its_own_config(job):
    """``--help`` shows overrides that the job's default config accepts (not another job's keys)."""
    import importlib

    from fet.data.preprocess import PreprocessConfig
    from fet.evaluation.config import EvalConfig
    from fet.training.job_config import TrainJobConfig

    module = importlib.import_module(f"ray_jobs.{job}")
    cls, path = {"train": (TrainJobConfig, "train/ray/stage1_tiny.yaml"), "preprocess": (PreprocessConfig, "data/synthtalk.yaml"),
                 "evaluate": (EvalConfig, "eval/synthtalk.yaml")}[job]  # fmt: skip
    from fet.config import flatten, parse_override, to_dict

    examples = module.OVERRIDES_EXAMPLE.split()
    loaded = flatten(to_dict(load_config(cls, CONFIGS / path, examples)))
    for text in examples:  # each sets a key of this config to its value
        keys, value = parse_override(text)
        assert str(loaded[".".join(keys)]) == str(value) or float(loaded[".".join(keys)]) == float(value), text


def check_train_job(cfg, path: Path) -> None:
    """A Ray Train config: the job validates, its stage matches its file name, its task section fits the
    stage, its DeepSpeed file resolves, and the tiny ones run on CPU while the paper ones use GPUs."""
    from fet.config import from_dict
    from fet.training.job_config import deepspeed_config
    from fet.training.tasks import task_class

    cfg.validate()
    assert path.name.startswith(cfg.stage + "_") and cfg.name == path.stem.replace("_", "-")
    section = from_dict(task_class(cfg.stage).section, cfg.task, where="task")
    if cfg.stage == "stage1":
        resolve_model(section.model).validate()
    assert deepspeed_config(cfg)["train_micro_batch_size_per_gpu"] == cfg.batch_size
    if path.stem.endswith("_tiny"):
        assert not cfg.scaling.use_gpu and cfg.precision == "fp32" and cfg.scaling.num_workers == 2
    else:
        assert cfg.scaling.use_gpu and cfg.precision == "bf16" and cfg.storage_path.startswith("s3://")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("train/deepspeed/*.json")), ids=lambda p: p.name)
def test_deepspeed_files_parse(path):
    import json

    ds = json.loads(path.read_text())
    assert ds["zero_optimization"]["stage"] in (1, 2, 3) and "optimizer" not in ds
