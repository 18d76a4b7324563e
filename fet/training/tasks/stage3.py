"""Stage 3 as a distributed task: talker denoiser + PoseGuider on clip shards, E_sem and codec frozen
(paper Eq. 9). An example is a clip; each batch entry is a random (target, reference) frame pair of one
clip, drawn anew every epoch. Each clip yields ``pairs_per_clip`` examples per epoch.

E_sem and the codec are frozen. At the paper scale they are 86% of the FLOPs of a step that runs them
(``benchmarks/stage3_step_speed.py``), so where the clips are kept (``data.cache: true``) each frame's z_sem
and latent are computed once, when its clip is decoded, and a step runs only the talker: a clip keeps its
codes, not its frames. Streamed (``data.cache: false``, the paper config), a clip is read again every epoch
and gives only ``pairs_per_clip`` pairs, so only the drawn frames are decoded and the step runs the frozen
encoders on them: encoding every frame of a 20 s HDTF segment (500 frames) for its 8 pairs would be 62 times
that encoder work (T / pairs), and decode 31 times the frames."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from fet.autoencoder import DiffusionAutoencoder
from fet.bundle import save_talker
from fet.config import from_dict
from fet.data.shards import unpack
from fet.diffusion.ddim import training_scheduler
from fet.images import encode_png, image_grid
from fet.landmarks.face_mesh import NUM_LANDMARKS
from fet.landmarks.landmark_map import landmark_maps
from fet.lineage import encoder_digest, write_lineage
from fet.models.pose_guider import PoseGuiderConfig
from fet.models.talker import TalkerDenoiser
from fet.training.losses import diffusion_loss
from fet.training.stage3 import TalkingFrames, sample_pairs, stage3_loss, talker_param_groups, talker_samples
from fet.training.tasks.base import Report, StageModel, TrainingTask
from fet.training.tasks.frames import decode_square, to_model_range


@dataclass
class Stage3Section:
    autoencoder: str = "outputs/model"  # stage-1 component directory: frozen E_sem, denoiser init
    guider: dict[str, Any] = field(default_factory=dict)  # PoseGuiderConfig overrides
    # learning rate of the new PoseGuider relative to optim.lr (the denoiser starts trained, the guider
    # from zero outputs; at 1 the guider's residuals stay too small to move the mouth for many steps)
    guider_lr_scale: float = 10.0
    pairs_per_clip: int = 8
    eval_steps: int = 20
    encode_batch: int = 32  # frames per pass of the frozen encoders when a clip is decoded


@dataclass
class Clip:
    frames: np.ndarray  # (T, S, S, 3) uint8
    landmarks: np.ndarray  # (T, 478, 3)


@dataclass
class StreamedClip:
    """A training clip as streamed: its frames still encoded (JPEG/PNG bytes), decoded when drawn."""

    frames: list[bytes]
    landmarks: np.ndarray  # (T, 478, 3)


@dataclass
class EncodedClip:
    """A training clip as stage 3 uses it: every frame's frozen codes and landmarks, on the CPU in fp32."""

    z_sem: torch.Tensor  # (T, z_dim), E_sem of each frame (the frame as a reference)
    latents: torch.Tensor  # (T, C, h, w), the codec's latent of each frame (the frame as a target)
    landmarks: np.ndarray  # (T, 478, 3)


