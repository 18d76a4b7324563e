"""The training stages as tasks of the distributed trainer, exercised in one process (no Ray): each
decodes real shard rows, takes optimizer steps that lower its loss, reports held-out metrics with a
picture, and exports a component that loads back. Plus the resumable epoch order, LR schedule and
DeepSpeed config the Ray loop relies on."""

from __future__ import annotations

import copy
import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fet.autoencoder import DiffusionAutoencoder
from fet.config import ConfigError, load_config
from fet.data.shards import read_rows
from fet.editor import load_attribute_classifier
from fet.training.epochs import EpochBatches
from fet.training.job_config import JobOptim, TrainJobConfig, deepspeed_config
from fet.training.optim import lr_lambda, step_generator
from fet.training.tasks import build_task
from fet.training.tasks.base import TrainingTask
from fet.training.tasks.frames import to_model_range

CONFIGS = "configs/train/ray"


def job(stage: str, shards: str, *overrides: str) -> TrainJobConfig:
    return load_config(TrainJobConfig, f"{CONFIGS}/{stage}_tiny.yaml", [f"data.shards={shards}", *overrides])


def train_steps(task, rows, steps: int, lr: float, batch_size: int = 8) -> list[float]:
    torch.manual_seed(0)
    model = task.build()
    examples = task.examples(rows)
    task.prepare(model, examples)
    opt = torch.optim.AdamW(model.param_groups(lr))
    batches = EpochBatches(task, lambda epoch: iter([rows]), batch_size, seed=0, rank=0, cache=True)
    batches.examples = examples
    losses, epoch = [], 0
    while len(losses) < steps:
        for batch in batches.epoch(epoch):
            loss, _ = model(batch, step_generator(0, len(losses), 0))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
        epoch += 1
    return losses, model


def falls(losses: list[float], k: int = 5) -> bool:
    return float(np.mean(losses[-k:])) < float(np.mean(losses[:k]))


@pytest.fixture(scope="module")
def stage1_dir(synthtalk_shards, tmp_path_factory):
    task = build_task(job("stage1", synthtalk_shards))
    rows = list(read_rows(synthtalk_shards, "images", "train", task.columns))
    losses, model = train_steps(task, rows[:64], 30, 2e-3)
    assert falls(losses), losses
    out = str(tmp_path_factory.mktemp("stage1"))
    task.export(model.exported, out)
    return out


def test_stage1_task_reports_and_exports(stage1_dir, synthtalk_shards):
    task = build_task(job("stage1", synthtalk_shards, "task.eval_steps=4"))
    model = DiffusionAutoencoder.load(stage1_dir)
    rep = task.report(model, list(read_rows(synthtalk_shards, "images", "val", task.columns))[:4])
    assert 5 < rep.metrics["val_reconstruction_psnr_db"] < 100  # a smoke value: 30 steps, 4 DDIM steps
    assert Image.open(io.BytesIO(rep.images["reconstructions.png"])).size == (4 * 32, 2 * 32)


def test_stage2_task_learns_attributes(stage1_dir, synthtalk_shards, tmp_path):
    task = build_task(job("stage2", synthtalk_shards, f"task.autoencoder={stage1_dir}", "task.eval_steps=3"))
    rows = list(read_rows(synthtalk_shards, "images", "train", task.columns))
    losses, model = train_steps(task, rows, 40, 1e-2, batch_size=32)
    assert falls(losses), losses
    assert model.classifier.trained.sum() > 5 and torch.all(model.classifier.z_std > 0)
    rep = task.report(model.exported, list(read_rows(synthtalk_shards, "images", "val", task.columns)))
    assert 0.5 < rep.metrics["val_auroc_mean"] <= 1.0
    assert Image.open(io.BytesIO(rep.images["edits.png"])).size[0] >= 2 * 32
    task.export(model.exported, str(tmp_path))
    library = json.loads((tmp_path / "attribute_library.json").read_text())  # the tiny config's α calibration
    assert (library["default_alpha"], library["max_abs_alpha"]) == (task.cfg.default_alpha, task.cfg.max_abs_alpha)
    assert (task.cfg.default_alpha, task.cfg.max_abs_alpha, library["direction"]) == (1.0, 2.0, "label_model")
    # the label model is fitted on the same faces and exported with the classifiers: it predicts their codes
    clf = load_attribute_classifier(str(tmp_path))
    z, labels = (torch.stack(t) for t in zip(*task.examples(rows[:64])))
    labels = torch.where(clf.trained, labels, 0)
    fit = clf.label_model.features(labels).float() @ clf.label_model.weight
    residual = (clf.normalize(z) - fit).pow(2).mean() / clf.normalize(z).pow(2).mean()
    assert residual < 0.9, residual  # 0.44 here; 1 for a model never fitted
    with pytest.raises(ValueError, match="direction='normal'"):  # named before any training
        build_task(job("stage2", synthtalk_shards, f"task.autoencoder={stage1_dir}", "task.edit_direction=normal"))


