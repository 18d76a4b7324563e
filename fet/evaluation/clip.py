"""One test clip: generate it from its first frame and its audio with a bundle, then measure it.

    real clip (shard row) ── frame 0 + its landmarks ──┐
                         └─ audio ──────────────────────┴─ pipeline ─→ generated clip (+ one per edit)
    metrics: PSNR, SSIM (generated vs real, at the bundle's size); CPBD; M-LMD, F-LMD and TL-ID, TG-ID
    (dlib, at ``eval_size``); SyncNet and the weight-free sync score (generated, and the real clip as
    the reference row); Inception features for FID, pooled over clips by the caller.

A metric whose network is unavailable is skipped with the reason (``unavailable``), never reported as
zero; a frame where no face is found is left out of that frame's metrics and counted.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

import numpy as np
from PIL import Image

from fet.audio.load import SAMPLE_RATE
from fet.data.shards import unpack
from fet.editing.attributes import AttributeLibrary, ParsedEdits
from fet.editing.classifier import AttributeClassifier
from fet.editing.edit import parse_edits
from fet.editor import load_attribute_classifier, load_attribute_library
from fet.evaluation.config import EvalConfig, MetricWeights
from fet.images import encode_png, image_grid
from fet.landmarks.detector import FaceLandmarks
from fet.metrics.dlib_face import (
    PACKAGE_SOURCE,
    RECOGNITION_NET,
    SHAPE_PREDICTOR,
    DlibFace,
    FaceTrack,
    default_models_dir,
)
from fet.metrics.fid import inception_features
from fet.metrics.identity import identity_consistency
from fet.metrics.image_quality import psnr_per_image, ssim_per_image
from fet.metrics.inception import FID_SOURCE, load_fid_inception
from fet.metrics.landmark_distance import f_lmd, m_lmd
from fet.metrics.sharpness import cpbd
from fet.metrics.sync import landmark_audio_sync
from fet.metrics.syncnet import SYNCNET_SOURCE, face_crops, load_syncnet, syncnet_score
from fet.metrics.weights import weights_exist
from fet.pipeline import FaceEditTalkerPipeline

# metric groups and the table columns each one fills
GROUPS = {
    "dlib": ("M-LMD", "F-LMD", "TL-ID", "TG-ID"),
    "fid": ("FID",),
    "syncnet": ("Min Dist", "AVConf", "AVOffset"),
}
PREVIEW_FRAMES = 6
MIN_FACE_SHARE = 0.9  # the weight-free sync score needs a face in nearly every frame


def unavailable(weights: MetricWeights) -> dict[str, str]:
    """Metric group → why it cannot run (missing package or weights file); checked without loading anything."""
    out: dict[str, str] = {}
    try:
        import dlib  # noqa: F401

        folder = weights.dlib_models_dir or default_models_dir()
        files = (SHAPE_PREDICTOR, RECOGNITION_NET)
        missing = [f for f in files if not folder or not os.path.isfile(os.path.join(folder, f))]
        if missing:
            where = folder or "any models directory"
            out["dlib"] = f"{' and '.join(missing)} not found in {where}; expected {PACKAGE_SOURCE}"
    except ImportError:
        out["dlib"] = "the dlib package is not installed (pip install dlib-bin)"
    for group, path, source, option in (
        ("fid", weights.fid_weights, FID_SOURCE, "weights.fid_weights"),
        ("syncnet", weights.syncnet_weights, SYNCNET_SOURCE, "weights.syncnet_weights"),
    ):
        if not path:
            out[group] = f"no weights given; set {option} to {source}"
        elif not weights_exist(path):
            out[group] = f"weights file {path!r} does not exist; expected {source}"
    return out


def slug(text: str) -> str:
    """An edit's text as a metric-name-safe key: 'add glasses' → 'add_glasses'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def resize(frames: np.ndarray, size: int) -> np.ndarray:
    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in frames])


def _fill_gaps(found: list[FaceLandmarks | None]) -> np.ndarray | None:
    """Per-frame MediaPipe points with missing frames taken from the nearest earlier (or first) detection;
    None when fewer than ``MIN_FACE_SHARE`` of the frames have a face."""
    if sum(f is not None for f in found) < MIN_FACE_SHARE * len(found):
        return None
    first = next(f for f in found if f is not None).points
    out, last = [], first
    for f in found:
        last = f.points if f is not None else last
        out.append(last)
    return np.stack(out)