class Stage3Model(StageModel):
    def __init__(self, talker: TalkerDenoiser, autoencoder: DiffusionAutoencoder, guider_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.talker, self.guider_lr_scale = talker, guider_lr_scale
        # frozen and shared with the task: kept out of the module tree, so DeepSpeed (ZeRO-3 partitioning
        # included), the optimizer and EMA only ever see the talker
        self.frozen = [autoencoder.requires_grad_(False)]
        self.noise = training_scheduler(talker.cfg)

    @property
    def exported(self) -> TalkerDenoiser:
        return self.talker

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return talker_param_groups(self.talker, lr, self.guider_lr_scale)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        """Eq. 9 on a batch of ``Stage3Task.collate``: the precomputed codes of kept clips, or the ``target``
        and ``reference`` frames of streamed ones, which the frozen encoders take here."""
        maps = {"landmark_map": batch["target_map"], "reference_map": batch["reference_map"]}
        if "x_0" in batch:
            return diffusion_loss(self.talker, batch["x_0"], batch["z_sem"], self.noise, generator, **maps), {}
        loss = stage3_loss(self.talker, self.frozen[0], batch["target"], batch["reference"],
                           batch["target_map"], batch["reference_map"], self.noise, generator)  # fmt: skip
        return loss, {}


class Stage3Task(TrainingTask[Stage3Section]):
    stage = "stage3"
    kind = "clips"
    columns: ClassVar[list[str]] = ["clip_id", "split", "frames", "landmarks"]
    kept_columns: ClassVar[list[str]] = ["split", "num_frames"]
    section = Stage3Section

    def __init__(self, job) -> None:
        super().__init__(job)
        self.autoencoder = DiffusionAutoencoder.load(self.cfg.autoencoder).requires_grad_(False)
        self.lineage = encoder_digest(self.cfg.autoencoder)  # what the export records it was trained on
        self.guider_cfg = from_dict(PoseGuiderConfig, self.cfg.guider, where="task.guider")
        self.size = self.autoencoder.cfg.image_size

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        self.autoencoder.to(device)
        if dtype is not None:  # E_sem and the codec run every step: in the training precision. The stage-1
            # denoiser stays fp32: it is only the talker's initial weights.
            self.autoencoder.encoder.to(dtype)
            self.autoencoder.codec.to(dtype)

    def build(self) -> Stage3Model:
        talker = TalkerDenoiser.from_stage1(self.autoencoder.denoiser, self.guider_cfg).train()
        return Stage3Model(talker, self.autoencoder, self.cfg.guider_lr_scale)

    def clip(self, row: dict[str, Any]) -> Clip:
        return Clip(np.stack([decode_square(b, self.size) for b in row["frames"]]), unpack(row["landmarks"]))

    @torch.no_grad()
    def encode(self, clip: Clip) -> EncodedClip:
        """Every frame through the frozen E_sem and codec, where they live and in their precision."""
        ae, z, latents = self.autoencoder, [], []
        for i in range(0, len(clip.frames), self.cfg.encode_batch):
            x = to_model_range(clip.frames[i : i + self.cfg.encode_batch])
            z.append(ae.encoder(x).float().cpu())
            latents.append(ae.codec.encode(x).float().cpu())
        return EncodedClip(torch.cat(z), torch.cat(latents), clip.landmarks)

    @property
    def examples_per_row(self) -> int:
        return self.cfg.pairs_per_clip

    def kept_bytes(self, rows: list[dict[str, Any]]) -> int:
        # per frame, all fp32: z_sem, the codec's latent and the landmarks (a clip is kept once for its pairs)
        cfg = self.autoencoder.cfg
        per_frame = (cfg.z_dim + cfg.latent_channels * cfg.latent_size**2 + NUM_LANDMARKS * 3) * 4
        return sum(int(r["num_frames"]) for r in rows) * per_frame

    def examples(self, rows: list[dict[str, Any]]) -> list[EncodedClip] | list[StreamedClip]:
        """Each row's clip ``pairs_per_clip`` times: encoded once when the clips are kept (``data.cache``),
        else as read, its frames decoded only when a pair draws them."""
        if self.job.data.cache:
            clips = [self.encode(self.clip(r)) for r in rows]
        else:
            clips = [StreamedClip(list(r["frames"]), unpack(r["landmarks"])) for r in rows]
        return [c for c in clips for _ in range(self.cfg.pairs_per_clip)]

    def collate(self, examples: list[EncodedClip] | list[StreamedClip], rng: np.random.Generator):
        """A (target, reference) frame pair of each example's clip → the codes of the pairs (kept clips), or
        their frames in [-1, 1] as ``target`` and ``reference`` (streamed: the step encodes them)."""
        tgt = [int(rng.integers(len(c.landmarks))) for c in examples]
        ref = [int(rng.integers(len(c.landmarks))) for c in examples]
        maps = {
            "target_map": landmark_maps(np.stack([c.landmarks[t] for c, t in zip(examples, tgt)]), self.size),
            "reference_map": landmark_maps(np.stack([c.landmarks[r] for c, r in zip(examples, ref)]), self.size),
        }
        if isinstance(examples[0], EncodedClip):
            return {"x_0": torch.stack([c.latents[t] for c, t in zip(examples, tgt)]),
                    "z_sem": torch.stack([c.z_sem[r] for c, r in zip(examples, ref)]), **maps}  # fmt: skip
        return {"target": self._decoded(examples, tgt), "reference": self._decoded(examples, ref), **maps}

    def _decoded(self, clips: list[StreamedClip], drawn: list[int]) -> torch.Tensor:
        return to_model_range(np.stack([decode_square(c.frames[i], self.size) for c, i in zip(clips, drawn)]))

    @torch.no_grad()
    def report(self, model: TalkerDenoiser, rows: list[dict[str, Any]]) -> Report:
        clips = [self.clip(r) for r in rows]
        bounds = np.cumsum([0] + [len(c.frames) for c in clips])
        data = TalkingFrames(
            to_model_range(np.concatenate([c.frames for c in clips])),
            np.concatenate([c.landmarks for c in clips]),
            np.concatenate([np.tile([a, b], (b - a, 1)) for a, b in itertools.pairwise(bounds)]),
        )
        pairs = sample_pairs(data, min(6, len(data.frames)), np.random.default_rng(self.job.seed + 1))
        grid, value = talker_samples(model.eval(), self.autoencoder, data, pairs, self.cfg.eval_steps)
        return Report({"val_target_psnr_db": value}, {"samples_stage3.png": encode_png(image_grid(grid, rows=4))})

    def export(self, model: TalkerDenoiser, out: str) -> None:
        save_talker(out, model)
        write_lineage(out, self.cfg.autoencoder, self.lineage)