def test_audio_task_uses_precomputed_features_and_learns(synthtalk_shards, tmp_path):
    task = build_task(job("audio", synthtalk_shards))
    # the shard's mel features are the ones configured: the training rows are read without their audio
    assert task.train_columns(synthtalk_shards) == [c for c in task.columns if c != "audio"]
    rows = list(read_rows(synthtalk_shards, "clips", "train", task.train_columns(synthtalk_shards)))
    assert rows[0]["audio_encoder"] == task.encoder_key and "audio" not in rows[0]
    other = build_task(job("audio", synthtalk_shards, "task.audio.n_mels=40"))  # features to compute from the audio
    assert other.encoder_key != task.encoder_key and other.train_columns(synthtalk_shards) == other.columns
    assert (
        other.motion_clip(next(read_rows(synthtalk_shards, "clips", "train", other.columns))).features.shape[1]
        == other.encoder.dim
    )
    clip = task.motion_clip(rows[0])
    assert clip.features.shape == (rows[0]["num_frames"], task.encoder.dim)
    losses, model = train_steps(task, rows, 40, 2e-3)
    assert falls(losses), losses
    rep = task.report(model, list(read_rows(synthtalk_shards, "clips", "val", task.columns)))
    assert {"val_mesh_l1_cm", "val_mouth_opening_corr"} <= set(rep.metrics)
    task.export(model, str(tmp_path))
    assert (tmp_path / "audio2mesh.safetensors").exists() and (tmp_path / "audio_encoder.json").exists()


def test_stage3_task_pairs_frames_of_one_clip(stage1_dir, synthtalk_shards, tmp_path):
    task = build_task(job("stage3", synthtalk_shards, f"task.autoencoder={stage1_dir}", "task.eval_steps=3"))
    rows = list(read_rows(synthtalk_shards, "clips", "train", task.columns))[:3]
    examples = task.examples(rows)
    assert len(examples) == 3 * task.cfg.pairs_per_clip
    batch = task.collate(examples[:4], np.random.default_rng(0))
    cfg = task.autoencoder.cfg
    assert batch["x_0"].shape == (4, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    assert batch["z_sem"].shape == (4, cfg.z_dim) and batch["target_map"].shape == (4, 3, 32, 32)
    # each frame's codes are the frozen encoders' outputs: a step on them is the step on the frames
    rng = np.random.default_rng(0)  # the (target, reference) frames collate drew, all of the first clip
    n = len(examples[0].landmarks)
    tgt, ref = [int(rng.integers(n)) for _ in range(4)], [int(rng.integers(n)) for _ in range(4)]
    frames = task.clip(rows[0]).frames
    on_frames = {"target": to_model_range(frames[tgt]), "reference": to_model_range(frames[ref]),
                 "target_map": batch["target_map"], "reference_map": batch["reference_map"]}  # fmt: skip
    stepper = task.build()
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    torch.testing.assert_close(stepper(batch, g())[0], stepper(on_frames, g())[0])
    # the new PoseGuider learns at guider_lr_scale x the rate of the denoiser copied from stage 1
    built = task.build()
    groups = built.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-3 * task.cfg.guider_lr_scale] and task.cfg.guider_lr_scale == 10
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in built.talker.pose_guider.parameters()]
    assert sum(len(g["params"]) for g in groups) == len(built.trainable_parameters())
    losses, model = train_steps(task, rows, 25, 1e-3)
    assert falls(losses), losses
    assert not any(p.requires_grad for p in task.autoencoder.parameters())  # E_sem and codec frozen
    rep = task.report(model.exported, list(read_rows(synthtalk_shards, "clips", "val", task.columns)))
    assert np.isfinite(rep.metrics["val_target_psnr_db"]) and "samples_stage3.png" in rep.images
    task.export(model.exported, str(tmp_path))
    assert (tmp_path / "pose_guider.safetensors").exists()


