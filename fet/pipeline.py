"""FaceEditTalkerPipeline: reference image + speech (+ attribute edits) → talking-head mp4 (paper Alg. 4).

    reference ─ MediaPipe → aligned crop, landmarks, own head mesh, reference map K_ref
              ─ E_sem → z_sem ──edit (Eq. 1)──→ z'_sem
              ─ DDIM-invert with ε(·, ·, z_sem, K_ref) → Z_T           (once, shared by every frame)
    speech    ─ audio encoder → Audio2Mesh offsets + Audio2Pose motion → projected landmarks → K_1..K_T
    frame i   = D_img(DDIM-sample(Z_T; ε(·, ·, z'_sem, K_i)))          (Eq. 6), batched

Inference only. Frame i's stochastic terms (η > 0) come from a generator seeded by (seed, i), so a
frame is the same in any batch. Frames stream into the mp4 writer batch by batch and audio features
are computed in bounded chunks, so memory does not grow with the length of the speech beyond the
per-frame landmarks. With ``hold_first_frame`` the first frame uses the reference landmarks and, with
no edit, reconstructs the reference.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from fet.audio.load import SAMPLE_RATE, check_speech, load_audio, num_frames
from fet.bundle import Bundle, load_bundle
from fet.config import ConfigError, from_dict
from fet.diffusion.ddim import ddim_invert, ddim_sample
from fet.editing.attributes import ParsedEdits
from fet.editing.edit import edit_semantic, parse_edits
from fet.images import ImageError, load_image, to_tensor, to_uint8
from fet.landmarks.align import DEFAULT_SCALE, crop_square, face_box
from fet.landmarks.detector import FaceLandmarkDetector, FaceLandmarks, NoFaceError
from fet.landmarks.face_mesh import NUM_LANDMARKS
from fet.landmarks.head_mesh import animate, head_mesh
from fet.landmarks.landmark_map import landmark_maps
from fet.media.mp4 import Mp4Writer, check_destination

ImageInput = Image.Image | bytes | str | os.PathLike | np.ndarray
AudioInput = bytes | str | os.PathLike | np.ndarray
Progress = Callable[[int, int], None]  # (frames done, frames total)


@dataclass
class PipelineConfig:
    fps: int = 25
    steps: int = 20  # DDIM steps for inversion and for every frame
    batch_size: int = 8  # frames per denoiser batch
    eta: float = 0.0  # 0: deterministic DDIM; > 0 adds per-frame seeded noise
    max_seconds: float = 120.0  # longest speech accepted
    min_seconds: float = 0.2
    detection_size: int = 256  # MediaPipe runs on the aligned crop at this size
    crop_scale: float = DEFAULT_SCALE
    pose_style: int = 0
    hold_first_frame: bool = True
    # how far the landmarks move the face from the reference: 1 is the talker as trained; > 1 amplifies
    # the PoseGuider's change of its residuals (a small model that learned the mouth weakly shows it)
    landmark_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.landmark_scale > 0:
            raise ConfigError(f"landmark_scale={self.landmark_scale}: expected a positive factor (1: as trained)")


@dataclass
class Reference:
    """A prepared and inverted reference face; keep it to animate or edit the same face cheaply."""

    image: torch.Tensor  # (1, 3, S, S) aligned crop in [-1, 1]
    landmarks: FaceLandmarks  # of the aligned crop
    mesh: np.ndarray  # (478, 3) the face's own head-frame mesh, cm
    reference_map: torch.Tensor  # (1, 3, S, S)
    reference_features: list[torch.Tensor]  # PoseGuider features of the reference map
    z_sem: torch.Tensor  # (1, z_dim)
    x_T: torch.Tensor  # (1, C, h, w)
    notes: list[str] = field(default_factory=list)


@dataclass
class TalkingHead:
    num_frames: int
    fps: int
    audio_seconds: float
    edits: ParsedEdits
    landmarks: np.ndarray  # (T, 478, 2) in [0, 1]
    path: str | None = None  # the mp4, when an output was given
    frames: np.ndarray | None = None  # (T, S, S, 3) uint8, when no output was given
    notes: list[str] = field(default_factory=list)


def frame_generator(seed: int, index: int) -> torch.Generator:
    """The generator of frame ``index``: independent of batching and of the other frames."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))


