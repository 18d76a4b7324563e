"""Decode speech from any common container/codec (wav, mp3, m4a/aac, flac, ogg, mp4 audio tracks) to
16 kHz mono float32, the rate wav2vec2 and every audio model here expect. FFmpeg does the decoding and
resampling (PyAV), so channel layouts and sample rates are handled by one well-tested code path.
"""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np

from fet import storage

SAMPLE_RATE = 16_000
SILENCE_RMS = 1e-4  # below this (≈ −80 dBFS) there is nothing to lip-sync to
GAP_SECONDS = 0.02  # a track whose next frame starts this much later than the last one ends has a gap
MAX_GAP_SECONDS = 10.0  # a longer jump is a timestamp discontinuity (a stream's clock reset), not silence


class AudioError(ValueError):
    """Audio that cannot be used: unreadable, corrupt, without an audio stream, silent, too short or long."""


def _source(audio: str | os.PathLike | bytes, name: str) -> tuple[io.BytesIO | str, str]:
    if isinstance(audio, bytes | bytearray):
        return io.BytesIO(bytes(audio)), name
    text = str(audio)
    if storage.is_s3(text):
        return io.BytesIO(storage.read_bytes(text)), text
    path = Path(text)
    if path.is_dir():
        raise AudioError(f"{text}: a folder, not an audio file")
    if not path.exists():
        raise AudioError(f"{text}: no such audio file")
    if not path.is_file():  # a pipe (bash's <(...)) or a device: read once, whole, as an s3:// object is
        return io.BytesIO(path.read_bytes()), text  # (FFmpeg cannot seek in a pipe to an mp4's index)
    return text, text


def load_audio(
    audio: str | os.PathLike | bytes,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    name: str = "audio",
) -> np.ndarray:
    """Decode the first audio stream of ``audio`` (path, ``s3://`` URI or bytes) → (N,) float32 mono.

    Samples sit at their times: where the track skips ahead (lost packets in a recording), the gap is
    silence, as a player plays it, so what follows stays in step with the picture.

    Raises ``AudioError`` naming the input for unreadable/corrupt data, files without an audio
    stream, and audio longer than ``max_seconds`` (checked while decoding, so a huge file is not
    decoded in full before being refused).
    """
    import av  # FFmpeg loads with the first decode, not with every module that imports this one

    src, label = _source(audio, name)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(src, "r") as container:
            if not container.streams.audio:
                raise AudioError(f"{label}: has no audio stream")
            stream = container.streams.audio[0]
            expected = None  # when the next frame should start, by the ones before it
            for frame in container.decode(stream):
                if frame.time is not None:
                    gap = frame.time - expected if expected is not None else 0.0
                    if GAP_SECONDS < gap <= MAX_GAP_SECONDS:  # the track skips ahead: silence, as a player plays
                        chunks.append(np.zeros(round(gap * sample_rate), np.float32))
                        total += chunks[-1].size
                    expected = frame.time + frame.samples / frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if max_seconds is not None and total > max_seconds * sample_rate:
                    raise AudioError(f"{label}: longer than the maximum of {max_seconds:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise AudioError(f"{label}: not a readable audio file ({type(e).__name__}: {e})") from e
    if not chunks or sum(c.size for c in chunks) == 0:
        raise AudioError(f"{label}: the audio stream holds no samples")
    samples = np.concatenate(chunks).astype(np.float32)
    if max_seconds is not None and samples.size > max_seconds * sample_rate:
        raise AudioError(f"{label}: {samples.size / sample_rate:.2f} s, longer than the maximum of {max_seconds:g} s")
    return samples


def align_start(audio: np.ndarray, offset_seconds: float, sample_rate: int = SAMPLE_RATE, name: str = "audio"
                ) -> np.ndarray:  # fmt: skip
    """Audio that starts ``offset_seconds`` after the picture (before it, when negative) → the same audio
    on the picture's clock, sample 0 at the first frame: silence in front, or the sound before the first
    frame cut off. ``fet.media.video.VideoInfo.audio_offset`` measures the offset."""
    shift = round(offset_seconds * sample_rate)
    if shift >= 0:
        return np.concatenate([np.zeros(shift, audio.dtype), audio]) if shift else audio
    if -shift >= audio.size:
        raise AudioError(f"{name}: the audio ends {(-shift - audio.size) / sample_rate:.2f} s before the first "
                         "video frame")  # fmt: skip
    return audio[-shift:]


def check_speech(audio: np.ndarray, min_seconds: float, sample_rate: int = SAMPLE_RATE, name: str = "audio") -> None:
    """Refuse audio that is too short to drive a video or is digital silence."""
    seconds = audio.size / sample_rate
    if seconds < min_seconds:
        raise AudioError(f"{name}: {seconds:.3f} s of audio, expected at least {min_seconds:g} s")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if not np.isfinite(rms):
        raise AudioError(f"{name}: holds NaN or infinite samples")
    if rms < SILENCE_RMS:
        raise AudioError(f"{name}: is silent (RMS {rms:.2e}); expected speech")


def num_frames(num_samples: int, fps: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames covering the audio: round(duration · fps), at least 1."""
    return max(1, round(num_samples * fps / sample_rate))


def wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """(N,) float samples in [-1, 1] → a 16-bit mono WAV file, e.g. to send speech to the service."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((np.clip(np.asarray(audio, np.float64).reshape(-1), -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()