def test_streamed_stage3_runs_the_frozen_encoders_on_the_drawn_frames_only(stage1_dir, synthtalk_shards):
    """Streamed (``data.cache: false``, the paper config), every frame of a clip went through E_sem and the
    codec as it was read, for the few pairs an epoch draws of it. Now the step encodes the drawn frames, and
    its loss is the loss on the kept clips' codes."""
    kept, streamed = (build_task(job("stage3", synthtalk_shards, f"task.autoencoder={stage1_dir}", f"data.cache={c}"))
                      for c in ("true", "false"))  # fmt: skip
    rows = list(read_rows(synthtalk_shards, "clips", "train", kept.columns))[:2]
    encoded = {"kept": [], "streamed": []}
    for name, task in (("kept", kept), ("streamed", streamed)):
        task.autoencoder.encoder.register_forward_hook(lambda m, args, out, n=name: encoded[n].append(len(args[0])))
    examples = {"kept": kept.examples(rows), "streamed": streamed.examples(rows)}
    assert sum(encoded["kept"]) == sum(len(r["frames"]) for r in rows) and encoded["streamed"] == []
    assert [len(e) for e in examples.values()] == [2 * kept.cfg.pairs_per_clip] * 2
    mixed = [0, 9, 1, 8]  # pairs of both clips in one batch
    batches = {n: t.collate([examples[n][i] for i in mixed], np.random.default_rng(5))
               for n, t in (("kept", kept), ("streamed", streamed))}  # fmt: skip
    assert set(batches["streamed"]) == {"target", "reference", "target_map", "reference_map"}
    assert batches["streamed"]["target"].shape == (4, 3, 32, 32) and encoded["streamed"] == []
    torch.testing.assert_close(batches["kept"]["target_map"], batches["streamed"]["target_map"])
    torch.manual_seed(0)
    stepper = streamed.build()
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    torch.testing.assert_close(stepper(batches["kept"], g())[0], stepper(batches["streamed"], g())[0])
    assert encoded["streamed"] == [4]  # the 4 reference frames, in the step


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
SPLITS = {"stage1": "images", "stage2": "images", "audio": "clips", "stage3": "clips"}
HEADLINE = {"stage1": "val_reconstruction_psnr_db", "stage2": "val_auroc_mean", "audio": "val_mesh_l1_cm",
            "stage3": "val_target_psnr_db"}  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stage", list(SPLITS))
def test_each_task_steps_in_bf16_and_reports_as_the_gpu_loop_runs_it(stage, device, stage1_dir, synthtalk_shards):
    """What ``ray_jobs/train_loop.py`` does with ``precision: bf16``: the frozen modules go to the device in the
    training precision (``task.to``), DeepSpeed casts only the trained model to bf16, batches are cast to bf16;
    the held-out report then runs on the fp32 EMA copy, on the device, with rows decoded on the CPU."""
    dev = torch.device(device)
    extra = [f"task.autoencoder={stage1_dir}", "task.eval_steps=2"] if stage in ("stage2", "stage3") else []
    task = build_task(job(stage, synthtalk_shards, *extra))
    task.to(dev, torch.bfloat16)
    rows = list(read_rows(synthtalk_shards, SPLITS[stage], "train", task.columns))[:16]
    torch.manual_seed(0)
    model = task.build().to(dev)
    examples = task.examples(rows)
    task.prepare(model, examples)
    ema = copy.deepcopy(model.exported)  # fp32, as the loop's EMA shadow
    model.to(torch.bfloat16)  # what deepspeed.initialize does with bf16 enabled
    batch = {k: v.to(dev, torch.bfloat16) if v.is_floating_point() else v.to(dev)
             for k, v in task.collate(examples[:4], np.random.default_rng(0)).items()}  # fmt: skip
    loss, _ = model(batch, step_generator(0, 0, 0))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g.float()).all() for g in grads)
    assert sum(float(g.float().abs().sum()) for g in grads) > 0
    report = task.report(ema, list(read_rows(synthtalk_shards, SPLITS[stage], "val", task.columns))[:12])
    assert np.isfinite(report.metrics[HEADLINE[stage]]), report.metrics
    assert report.images