class FaceEditTalkerPipeline:
    def __init__(self, bundle: Bundle, config: PipelineConfig | None = None) -> None:
        self.bundle, self.cfg = bundle, config or PipelineConfig()
        self.image_cfg = bundle.image_cfg
        self.device = next(bundle.talker.parameters()).device
        self._detector: FaceLandmarkDetector | None = None

    @classmethod
    def from_bundle(cls, uri: str, device: str | torch.device = "cpu", **overrides) -> FaceEditTalkerPipeline:
        """Load every component from one bundle (local or ``s3://``); ``overrides`` set PipelineConfig fields
        on top of the bundle's own pipeline defaults."""
        bundle = load_bundle(uri, device)
        cfg = from_dict(PipelineConfig, {**bundle.pipeline_defaults, **overrides}, where=f"{uri} pipeline settings")
        return cls(bundle, cfg)

    @property
    def detector(self) -> FaceLandmarkDetector:
        if self._detector is None:
            self._detector = FaceLandmarkDetector(self.bundle.face_landmarker)
        return self._detector

    # -- reference ----------------------------------------------------------------------------------------
    def align(self, image: ImageInput, name: str = "image") -> tuple[np.ndarray, FaceLandmarks, list[str]]:
        """Any image → (aligned crop (S, S, 3) uint8, its landmarks, notes). Raises NoFaceError."""
        rgb = _rgb(image)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ImageError(f"{name}: expected an RGB image, got an array of shape {rgb.shape}")
        notes = []
        face = self.detector.require(rgb, name)
        if face.num_faces > 1:
            notes.append(f"{name}: {face.num_faces} faces found; using the largest")
        box = face_box(face.points, rgb.shape[1], rgb.shape[0], self.cfg.crop_scale)
        det = crop_square(rgb, box, self.cfg.detection_size)
        crop_face = self.detector.detect(det)
        if crop_face is None:
            raise NoFaceError(f"{name}: the face found in the image is lost after cropping; expected a clearer face")
        size = self.image_cfg.image_size
        crop = det if size == det.shape[0] else crop_square(det, (0, 0, det.shape[0]), size)
        return crop, crop_face, notes

    def _steps(self, steps: int | None) -> int:
        return self.cfg.steps if steps is None else steps  # 0 reaches DDIM, which refuses it

    @torch.no_grad()
    def encode(
        self,
        image: ImageInput,
        landmarks: FaceLandmarks | None = None,
        steps: int | None = None,
        name: str | None = None,
    ) -> Reference:
        """Prepare and invert a reference face. With ``landmarks`` the image is taken as an already aligned
        square crop with those landmarks (e.g. a SynthTalk or preprocessed frame); no detection runs.
        Errors name the image by ``name``, else its path, else "image"."""
        name = name or _input_name(image, "image")
        notes: list[str] = []
        if landmarks is None:
            crop, landmarks, notes = self.align(image, name)
        else:
            rgb = _rgb(image)
            if rgb.shape[0] != rgb.shape[1]:
                raise ImageError(f"{name}: with given landmarks the image must be a square crop, got {rgb.shape[:2]}")
            size = self.image_cfg.image_size
            crop = crop_square(rgb, (0, 0, rgb.shape[0]), size) if rgb.shape[:2] != (size, size) else rgb
        x = to_tensor(Image.fromarray(crop)).to(self.device)  # (1, 3, S, S)
        b = self.bundle
        ref_map = landmark_maps(landmarks.points[None], self.image_cfg.image_size).to(self.device)
        ref_feats = b.talker.pose_guider.encode_reference(ref_map)
        z = b.semantic_encoder(x)
        guidance = b.talker.guidance(ref_map, ref_feats)
        x_T = ddim_invert(b.talker.denoise_fn(z, guidance), b.codec.encode(x), self._steps(steps), self.image_cfg)
        mesh = head_mesh(landmarks.points, landmarks.transform)
        return Reference(x, landmarks, mesh, ref_map, ref_feats, z, x_T, notes)

    def parse(self, edits: dict[str, float] | None = None, text: str | None = None) -> ParsedEdits:
        return parse_edits(self.bundle.library, self.bundle.classifier, edits, text)

    @torch.no_grad()
    def edit(
        self,
        reference: Reference,
        edits: dict[str, float] | None = None,
        text: str | None = None,
        steps: int | None = None,
    ) -> tuple[np.ndarray, ParsedEdits]:
        """The reference with edited attributes, in its own pose → ((S, S, 3) uint8, parsed edits)."""
        parsed = self.parse(edits, text)
        frames = self.render([reference], reference.landmarks.points[None, :, :2], [parsed.edits], steps=steps)
        return frames[0], parsed

    # -- motion ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def motion(self, audio: np.ndarray, reference: Reference, pose_style: int | None = None) -> np.ndarray:
        """16 kHz speech → (T, 478, 2) landmarks in [0, 1] of the aligned crop, one per video frame."""
        b = self.bundle
        T = num_frames(audio.size, self.cfg.fps)
        feats = b.audio_encoder(audio, T).to(self.device)  # (T, D)
        mesh = torch.from_numpy(reference.mesh[:468]).float().to(self.device)
        offsets = b.audio2mesh.generate(feats, mesh).float().cpu().numpy()  # (T, 468, 3)
        style = self.cfg.pose_style if pose_style is None else pose_style
        poses = b.audio2pose.generate(feats, style).float().cpu().numpy()  # (T, 6)
        if self.cfg.hold_first_frame:
            offsets[0], poses[0] = 0.0, 0.0
        return animate(reference.mesh, offsets, poses, reference.landmarks.transform)

    # -- rendering --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def render(
        self,
        references: Sequence[Reference],
        points: np.ndarray,
        edits: Sequence[dict[str, float]] | None = None,
        *,
        indices: Sequence[int] | None = None,
        steps: int | None = None,
        eta: float = 0.0,
        seed: int = 0,
    ) -> np.ndarray:
        """One batch of frames: ``references[i]`` with landmarks ``points[i]`` (478, 2) in [0, 1] of its aligned
        crop and attribute edits ``edits[i]`` ({attribute: α}, already validated) → (B, S, S, 3) uint8.

        A reference's own landmarks give its (edited) photo; landmarks from ``motion`` or from another video
        make it talk. References may differ within a batch (Serve batches several requests). ``indices``
        pick each frame's noise when ``eta > 0``, so a frame does not depend on the batch it is in.
        """
        n, b = len(references), self.bundle
        points = np.asarray(points, np.float32)
        if n == 0 or points.shape != (n, NUM_LANDMARKS, 2):
            raise ValueError(f"points: expected ({n}, {NUM_LANDMARKS}, 2) landmarks in [0, 1], one per reference, "
                             f"got {points.shape}")  # fmt: skip
        edits = [{}] * n if edits is None else list(edits)
        if len(edits) != n:
            raise ValueError(f"edits: expected one dict per reference ({n}), got {len(edits)}")
        indices = list(range(n)) if indices is None else list(indices)
        one = all(r is references[0] for r in references) and all(e == edits[0] for e in edits)
        group = references[:1] if one else references  # one face and one edit: compute its codes once
        features = [torch.cat(level) for level in zip(*[r.reference_features for r in group])]
        maps = landmark_maps(points, self.image_cfg.image_size).to(self.device)
        guidance = b.talker.guidance(maps, features)
        if self.cfg.landmark_scale != 1.0:
            own = b.talker.guidance(torch.cat([r.reference_map for r in group]), features)
            guidance = guidance.amplified(own, self.cfg.landmark_scale)
        z = torch.cat([edit_semantic(r.z_sem, b.classifier, e, b.library) for r, e in zip(group, edits)])
        x_T = torch.cat([r.x_T for r in group])
        if one:
            z, x_T = z.expand(n, -1), x_T.expand(n, -1, -1, -1)
        gens = [frame_generator(seed, i) for i in indices] if eta > 0 else None
        latent = ddim_sample(
            b.talker.denoise_fn(z, guidance), x_T, self._steps(steps), self.image_cfg, eta=eta, generators=gens
        )
        return to_uint8(b.codec.decode(latent).clamp(-1, 1))  # (B, S, S, 3)

    def __call__(
        self,
        image: ImageInput | Reference,
        audio: AudioInput,
        edits: dict[str, float] | None = None,
        text: str | None = None,
        *,
        output: str | None = None,
        seed: int = 0,
        steps: int | None = None,
        batch_size: int | None = None,
        eta: float | None = None,
        pose_style: int | None = None,
        reference_landmarks: FaceLandmarks | None = None,
        callback: Progress | None = None,
    ) -> TalkingHead:
        """Generate the talking head. With ``output`` (path or ``s3://`` URI) frames stream into an mp4
        (H.264 + AAC at ``fps``) that appears only when complete; without it frames are returned."""
        parsed = self.parse(edits, text)  # validate edits and the destination before any expensive work
        if output is not None:
            check_destination(output)
        for name, value in (("steps", steps), ("batch_size", batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name}={value}: expected 1 or more (None: the pipeline's setting)")
        if isinstance(audio, np.ndarray):
            speech = np.asarray(audio, np.float32).reshape(-1)
            if speech.size > self.cfg.max_seconds * SAMPLE_RATE:
                raise ValueError(
                    f"audio: {speech.size / SAMPLE_RATE:.1f} s, longer than the maximum {self.cfg.max_seconds:g} s"
                )
        else:
            speech = load_audio(audio, max_seconds=self.cfg.max_seconds)
        check_speech(speech, self.cfg.min_seconds, name=_input_name(audio, "audio"))
        ref = image if isinstance(image, Reference) else self.encode(image, reference_landmarks, steps)
        points = self.motion(speech, ref, pose_style)
        T, bs = points.shape[0], self.cfg.batch_size if batch_size is None else batch_size
        eta = self.cfg.eta if eta is None else eta
        S = self.image_cfg.image_size
        writer = Mp4Writer(output, S, S, self.cfg.fps, SAMPLE_RATE) if output else None
        kept: list[np.ndarray] = []
        try:
            for start in range(0, T, bs):
                idx = list(range(start, min(T, start + bs)))
                frames = self.render([ref] * len(idx), points[idx], [parsed.edits] * len(idx), indices=idx, steps=steps,
                                     eta=eta, seed=seed)  # fmt: skip
                if writer is not None:
                    writer.write(frames)
                else:
                    kept.append(frames)
                if callback is not None:
                    callback(idx[-1] + 1, T)
            if writer is not None:
                writer.set_audio(speech)
                writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return TalkingHead(
            T,
            self.cfg.fps,
            speech.size / SAMPLE_RATE,
            parsed,
            points,
            output,
            np.concatenate(kept) if kept else None,
            list(ref.notes),
        )


def _input_name(value: object, default: str) -> str:
    """How errors name an input: its path or URI when it is one, else ``default``."""
    return str(value) if isinstance(value, str | os.PathLike) else default


def _rgb(image: ImageInput) -> np.ndarray:
    """Any image input → (H, W, 3) uint8 RGB array (decoded by content for files and bytes)."""
    if isinstance(image, np.ndarray):
        return image
    source = bytes(image) if isinstance(image, bytes | bytearray) else image
    return np.asarray(load_image(str(source) if isinstance(source, os.PathLike) else source))
