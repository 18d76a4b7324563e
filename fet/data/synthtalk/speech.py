"""SynthTalk speech: a speech-like 16 kHz signal and the mouth motion that produced it.

Words of 1–4 syllables separated by pauses; each syllable is a voiced vowel (glottal pulse train
through two formant resonators, F1/F2 of the vowel) after a short noise consonant, with a pitch
contour. Mouth targets follow the vowel (jaw opening ∝ F1, rounding for o/u, spreading for i/e) scaled
by loudness, smoothed like an articulator, and lead the sound by ``VISEME_LEAD_S`` (lips move before
the acoustic onset, ~40–100 ms in natural speech), so mouth motion is learnable from audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, lfilter, sosfiltfilt

from fet.metrics.sync import audio_envelope

SAMPLE_RATE = 16_000
FPS = 25
VISEME_LEAD_S = 0.06
# vowel: (F1 Hz, F2 Hz, jaw, round, stretch)
VOWELS = {
    "a": (800, 1250, 0.95, 0.0, 0.2),
    "e": (500, 1900, 0.55, 0.0, 0.6),
    "i": (300, 2300, 0.25, 0.0, 1.0),
    "o": (500, 900, 0.6, 0.85, 0.0),
    "u": (320, 800, 0.3, 1.0, 0.0),
}


@dataclass
class Speech:
    audio: np.ndarray  # (N,) float32 in [-1, 1], 16 kHz
    jaw: np.ndarray  # (T,) per video frame, 0..1
    round: np.ndarray  # (T,)
    stretch: np.ndarray  # (T,)
    envelope: np.ndarray  # (T,) RMS loudness per frame of the audio
    vowels: list[tuple[float, float, str]]  # (start s, end s, vowel)


def _resonator(f: float, bw: float) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(-np.pi * bw / SAMPLE_RATE)
    theta = 2 * np.pi * f / SAMPLE_RATE
    return np.array([1 - r]), np.array([1, -2 * r * np.cos(theta), r * r])


def frame_envelope(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """RMS of the audio in each 40 ms video frame, (T,)."""
    return audio_envelope(audio, num_frames, SAMPLE_RATE, FPS)


def synthesize(rng: np.random.Generator, duration_s: float, base_f0: float | None = None) -> Speech:
    """A clip of ``duration_s`` seconds of synthetic speech with its per-frame mouth tracks."""
    n = round(duration_s * SAMPLE_RATE)
    T = round(duration_s * FPS)
    audio = np.zeros(n, np.float64)
    ctrl = np.zeros((3, n))  # jaw, round, stretch targets at audio rate
    f0 = base_f0 or rng.uniform(95, 230)
    t = rng.uniform(0.1, 0.4)
    vowels = []
    while t < duration_s - 0.3:
        for _ in range(rng.integers(1, 5)):
            cons = rng.uniform(0.03, 0.07)
            dur = rng.uniform(0.12, 0.26)
            if t + cons + dur > duration_s - 0.05:
                break
            c0, v0, v1 = int(t * SAMPLE_RATE), int((t + cons) * SAMPLE_RATE), int((t + cons + dur) * SAMPLE_RATE)
            audio[c0:v0] += rng.normal(0, 0.04, v0 - c0) * np.hanning(v0 - c0)  # consonant burst
            name = str(rng.choice(list(VOWELS)))
            f1, f2, jaw, rnd, st = VOWELS[name]
            loud = rng.uniform(0.6, 1.0)
            m = v1 - v0
            tt = np.arange(m) / SAMPLE_RATE
            pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * tt + rng.uniform(0, 6)))
            phase = np.cumsum(pitch / SAMPLE_RATE)
            source = 2 * (phase % 1.0) - 1  # sawtooth glottal source
            b1, a1 = _resonator(f1, 90)
            b2, a2 = _resonator(f2, 120)
            voiced = lfilter(b1, a1, source) + 0.6 * lfilter(b2, a2, source)
            env = np.minimum(1, np.minimum(tt / 0.03, (tt[-1] - tt) / 0.05).clip(0))
            audio[v0:v1] += loud * voiced * env / (np.abs(voiced).max() + 1e-9) * 0.8
            ctrl[:, v0:v1] = np.array([jaw, rnd, st])[:, None] * loud * env
            vowels.append((t + cons, t + cons + dur, name))
            t += cons + dur
        t += rng.uniform(0.12, 0.4)  # pause between words
    audio += rng.normal(0, 0.002, n)  # room noise
    audio = (audio / max(1e-9, np.abs(audio).max()) * 0.9).astype(np.float32)

    # articulators: low-pass the targets (~6 Hz), then sample per frame *ahead* of the audio by the lead
    sos = butter(2, 6.0, fs=SAMPLE_RATE, output="sos")
    smooth = sosfiltfilt(sos, ctrl, axis=1).clip(0, 1)
    frame_times = (np.arange(T) + 0.5) / FPS + VISEME_LEAD_S
    idx = np.clip((frame_times * SAMPLE_RATE).astype(int), 0, n - 1)
    jaw, rnd, st = smooth[:, idx]
    return Speech(audio, jaw, rnd, st, frame_envelope(audio, T), vowels)