def held_bytes(obj, seen=None) -> int:
    """The memory of the arrays and tensors under ``obj`` (lists, tuples, dataclasses), each buffer once."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = obj.untyped_storage().data_ptr()
        size = obj.untyped_storage().nbytes()
    elif isinstance(obj, np.ndarray):
        base = obj if obj.base is None else obj.base
        key, size = id(base), base.nbytes if isinstance(base, np.ndarray) else obj.nbytes
    elif isinstance(obj, list | tuple):
        return sum(held_bytes(o, seen) for o in obj)
    elif dataclasses.is_dataclass(obj):
        return sum(held_bytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    else:
        return 0
    if key in seen:
        return 0
    seen.add(key)
    return size


@pytest.mark.parametrize("stage", list(SPLITS))
def test_what_a_worker_keeps_of_its_rows_is_known_before_it_decodes_them(stage, stage1_dir, synthtalk_shards):
    """``kept_bytes``, from the rows' sizes alone, is what their examples take in memory when kept."""
    extra = [f"task.autoencoder={stage1_dir}"] if stage in ("stage2", "stage3") else []
    task = build_task(job(stage, synthtalk_shards, *extra, "data.cache=true"))
    rows = list(read_rows(synthtalk_shards, SPLITS[stage], "train", task.columns))[:6]
    sizes = list(read_rows(synthtalk_shards, SPLITS[stage], "train", task.kept_columns))[:6]
    assert [r["split"] for r in sizes] == ["train"] * 6
    measured = held_bytes(task.examples(rows))
    assert measured > 0 and task.kept_bytes(sizes) == measured


class Counting:
    """A task whose examples are the row indices, to see the epoch order."""

    examples_per_row = 1

    def examples(self, rows):
        return [r["i"] for r in rows]

    def collate(self, examples, rng):
        return {"i": torch.tensor(examples), "r": torch.tensor([rng.integers(1000)])}


@pytest.mark.parametrize("cache", [True, False])
def test_epoch_order_is_reproducible_and_resumes_at_any_batch(cache):
    rows = [{"i": i} for i in range(40)]

    def source(epoch):
        order = np.random.default_rng(epoch).permutation(40) if not cache else np.arange(40)
        return iter([[rows[j] for j in order[k : k + 7]] for k in range(0, 40, 7)])

    def batches(skip=0, epoch=1):
        it = EpochBatches(Counting(), source, 6, seed=3, rank=1, cache=cache)
        return [(b["i"].tolist(), b["r"].item()) for b in it.epoch(epoch, skip)]

    full = batches()
    assert len(full) == 6 and batches() == full
    assert batches(skip=4) == full[4:]
    assert batches(epoch=2) != full
    seen = sorted(i for b, _ in full for i in b)
    assert len(set(seen)) == len(seen) == 36  # no example twice in an epoch


class Indexed(TrainingTask):
    """A task whose examples are the row indices; ``Summing`` also looks at them before training."""

    stage, kind, columns, section = "stage1", "images", ["i"], dict

    def __init__(self) -> None:
        self.decoded = 0

    def examples(self, rows):
        self.decoded += len(rows)
        return [r["i"] for r in rows]

    def collate(self, examples, rng):
        return {"i": torch.tensor(examples)}

    build = report = export = None


class Summing(Indexed):
    def prepare(self, model, examples):
        self.total = sum(examples)


@pytest.mark.parametrize("cache", [True, False])
def test_only_a_task_that_prepares_on_its_examples_is_given_a_pass_over_them_before_training(cache):
    """Streamed (``data.cache: false``, the paper configs of stages 1, A and 3), a stage whose ``prepare`` does
    nothing used to decode every row of the rank's share, and hold all of it, before its first step."""
    reads = []

    def source(epoch):
        reads.append(epoch)
        return iter([[{"i": i} for i in range(k, min(k + 7, 40))] for k in range(0, 40, 7)])

    plain, summing = Indexed(), Summing()
    assert not plain.prepares and summing.prepares
    EpochBatches(plain, source, 6, seed=0, rank=0, cache=cache).prepare(model=None)
    assert (reads, plain.decoded) == ([], 0)
    EpochBatches(summing, source, 6, seed=0, rank=0, cache=cache).prepare(model=None)
    assert reads == [0] and summing.decoded == 40 and summing.total == sum(range(40))
    streamed = EpochBatches(plain, source, 6, seed=0, rank=0, cache=False)
    next(streamed.epoch(0))
    assert plain.decoded == 7  # the first batch needs the first chunk only


