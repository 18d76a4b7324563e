"""Training benchmark on the embedded default: SynthTalk → preprocessing → the four stages on Ray Train
(2 CPU workers, DeepSpeed ZeRO-2, MLflow on SQLite) → held-out quality and training throughput.

    python benchmarks/train_stages.py --out outputs/bench_train            # 40–50 min wall on 2 cores
    python benchmarks/train_stages.py --out /tmp/b --steps1 200 --steps3 100 # a quick look
    python benchmarks/train_stages.py --out /tmp/h --stage1-set task.timesteps=high_noise

Prints, on the test split (never trained on): stage-1 reconstruction PSNR; stage-2 attribute AUROC, the mean
and per attribute beside what a linear read-out of z_sem and of the pixels reaches;
edit success (faces whose target attribute flips by the classifier after edit → decode → re-encode
while the other well-predicted attributes keep their labels), beside what SynthTalk's own render of each
edited face scores on the same measure; stage-A mouth-opening correlation with
the ground truth; stage-3 landmark error of generated frames against the driving landmarks (MediaPipe
on the generated frames, next to the same detector's error on the real frames); and stage-1 training
throughput with 1 and 2 workers. The budget is the wall time of the four runs times the 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

from fet.autoencoder import DiffusionAutoencoder
from fet.bundle import load_talker
from fet.config import load_config
from fet.data.preprocess import PreprocessConfig, run_serial
from fet.data.shards import read_rows, unpack
from fet.data.sources import SourceConfig
from fet.data.synthtalk.__main__ import generate
from fet.data.synthtalk.world import make_image
from fet.diffusion.ddim import ddim_invert, ddim_sample
from fet.editing.attributes import ATTRIBUTE_INDEX, CELEBA_ATTRIBUTES, EDIT_DIRECTIONS, AttributeLibrary
from fet.editing.classifier import AttributeClassifier
from fet.editing.edit import edit_semantic
from fet.editing.implications import implied_labels
from fet.editor import load_attribute_classifier, load_attribute_library
from fet.images import image_grid, to_uint8
from fet.landmarks.detector import FaceLandmarkDetector
from fet.landmarks.landmark_map import landmark_maps
from fet.metrics.classification import auroc
from fet.metrics.image_quality import psnr
from fet.training.job_config import TrainJobConfig
from fet.training.stage2 import classifier_aurocs
from fet.training.tasks import build_task
from fet.training.tasks.frames import decode_square, to_model_range

EDIT_TARGETS = ["Eyeglasses", "Smiling", "Blond_Hair", "Wearing_Hat", "Bangs", "Black_Hair", "Mouth_Slightly_Open"]
# edit_success's counts, reported as rates over the edits tried
COUNTS = ("success", "success_90pct_kept", "success_vs_reconstruction", "success_in_z_sem", "success_pixel_reader",
          "success_world", "success_world_pixel_reader", "success_vs_world")  # fmt: skip
DISTANCES = ("decode_residual", "code_error", "world_edit_length", "image_psnr_vs_world")  # per-edit means
WORLD_SEED = 0  # the SynthTalk world the benchmark draws


def train(stage: str, out: Path, shards: str, overrides: list[str]) -> dict:
    from ray_jobs.train import run

    cfg = load_config(TrainJobConfig, f"configs/train/ray/{stage}_tiny.yaml", [
        f"data.shards={shards}", f"storage_path={out / 'ray'}", f"out={out / stage}",
        f"mlflow.tracking_uri=sqlite:///{out / 'mlflow.db'}", "mlflow.sample_every=0", *overrides])  # fmt: skip
    t = time.time()
    summary = run(cfg)
    summary["bench_seconds"] = time.time() - t
    return summary


def faces(shards: str, split: str, size: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images (N, 3, S, S), labels (N, 40) and each face's index in the SynthTalk world (``world_index``)."""
    rows = list(read_rows(shards, "images", split, ["image_id", "split", "image", "attributes"]))[:limit]
    images = to_model_range(np.stack([decode_square(r["image"], size) for r in rows]))
    labels = torch.as_tensor(np.stack([np.asarray(r["attributes"], np.int64) for r in rows]))
    return images, labels, torch.as_tensor([world_index(str(r["image_id"])) for r in rows])