def _boxes(boxes: np.ndarray, size: int) -> np.ndarray:
    """Face boxes with missing detections filled from neighbours (the whole frame when none was found)."""
    ok = np.isfinite(boxes).all(1)
    if not ok.any():
        return np.tile([0.0, 0.0, size, size], (len(boxes), 1))
    idx = np.arange(len(boxes))
    return np.stack([np.interp(idx, idx[ok], boxes[ok, j]) for j in range(4)], 1)


def check_edits(bundle: str, edits: list[str]) -> dict[str, ParsedEdits]:
    """``parse_eval_edits`` with only the bundle's attribute library and classifier read (what the driver
    checks before Ray starts and any actor loads the pipeline)."""
    return parse_eval_edits(load_attribute_library(bundle), load_attribute_classifier(bundle), edits)


def parse_eval_edits(
    library: AttributeLibrary, classifier: AttributeClassifier, edits: list[str]
) -> dict[str, ParsedEdits]:
    """An evaluation's ``edits`` → {text: parsed}. Raises ``ValueError`` naming a text with any part the
    library does not recognise, or an attribute the bundle has no trained classifier for."""
    out = {}
    for text in edits:
        parsed = library.parse_text(text)
        if parsed.unknown or not parsed.edits:
            unknown = ", ".join(parsed.unknown) or text
            raise ValueError(
                f"edits: {text!r} names no attribute the bundle can edit (unrecognised: {unknown}); "
                "expected phrases such as 'add glasses' or 'blond hair'"
            )
        try:
            out[text] = parse_edits(library, classifier, text=text)
        except ValueError as e:
            raise ValueError(f"edits: {text!r}: {e}") from e
    return out


