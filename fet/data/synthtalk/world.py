"""SynthTalk items: one face image, or one talking clip with its ground truth. Pure functions of a seed."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from fet.data.synthtalk.geometry import Expression, face_points
from fet.data.synthtalk.identity import Identity, sample_identity
from fet.data.synthtalk.render import render_face
from fet.data.synthtalk.speech import FPS, SAMPLE_RATE, VISEME_LEAD_S, synthesize
from fet.landmarks.projection import normalized_landmarks, pose_to_matrix, project

HEAD_DISTANCE_CM = 26.0  # frames the face like an aligned crop (FFHQ/HDTF-style) at FOV 63°


def item_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """Independent stream per (seed, kind, index): item i is the same whatever else is generated."""
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), index])


def split_of_identity(seed: int, kind: str, index: int, val: float = 0.1, test: float = 0.1) -> str:
    u = item_rng(seed, f"split-{kind}", index).random()
    return "test" if u < test else "val" if u < test + val else "train"


def base_expression(identity: Identity) -> Expression:
    return Expression(
        jaw=0.7 if identity.has("Mouth_Slightly_Open") else 0.0, smile=1.0 if identity.has("Smiling") else 0.0
    )


def render(
    identity: Identity, expr: Expression, pose: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """→ image (S, S, 3) uint8, normalised landmarks (478, 3), transform (4, 4)."""
    transform = pose_to_matrix(pose, HEAD_DISTANCE_CM)
    projected = project(face_points(identity, expr), transform, size)
    return render_face(projected, identity, size, transform), normalized_landmarks(projected, size), transform


@dataclass
class FaceImage:
    image: np.ndarray
    labels: np.ndarray
    landmarks: np.ndarray


def make_image(seed: int, index: int, size: int, changes: dict[str, bool] | None = None) -> FaceImage:
    """Face image ``index`` of the world ``seed``. ``changes`` sets attributes of its identity
    (``Identity.with_attributes``) before rendering at the same pose: the world's own counterfactual of
    that face, e.g. ``{"Eyeglasses": True}`` for the same person with glasses."""
    rng = item_rng(seed, "image", index)
    identity = sample_identity(rng)
    if changes:
        identity = identity.with_attributes(**changes)
    pose = np.array(
        [rng.normal(0, 0.05), rng.normal(0, 0.08), rng.normal(0, 0.03), rng.normal(0, 0.3), rng.normal(0, 0.3), 0]
    )
    image, lms, _ = render(identity, base_expression(identity), pose, size)
    return FaceImage(image, identity.labels(), lms)


@dataclass
class Clip:
    frames: np.ndarray  # (T, S, S, 3) uint8
    audio: np.ndarray  # (N,) float32, 16 kHz
    landmarks: np.ndarray  # (T, 478, 3)
    transform: np.ndarray  # (T, 4, 4)
    pose: np.ndarray  # (T, 6)
    visemes: np.ndarray  # (T, 4): jaw, round, stretch, blink
    labels: np.ndarray  # (40,)


def _smooth_walk(rng: np.random.Generator, T: int, amplitude: float) -> np.ndarray:
    t = np.arange(T) / FPS
    out = np.zeros(T)
    for _ in range(3):
        out += np.sin(2 * np.pi * rng.uniform(0.08, 0.5) * t + rng.uniform(0, 2 * np.pi)) / 3
    return amplitude * out


def _blinks(rng: np.random.Generator, T: int) -> np.ndarray:
    blink = np.zeros(T)
    t = rng.uniform(0.5, 2.5)
    while t < T / FPS:
        c = int(t * FPS)
        for k, v in zip(range(c - 2, c + 3), (0.4, 0.9, 1.0, 0.8, 0.3)):
            if 0 <= k < T:
                blink[k] = max(blink[k], v)
        t += rng.uniform(2.0, 5.0)
    return blink


def make_clip(seed: int, index: int, size: int, seconds: float) -> Clip:
    rng = item_rng(seed, "clip", index)
    identity = sample_identity(rng).with_attributes(Mouth_Slightly_Open=False)
    speech = synthesize(rng, seconds)
    T = len(speech.jaw)
    base = base_expression(identity)
    blink = _blinks(rng, T)
    amps = (0.06, 0.12, 0.04, 0.5, 0.35, 0.8)
    pose = np.stack([_smooth_walk(rng, T, a) for a in amps], axis=1)
    pose[:, 0] += 0.04 * np.convolve(speech.envelope / (speech.envelope.max() + 1e-9), np.ones(5) / 5, "same")  # nods
    frames, lms, transforms = [], [], []
    for i in range(T):
        expr = Expression(jaw=float(speech.jaw[i]), round=float(speech.round[i]), stretch=float(speech.stretch[i]),
                          smile=base.smile * (1 - 0.5 * speech.jaw[i]), blink=float(blink[i]))  # fmt: skip
        img, lm, tr = render(identity, expr, pose[i], size)
        frames.append(img)
        lms.append(lm)
        transforms.append(tr)
    visemes = np.stack([speech.jaw, speech.round, speech.stretch, blink], axis=1).astype(np.float32)
    return Clip(np.stack(frames), speech.audio, np.stack(lms), np.stack(transforms).astype(np.float32),
                pose.astype(np.float32), visemes, identity.labels())  # fmt: skip


CLIP_META = {
    "fps": FPS,
    "sample_rate": SAMPLE_RATE,
    "viseme_lead_s": VISEME_LEAD_S,
    "head_distance_cm": HEAD_DISTANCE_CM,
}