def world_index(image_id: str) -> int:
    """The SynthTalk image index of the id ``split/NNNNNN``; -1 for a face from anywhere else."""
    name = image_id.rsplit("/", 1)[-1]
    return int(name) if name.isdigit() else -1


def world_edits(index: torch.Tensor, attribute: str, size: int) -> torch.Tensor:
    """The SynthTalk world's own render of faces ``index`` with ``attribute`` turned on, at the same pose:
    what a perfect edit would draw."""
    if (index < 0).any():
        raise ValueError("the world's own edits need SynthTalk faces (image ids split/NNNNNN)")
    images = [make_image(WORLD_SEED, int(i), size, {attribute: True}).image for i in index]
    return to_model_range(np.stack(images))


class LinearProbe:
    """One logistic regression per attribute (labelled, both classes present), fitted to convergence on
    standardised features: what a linear read-out of these features reaches, and a reader of attributes
    that never sees the semantic encoder when the features are pixels."""

    def __init__(self, train_x: np.ndarray, train_y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self.mean, self.std = train_x.mean(0), train_x.std(0) + 1e-6
        x = (train_x - self.mean) / self.std
        self.models = {}
        for k, name in enumerate(CELEBA_ATTRIBUTES):  # labels are (N, 40) in CelebA order
            fit = train_y[:, k] >= 0
            if len(set(train_y[fit, k])) == 2:
                self.models[name] = LogisticRegression(C=1.0, max_iter=5000).fit(x[fit], train_y[fit, k])

    def scores(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = (x - self.mean) / self.std
        return {name: model.decision_function(x) for name, model in self.models.items()}

    def reads(self, x: np.ndarray) -> torch.Tensor:
        """Features (N, F) → the attributes read as present, booleans (N, 40) (False where no probe)."""
        out = torch.zeros(len(x), len(CELEBA_ATTRIBUTES), dtype=torch.bool)
        for name, score in self.scores(x).items():
            out[:, ATTRIBUTE_INDEX[name]] = torch.from_numpy(score > 0)
        return out

    def aurocs(self, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
        """Test AUROC per attribute with a probe and both classes labelled in the test set."""
        aucs = {}
        for name, score in self.scores(test_x).items():
            k = ATTRIBUTE_INDEX[name]
            test = test_y[:, k] >= 0
            if len(set(test_y[test, k])) == 2:
                aucs[name] = auroc(score[test], test_y[test, k] == 1)
        return aucs


def linear_probe_auroc(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Mean over attributes of the test AUROCs of a ``LinearProbe`` fitted on the train features."""
    return float(np.mean(list(LinearProbe(train_x, train_y).aurocs(test_x, test_y).values())))


@torch.no_grad()
def image_metrics(out: Path, shards: str, n: int | None, steps: int, alphas: list[float] | None = None,
                  direction: str | None = None) -> dict:  # fmt: skip
    ae = DiffusionAutoencoder.load(str(out / "stage1"))
    clf = load_attribute_classifier(str(out / "stage2"))
    images, labels, index = faces(shards, "test", ae.cfg.image_size, n)
    z = ae.encode(images)
    x_T = ae.encode_stochastic(images, z, steps)
    rec = ae.render(x_T, z, steps)
    aucs = classifier_aurocs(clf, z, labels)
    good = [a for a, v in aucs.items() if v >= 0.9]
    train_images, train_labels, _ = faces(shards, "train", ae.cfg.image_size, None)
    train_z = torch.cat([ae.encode(chunk) for chunk in train_images.split(64)])
    # the same test faces read out linearly from z_sem and from the pixels themselves
    probe_z = LinearProbe(train_z.numpy(), train_labels.numpy()).aurocs(z.numpy(), labels.numpy())
    pixel_reader = LinearProbe(train_images.flatten(1).numpy(), train_labels.numpy())
    probe_pixels = pixel_reader.aurocs(images.flatten(1).numpy(), labels.numpy())
    probes = {
        "stage2_auroc_linear_probe_z_sem": float(np.mean(list(probe_z.values()))),
        "stage2_auroc_linear_probe_pixels": float(np.mean(list(probe_pixels.values()))),
        "stage2_auroc_by_attribute": {  # classifier / probe on z_sem / probe on pixels
            name: {"classifier": aucs[name], "probe_z_sem": probe_z.get(name), "probe_pixels": probe_pixels.get(name)}
            for name in aucs
        },
    }
    library = load_attribute_library(str(out / "stage2"))  # the edit strength and direction stage 2 exported
    if direction:
        library.direction = direction
    alphas = alphas or [library.default_alpha]
    z_rec = ae.encode(rec)
    src = Sources(z, x_T, clf(z) > 0, clf(z_rec) > 0, pixel_reader, pixel_reader.reads(images.flatten(1).numpy()),
                  index)  # fmt: skip
    sweep = {alpha: edit_success(ae, clf, library, src, good, alpha, steps) for alpha in alphas}
    good_idx = [ATTRIBUTE_INDEX[a] for a in good]
    round_trip_kept = (src.read[:, good_idx] == src.read_rec[:, good_idx]).all(1).float().mean()
    pixel_rec = pixel_reader.reads(rec.flatten(1).numpy())
    pixel_kept = (src.pixel_read[:, good_idx] == pixel_rec[:, good_idx]).all(1).float().mean()
    headline = rates(sweep[alphas[0]])
    targets = [a for a in EDIT_TARGETS if a in good]
    edit_grid(ae, clf, library, images, rec, src, targets, alphas[0], steps).save(out / "edits.png")
    return {
        "stage1_psnr_db": psnr(rec, images),
        "stage2_auroc_mean": float(np.mean(list(aucs.values()))),
        **probes,
        "stage2_attributes_auroc_ge_0.9": good,
        "edit_success": headline["success"],
        "edit_success_90pct_kept": headline["success_90pct_kept"],
        "edit_success_in_z_sem": headline["success_in_z_sem"],
        "edit_success_pixel_reader": headline["success_pixel_reader"],
        "edit_success_world": headline["success_world"],
        "edit_success_world_pixel_reader": headline["success_world_pixel_reader"],
        "edit_success_vs_world": headline["success_vs_world"],
        "edit_decode_residual": headline["decode_residual"],
        "edit_code_error": headline["code_error"],
        "edit_world_edit_length": headline["world_edit_length"],
        "edit_image_psnr_vs_world": headline["image_psnr_vs_world"],
        "edit_tried": headline["tried"],
        "edit_by_attribute": headline["by_attribute"],
        "edit_alpha": alphas[0],
        "edit_direction": library.direction,
        "edit_by_alpha": {str(a): rates(by_attribute) for a, by_attribute in sweep.items()},
        "round_trip_all_kept": float(round_trip_kept),
        "round_trip_all_kept_pixel_reader": float(pixel_kept),
        "round_trip_residual": float((clf.normalize(z_rec) - clf.normalize(z)).norm(dim=1).mean()),
        "test_faces": len(images),
        "edit_grid": str(out / "edits.png"),
    }


def rates(by_attribute: dict) -> dict:
    """Edit success and its variants at one α, over every target, with the counts by attribute."""
    tried = sum(b["edited"] for b in by_attribute.values())
    share = {k: sum(b[k] for b in by_attribute.values()) / max(1, tried) for k in COUNTS}
    means = {k: sum(b[k] * b["edited"] for b in by_attribute.values()) / max(1, tried) for k in DISTANCES}
    return {**share, **means, "tried": tried, "by_attribute": by_attribute}


@dataclass
class Sources:
    """The held-out faces an edit starts from: their codes and how each reader reads them."""

    z: torch.Tensor  # z_sem (N, d)
    x_T: torch.Tensor  # their stochastic codes
    read: torch.Tensor  # the classifiers' reads (N, 40) of the source faces
    read_rec: torch.Tensor  # … of their unedited round trip (what the codec alone changes)
    pixel_reader: LinearProbe  # logistic regressions on the pixels, fitted on the train faces
    pixel_read: torch.Tensor  # its reads (N, 40) of the source images
    index: torch.Tensor  # each face's index in the SynthTalk world (its counterfactuals: ``world_edits``)


def edit_success(ae: DiffusionAutoencoder, clf: AttributeClassifier, library: AttributeLibrary, src: Sources,
                 good: list[str], alpha: float, steps: int) -> dict:  # fmt: skip
    """Edit every face lacking a target attribute by α, decode, re-encode → counts by target attribute.

    A success is the target on by the classifier with every other well-predicted attribute as expected:
    unchanged, except those the target turns off (``fet.editing.implications``: blond hair is no longer
    brown). Variants beside it:
    - ``success_90pct_kept`` asks for ≥ 90% of the others as expected (what runs before this counted as
      success; with 11 or more others it lets one change);
    - ``success_vs_reconstruction`` expects the others as the classifiers read them on the unedited round
      trip, which leaves out what the codec alone changes;
    - ``success_in_z_sem`` reads the edited code itself, before decoding: what the edit step achieves;
    - ``success_pixel_reader`` reads the source and the edited images with logistic regressions on the
      pixels, a reader that never sees the semantic encoder;
    - ``success_world`` reads, the same way, the world's own render of the edited face (``world_edits``):
      what a perfect edit would score, the ceiling the classifiers leave to this measure;
    - ``success_world_pixel_reader`` reads the world's render with the pixel reader: the ceiling a reader
      that never sees the semantic encoder leaves;
    - ``success_vs_world`` expects the others as the classifiers read the world's render: the edit does
      what the perfect edit does, as far as the classifiers see (a perfect edit scores 100%).
    Distances, in normalised z_sem (‖·‖ ≈ √d): ``decode_residual`` from the edited code to the re-encoded
    edit; ``edit_length`` how far the edit moved the code; ``world_edit_length`` how far the world's edit
    moves it (source code → code of the world's render); ``code_error`` from the edited code to the code
    of the world's render. ``image_psnr_vs_world`` compares the decoded edits with the world's renders.
    """
    by_attribute = {}
    for attr in [a for a in EDIT_TARGETS if a in good]:
        i = ATTRIBUTE_INDEX[attr]
        absent = (~src.read[:, i]).nonzero().flatten()
        if len(absent) == 0:
            continue
        edited = edit_semantic(src.z[absent], clf, {attr: alpha}, library)
        images = ae.render(src.x_T[absent], edited, steps)
        z_after = ae.encode(images)
        world = world_edits(src.index[absent], attr, images.shape[-1])
        z_world = ae.encode(world)
        read_world = clf(z_world) > 0
        others = [ATTRIBUTE_INDEX[a] for a in good if a != attr]
        read_after, expected = clf(z_after) > 0, implied_labels(src.read[absent], attr)
        pixel_expected = implied_labels(src.pixel_read[absent], attr)
        readers = {  # name: (what it reads on the edit, what it expects of the others)
            "success": (read_after, expected),
            "success_vs_reconstruction": (read_after, implied_labels(src.read_rec[absent], attr)),
            "success_in_z_sem": (clf(edited) > 0, expected),
            "success_pixel_reader": (src.pixel_reader.reads(images.flatten(1).numpy()), pixel_expected),
            "success_world": (read_world, expected),
            "success_world_pixel_reader": (src.pixel_reader.reads(world.flatten(1).numpy()), pixel_expected),
            "success_vs_world": (read_after, read_world),
        }  # fmt: skip
        counts = {name: int((after[:, i] & (after[:, others] == expected[:, others]).all(1)).sum())
                  for name, (after, expected) in readers.items()}  # fmt: skip
        same = read_after[:, others] == expected[:, others]
        edited_n, z_n, after_n = clf.normalize(edited), clf.normalize(src.z[absent]), clf.normalize(z_after)
        world_n = clf.normalize(z_world)
        by_attribute[attr] = {
            "edited": len(absent),
            "target_on": int(read_after[:, i].sum()),
            **counts,
            "success_90pct_kept": int((read_after[:, i] & (same.float().mean(1) >= 0.9)).sum()),
            "others_changed": others_changed(read_after, expected, others),
            "target_on_world": int(read_world[:, i].sum()),
            "others_changed_world": others_changed(read_world, expected, others),
            "edit_length": float((edited_n - z_n).norm(dim=1).mean()),
            "decode_residual": float((after_n - edited_n).norm(dim=1).mean()),
            "world_edit_length": float((world_n - z_n).norm(dim=1).mean()),
            "code_error": float((world_n - edited_n).norm(dim=1).mean()),
            "image_psnr_vs_world": psnr(images, world),
        }
    return by_attribute


def edit_grid(ae: DiffusionAutoencoder, clf: AttributeClassifier, library: AttributeLibrary, images: torch.Tensor,
              rec: torch.Tensor, src: Sources, targets: list[str], alpha: float, steps: int,
              rows: int = 6) -> Image.Image:  # fmt: skip
    """A picture of the edits: one row per test face; the face, its round trip, then for each target the
    decoded edit beside the world's own render of it. Enlarged 4x."""
    k = min(rows, len(images))
    columns = [images[:k], rec[:k]]
    for attr in targets:
        columns.append(ae.render(src.x_T[:k], edit_semantic(src.z[:k], clf, {attr: alpha}, library), steps))
        columns.append(world_edits(src.index[:k], attr, images.shape[-1]))
    grid = image_grid(torch.stack(columns, 1).flatten(0, 1), rows=k)
    return grid.resize((grid.width * 4, grid.height * 4), Image.NEAREST)


def others_changed(read: torch.Tensor, expected: torch.Tensor, others: list[int]) -> dict[str, int]:
    """{attribute: how many edits read it other than expected}, over the attributes ``others``."""
    return {CELEBA_ATTRIBUTES[j]: int(n) for j, n in zip(others, (read[:, others] != expected[:, others]).sum(0)) if n}


@torch.no_grad()
def talker_landmark_error(out: Path, shards: str, clips: int, every: int, steps: int) -> dict:
    """Frame 0 of each test clip as the reference; every ``every``-th frame's landmarks drive the talker."""
    ae = DiffusionAutoencoder.load(str(out / "stage1"))
    talker = load_talker(str(out / "stage3"))
    size = ae.cfg.image_size
    rows = list(read_rows(shards, "clips", "test", ["clip_id", "split", "frames", "landmarks"]))[:clips]
    gen_err, real_err, still, total = [], [], [], 0
    with FaceLandmarkDetector() as det:
        for row in rows:
            frames = np.stack([decode_square(b, size) for b in row["frames"]])
            lms = unpack(row["landmarks"])
            idx = np.arange(0, len(frames), every)
            ref = to_model_range(frames[:1])
            ref_map = landmark_maps(lms[:1], size)
            z = ae.encode(ref)
            x_T = ddim_invert(talker.denoise_fn(z, talker.guidance(ref_map, ref_map)), ae.codec.encode(ref), steps,
                              talker.cfg)  # fmt: skip
            maps = landmark_maps(lms[idx], size)
            k = len(idx)
            total += k
            still += [float(np.linalg.norm(lms[t][:, :2] - lms[0][:, :2], axis=-1).mean()) for t in idx]
            fn = talker.denoise_fn(z.expand(k, -1), talker.guidance(maps, ref_map.expand(k, -1, -1, -1)))
            gen = ae.codec.decode(ddim_sample(fn, x_T.expand(k, -1, -1, -1), steps, talker.cfg))
            for img, real, t in zip(to_uint8(gen), frames[idx], idx):
                for pic, errs in ((img, gen_err), (real, real_err)):
                    found = det.detect(pic)
                    if found is not None:
                        errs.append(float(np.linalg.norm(found.points[:, :2] - lms[t][:, :2], axis=-1).mean()))
    return {
        "stage3_landmark_error_px": float(np.mean(gen_err)) * size if gen_err else float("nan"),
        "stage3_detector_floor_px": float(np.mean(real_err)) * size if real_err else float("nan"),
        "stage3_no_motion_px": float(np.mean(still)) * size,  # error of repeating the reference frame
        "stage3_frames_with_face": len(gen_err),
        "stage3_frames": total,
        "image_size": size,
    }


def mouth_correlation(out: Path, shards: str) -> float:
    cfg = load_config(TrainJobConfig, "configs/train/ray/audio_tiny.yaml", [f"data.shards={shards}"])
    task = build_task(cfg)
    from fet.bundle import load_audio_models

    a2m, a2p = load_audio_models(str(out / "audio"))
    from fet.training.tasks.audio import AudioStageModel

    rows = list(read_rows(shards, "clips", "test", task.columns))
    return task.report(AudioStageModel(a2m, a2p), rows).metrics["val_mouth_opening_corr"]


def train_all(args: argparse.Namespace, out: Path, shards: str) -> dict:
    """SynthTalk → shards → the four stages → stage-1 throughput with 1 and 2 workers."""
    t0 = time.time()
    generate(out / "synthtalk", images=args.images, clips=args.clips, size=args.size, seconds=4.0, seed=WORLD_SEED,
             progress=True)  # fmt: skip
    pre = load_config(PreprocessConfig, "configs/data/synthtalk.yaml", [f"out={shards}", f"size={args.size}"])
    pre.sources = [SourceConfig(kind="synthtalk", root=str(out / "synthtalk" / "clips")),
                   SourceConfig(kind="synthtalk_images", root=str(out / "synthtalk" / "images"))]  # fmt: skip
    run_serial(pre)
    data_seconds = time.time() - t0

    from ray_jobs.common import init_ray

    init_ray()
    s1 = str(out / "stage1")
    runs = {
        "stage1": train("stage1", out, shards, [f"steps={args.steps1}", f"task.model.image_size={args.size}",
                                                *args.stage1_set]),
        "stage2": train("stage2", out, shards, [f"steps={args.steps2}", f"task.autoencoder={s1}"]),
        "audio": train("audio", out, shards, [f"steps={args.steps_audio}"]),
        "stage3": train("stage3", out, shards, [f"steps={args.steps3}", f"task.autoencoder={s1}"]),
    }  # fmt: skip
    train_seconds = sum(r["bench_seconds"] for r in runs.values())
    throughput = {}
    for workers in (1, 2):
        r = train("stage1", out, shards, [f"name=throughput-{workers}w", f"steps={args.throughput_steps}",
                                          f"scaling.num_workers={workers}", f"out={out / f'tp{workers}'}",
                                          "mlflow.register=false", f"task.model.image_size={args.size}",
                                          "task.eval_steps=2"])  # fmt: skip
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
        hist = client.get_metric_history(r["mlflow_run_id"], "samples_per_second")
        throughput[f"stage1_samples_per_second_{workers}w"] = sorted(hist, key=lambda m: m.step)[-1].value
    return {
        "budget_cpu_minutes": 2 * train_seconds / 60,
        "train_wall_minutes": {k: r["bench_seconds"] / 60 for k, r in runs.items()},
        "data_seconds": data_seconds,
        **throughput,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/bench_train"))
    p.add_argument("--images", type=int, default=3000, help="SynthTalk faces (train, val and test splits)")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps1", type=int, default=2500)
    p.add_argument("--steps2", type=int, default=1000)
    p.add_argument("--steps-audio", type=int, default=400)
    p.add_argument("--steps3", type=int, default=600)
    p.add_argument("--throughput-steps", type=int, default=30)
    p.add_argument("--eval-steps", type=int, default=20, help="DDIM steps of the held-out checks")
    p.add_argument("--test-faces", type=int, default=64,
                   help="held-out faces for PSNR, AUROC and edit success (0: the whole test split)")  # fmt: skip
    p.add_argument(
        "--stage1-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override of the stage-1 job config, e.g. task.timesteps=high_noise (repeatable)",
    )
    p.add_argument("--alpha", type=float, nargs="+", default=None,
                   help="edit strengths to measure edit success at (the first is the headline number); "
                        "default: the α stage 2 exported")  # fmt: skip
    p.add_argument(
        "--direction",
        choices=EDIT_DIRECTIONS,
        default=None,
        help="edit direction to measure edit success with; default: the one stage 2 exported",
    )
    p.add_argument("--measure-only", action="store_true",
                   help="measure the stages already trained in --out again (after a change to the measures); "
                        "the training numbers are kept from its benchmark.json")  # fmt: skip
    args = p.parse_args()
    out = args.out.resolve()
    shards = str(out / "shards")
    results = json.loads((out / "benchmark.json").read_text()) if args.measure_only else train_all(args, out, shards)
    results |= {
        **image_metrics(out, shards, args.test_faces or None, args.eval_steps, args.alpha, args.direction),
        "stageA_mouth_opening_corr": mouth_correlation(out, shards),
        **talker_landmark_error(out, shards, 4, 5, args.eval_steps),
    }
    (out / "benchmark.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