class Pairs(Indexed):
    """Each row makes 4 examples, as stage 3 makes frame pairs of one clip."""

    examples_per_row = 4

    def examples(self, rows):
        return [r["i"] for r in rows for _ in range(4)]


def test_a_streamed_batch_mixes_the_examples_of_the_rows_read_together():
    """Streamed, batches were cut from the examples in the order rows made them: with stage 3's paper config
    (8 pairs per clip, batch 8) every batch held one clip's pairs. The cache permutes them all."""
    chunks = [[{"i": i} for i in range(k, k + 8)] for k in range(0, 32, 8)]  # read 8 rows at a time

    def epoch(e, skip=0):
        return [b["i"].tolist() for b in EpochBatches(Pairs(), lambda _: iter(chunks), 4, 3, 0, False).epoch(e, skip)]

    batches = epoch(0)
    assert sorted(i for b in batches for i in b) == sorted(4 * list(range(32)))  # every example once
    assert all(set(b) <= set(range(k, k + 8)) for b, k in zip(batches, np.repeat(range(0, 32, 8), 8)))  # per chunk
    assert np.mean([len(set(b)) for b in batches]) > 2.5  # rows per batch: 1 before; 3.3 expected at random
    assert epoch(0) == batches and epoch(0, skip=5) == batches[5:] and epoch(1) != batches


def test_a_resumed_streamed_epoch_does_not_decode_the_rows_of_the_batches_it_skips():
    """Streamed, a run resumed far into an epoch decoded every row of the batches it skipped (a PNG decode per
    face in stage 1, an E_sem pass in stage 2) only to throw the examples away. Now it reads them and moves on."""
    chunks = [[{"i": i} for i in range(k, k + 8)] for k in range(0, 48, 8)]  # 2 batches of 4 per chunk

    def epoch(task, skip=0):
        return [b["i"].tolist() for b in EpochBatches(task, lambda _: iter(chunks), 4, 3, 0, False).epoch(1, skip)]

    whole, resumed = Indexed(), Indexed()
    batches = epoch(whole)
    assert len(batches) == 12 and whole.decoded == 48
    assert epoch(resumed, skip=6) == batches[6:]
    assert resumed.decoded == 24  # the last 3 chunks; 48 before

    class Short(Indexed):
        examples_per_row = 2  # but makes one example per row

    with pytest.raises(ValueError, match=r"Short.examples made 8 examples of 8 rows; expected examples_per_row \(2\)"):
        epoch(Short())


def test_the_stages_that_prepare_on_their_examples(stage1_dir, synthtalk_shards):
    extra = [f"task.autoencoder={stage1_dir}"]
    prepares = {s: build_task(job(s, synthtalk_shards, *(extra if s in ("stage2", "stage3") else []))).prepares
                for s in SPLITS}  # fmt: skip
    assert prepares == {"stage1": False, "stage2": True, "audio": False, "stage3": False}


def test_lr_schedule_and_deepspeed_config(tmp_path):
    f = lr_lambda(JobOptim(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1), steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == 1.0 and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    cfg = load_config(TrainJobConfig, f"{CONFIGS}/stage1_tiny.yaml", ["batch_size=5", "optim.grad_clip=0.5"])
    ds = deepspeed_config(cfg)
    assert ds["zero_optimization"]["stage"] == 2 and ds["train_micro_batch_size_per_gpu"] == 5
    assert ds["train_batch_size"] == 10 and ds["gradient_clipping"] == 0.5 and not ds["bf16"]["enabled"]
    offload = load_config(TrainJobConfig, None, ["deepspeed=configs/train/deepspeed/zero2_offload.json"])
    assert "offload_optimizer" not in deepspeed_config(offload)["zero_optimization"]  # CPU run: nothing to offload
    bad = tmp_path / "ds.json"
    bad.write_text('{"optimizer": {"type": "Adam"}}')
    with pytest.raises(ConfigError, match="leave out 'optimizer'"):
        deepspeed_config(load_config(TrainJobConfig, None, [f"deepspeed={bad}"]))
    for override, message in [("stage=stage9", "stage="), ("name=a b", "name="), ("precision=bf16", "use_gpu"),
                              ("deepspeed=nope.json", "no such file")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            load_config(TrainJobConfig, None, [override]).validate()
