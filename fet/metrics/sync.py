"""A weight-free lip-sync score: how well the mouth opening follows the loudness of the speech.

Speech energy and jaw/lip aperture are strongly correlated at the syllable rate (Chandrasekaran et al.,
"The natural statistics of audiovisual speech", PLoS Comput. Biol. 2009), with the mouth leading or
lagging the sound by a few frames. We correlate the per-frame inner-lip gap with the per-frame RMS of
the speech band (300–3000 Hz, zero-phase Butterworth) over a range of lags and report the best lag and
its Pearson correlation. The linear band envelope, not its log: on the real clips in the test media a
log envelope lets near-silent frames (breaths, room noise, padding) dominate the correlation and
misplaces a known audio delay by up to 17 frames, while the linear band envelope recovers it within
one frame (``tests/fet/test_metrics.py``). It needs
no network weights, so it always runs; SyncNet (``fet.metrics.syncnet``) is the field's standard where
its weights are available.

Lag convention: ``offset = k > 0`` means the mouth moves ``k`` frames *after* the sound (video late).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfiltfilt

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # MediaPipe face-mesh indices
FOREHEAD, CHIN = 10, 152
SPEECH_BAND = (300.0, 3000.0)  # Hz


@dataclass
class SyncScore:
    offset: int  # frames; > 0: video late
    correlation: float  # Pearson r at that offset, in [-1, 1]


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T, ≥468, ≥2) MediaPipe landmarks → (T,) inner-lip gap as a fraction of the face height."""
    lm = landmarks[..., :2].astype(np.float64)
    gap = np.linalg.norm(lm[:, UPPER_INNER_LIP] - lm[:, LOWER_INNER_LIP], axis=-1)
    height = np.linalg.norm(lm[:, FOREHEAD] - lm[:, CHIN], axis=-1)
    return gap / np.maximum(height, 1e-6)


def audio_envelope(audio: np.ndarray, num_frames: int, sample_rate: int = 16_000, fps: int = 25) -> np.ndarray:
    """RMS of the audio in each video frame's window (``sample_rate / fps`` samples), zero past the end, (T,)."""
    hop = sample_rate // fps
    pad = np.zeros(num_frames * hop, np.float32)
    pad[: min(len(audio), len(pad))] = audio[: len(pad)]
    return np.sqrt((pad.reshape(num_frames, hop) ** 2).mean(1))


def speech_envelope(audio: np.ndarray, num_frames: int, sample_rate: int = 16_000, fps: int = 25) -> np.ndarray:
    """RMS of the speech band (300–3000 Hz) in each video frame's window, (T,)."""
    audio = np.asarray(audio, np.float64)
    if audio.size > 27:  # sosfiltfilt needs a few times the filter order in samples
        sos = butter(4, SPEECH_BAND, btype="band", fs=sample_rate, output="sos")
        audio = sosfiltfilt(sos, audio)
    return audio_envelope(audio.astype(np.float32), num_frames, sample_rate, fps)


def lag_correlation(leader: np.ndarray, follower: np.ndarray, max_lag: int) -> SyncScore:
    """The lag in [-max_lag, max_lag] maximising corr(leader[t], follower[t + lag]) (≥ 8 overlapping frames)."""
    best = SyncScore(0, float("nan"))
    for lag in range(-max_lag, max_lag + 1):
        a = leader[max(0, -lag) : len(leader) - max(0, lag)]
        b = follower[max(0, lag) : len(follower) - max(0, -lag)]
        n = min(len(a), len(b))
        if n < 8 or a[:n].std() < 1e-9 or b[:n].std() < 1e-9:
            continue
        r = float(np.corrcoef(a[:n], b[:n])[0, 1])
        if np.isnan(best.correlation) or r > best.correlation:
            best = SyncScore(lag, r)
    return best


def landmark_audio_sync(
    landmarks: np.ndarray, audio: np.ndarray, sample_rate: int = 16_000, fps: int = 25, max_lag: int = 5
) -> SyncScore:
    """Best-lag correlation between mouth opening (T frames of landmarks) and the speech-band envelope.
    A clip where the mouth never moves, or silence, gives correlation NaN."""
    loudness = speech_envelope(audio, landmarks.shape[0], sample_rate, fps)
    return lag_correlation(loudness, mouth_opening(landmarks), max_lag)