class ClipEvaluator:
    """Holds the pipeline and the metric networks; create once per worker."""

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg
        overrides = {"steps": cfg.steps} if cfg.steps else {}
        self.pipe = FaceEditTalkerPipeline.from_bundle(cfg.bundle, cfg.device, **overrides)
        self.edits = parse_eval_edits(self.pipe.bundle.library, self.pipe.bundle.classifier, cfg.edits)
        self.skipped = unavailable(cfg.weights)
        w = cfg.weights
        self.dlib = DlibFace(w.dlib_models_dir, cfg.eval_size) if "dlib" not in self.skipped else None
        self.inception = load_fid_inception(w.fid_weights, cfg.device) if "fid" not in self.skipped else None
        self.syncnet = load_syncnet(w.syncnet_weights, cfg.device) if "syncnet" not in self.skipped else None

    # -- one clip -----------------------------------------------------------------------------------------
    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        real = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in row["frames"]])
        audio = unpack(row["audio"]).astype(np.float32)
        lms, transform = unpack(row["landmarks"]), unpack(row["transform"])
        blend = unpack(row["blendshapes"]) if row.get("blendshapes") else np.zeros((len(real), 52), np.float32)
        fps = int(row["fps"])
        hop = SAMPLE_RATE // fps
        n = min(len(real), len(audio) // hop)
        if cfg.max_seconds > 0:
            n = min(n, round(cfg.max_seconds * fps))
        real, lms, audio = real[:n], lms[:n], audio[: n * hop]
        reference = self.pipe.encode(real[0], FaceLandmarks(lms[0], transform[0], blend[0]), name=row["clip_id"])
        generated = self._generate(reference, audio, None)[:n]
        edited = {text: self._generate(reference, audio, parsed.edits)[:n] for text, parsed in self.edits.items()}
        n = len(generated)
        real, lms, audio = real[:n], lms[:n], audio[: n * hop]
        size = generated.shape[1]
        real_s = resize(real, size)

        rec: dict[str, Any] = {"clip_id": row["clip_id"], "speaker": row.get("speaker", ""), "frames": n}
        rec["psnr"] = float(np.mean(psnr_per_image(generated, real_s)))
        rec["ssim"] = float(np.mean(ssim_per_image(generated, real_s)))
        big_real, big_gen = resize(real, cfg.eval_size), resize(generated, cfg.eval_size)
        every = max(1, n // 8)  # CPBD needs no more than a handful of frames per clip
        rec["cpbd"] = float(np.mean([cpbd(f) for f in big_gen[::every]]))
        rec["gt_cpbd"] = float(np.mean([cpbd(f) for f in big_real[::every]]))
        rec |= self._sync(big_gen, lms, audio, fps)
        tracks = None
        if self.dlib is not None:
            tracks = self.dlib.analyse(big_real), self.dlib.analyse(big_gen)
            rec |= self._dlib(*tracks, {t: resize(f, cfg.eval_size) for t, f in edited.items()})
        if self.syncnet is not None:
            rec |= self._syncnet(big_real, big_gen, tracks, audio)
        if self.inception is not None:
            pick = slice(None, None, max(1, cfg.fid_every))
            rec["real_features"] = inception_features(self.inception, real_s[pick]).astype(np.float32)
            rec["gen_features"] = inception_features(self.inception, generated[pick]).astype(np.float32)
        rec["preview"] = self._preview(real_s, generated, edited)
        return rec

    def _generate(self, reference, audio: np.ndarray, edits: dict[str, float] | None) -> np.ndarray:
        out = self.pipe(reference, audio, edits, seed=self.cfg.seed, steps=self.cfg.steps)
        return out.frames

    def _sync(self, big_gen: np.ndarray, real_lms: np.ndarray, audio: np.ndarray, fps: int) -> dict[str, Any]:
        rec: dict[str, Any] = {}
        gt = landmark_audio_sync(real_lms, audio, SAMPLE_RATE, fps)
        rec["gt_sync_corr"] = gt.correlation
        rec["gt_sync_offset"] = gt.offset if np.isfinite(gt.correlation) else float("nan")
        found = self.pipe.detector.detect_video(big_gen, fps)
        points = _fill_gaps(found)
        gen = landmark_audio_sync(points, audio, SAMPLE_RATE, fps) if points is not None else None
        measured = gen is not None and np.isfinite(gen.correlation)  # a still mouth has no lag to speak of
        rec["sync_corr"] = gen.correlation if measured else float("nan")
        rec["sync_offset"] = gen.offset if measured else float("nan")
        if points is None:  # why the clip has no score, for the report's notes
            share = sum(f is not None for f in found) / max(1, len(found))
            rec["sync_missing"] = (f"MediaPipe found a face in {share:.0%} of its generated frames, and the score "
                                   f"needs {MIN_FACE_SHARE:.0%}")  # fmt: skip
        elif not measured:
            rec["sync_missing"] = "its generated mouth does not move, or its audio is silent"
        return rec

    def _dlib(self, real_t: FaceTrack, gen_t: FaceTrack, edited: dict[str, np.ndarray]) -> dict[str, Any]:
        rec: dict[str, Any] = {"face_found": float(gen_t.found.mean())}
        rec["m_lmd"] = m_lmd(gen_t.landmarks, real_t.landmarks)
        rec["f_lmd"] = f_lmd(gen_t.landmarks, real_t.landmarks)
        ident = identity_consistency(real_t.embeddings, gen_t.embeddings)
        rec["tl_id"], rec["tg_id"] = ident.tl_id, ident.tg_id
        for text, frames in edited.items():
            e = identity_consistency(real_t.embeddings, self.dlib.analyse(frames).embeddings)
            rec[f"edit.{slug(text)}.tl_id"], rec[f"edit.{slug(text)}.tg_id"] = e.tl_id, e.tg_id
        return rec

    def _syncnet(
        self, big_real: np.ndarray, big_gen: np.ndarray, tracks: tuple[FaceTrack, FaceTrack] | None, audio: np.ndarray
    ) -> dict[str, Any]:
        """SyncNet on face crops from dlib's boxes (the whole frame, an aligned crop, without dlib)."""
        rec: dict[str, Any] = {}
        size = big_gen.shape[1]
        no_boxes = np.full((len(big_gen), 4), np.nan)
        boxes = (tracks[0].boxes, tracks[1].boxes) if tracks else (no_boxes, no_boxes)
        for prefix, frames, box in (("", big_gen, boxes[1]), ("gt_", big_real, boxes[0])):
            score = syncnet_score(self.syncnet, face_crops(frames, _boxes(box, size)), audio)
            rec[f"{prefix}syncnet_min_dist"] = score.min_dist
            rec[f"{prefix}syncnet_conf"] = score.confidence
            rec[f"{prefix}syncnet_offset"] = score.offset
        return rec

    def _preview(self, real: np.ndarray, generated: np.ndarray, edited: dict[str, np.ndarray]) -> bytes:
        """Rows: real, generated, then each edit; columns: evenly spaced frames."""
        idx = np.linspace(0, len(real) - 1, min(PREVIEW_FRAMES, len(real))).round().astype(int)
        rows = [real[idx], generated[idx], *(f[idx] for f in edited.values())]
        return encode_png(image_grid(np.concatenate(rows), len(rows)))
