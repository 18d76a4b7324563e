"""Per-video-frame audio features (paper 3.4: "audio features extracted by a pre-trained wav2vec").

Two encoders behind one interface, ``AudioEncoder(audio_16k, num_frames) -> (num_frames, dim)``:

- ``wav2vec2``: ``transformers.Wav2Vec2Model`` loaded from a directory or ``s3://`` URI (the paper's
  encoder, 50 Hz hidden states). Long audio is encoded in overlapping chunks so memory stays bounded
  and attention never sees a sequence longer than ``chunk_seconds`` + context.
- ``mel``: weight-free log-mel spectrogram at 100 Hz, normalised per utterance (the embedded default).

Features are placed on their own time stamps and linearly interpolated onto the video timeline:
``stack`` sub-frames per video frame are concatenated, so a 25 fps frame of ``mel`` (stack 4) sees all
four 10 ms spectra it spans.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from fet import storage
from fet.audio.load import SAMPLE_RATE
from fet.weight_files import check_weights_file, load_failure_reason


@dataclass
class AudioEncoderConfig:
    kind: Literal["mel", "wav2vec2"] = "mel"
    path: str | None = None  # wav2vec2: directory or s3:// URI of a saved Wav2Vec2Model
    fps: int = 25
    stack: int = 4  # sub-frames per video frame (mel: 100 Hz / 25 fps = 4; wav2vec2: 2)
    n_mels: int = 80
    layer: int | None = None  # wav2vec2 hidden layer to use (None: the last)
    chunk_seconds: float = 20.0  # wav2vec2: audio per forward pass
    context_seconds: float = 1.0  # wav2vec2: extra audio on each side of a chunk, dropped afterwards

    def validate(self) -> None:
        if self.kind == "wav2vec2" and not self.path:
            raise ValueError("audio encoder 'wav2vec2' needs path= (a directory or s3:// URI of the weights)")
        if self.stack < 1 or self.fps < 1:
            raise ValueError(f"audio encoder: stack={self.stack} and fps={self.fps} must be >= 1")


def interpolate_to_frames(features: np.ndarray, times: np.ndarray, num_frames: int, fps: int, stack: int) -> np.ndarray:
    """features (N, D) at ``times`` (N,) seconds → (num_frames, stack·D) on the video timeline.

    Sub-frame k of video frame j sits at (j + (k + 0.5) / stack) / fps; values outside the features'
    time range are held at the nearest end.
    """
    targets = (np.arange(num_frames * stack) + 0.5) / (fps * stack)
    idx = np.clip(np.searchsorted(times, targets) - 1, 0, len(times) - 2) if len(times) > 1 else None
    if idx is None:
        out = np.repeat(features[:1], len(targets), axis=0)
    else:
        w = np.clip((targets - times[idx]) / (times[idx + 1] - times[idx]), 0.0, 1.0)[:, None]
        out = features[idx] * (1 - w) + features[idx + 1] * w
    return out.reshape(num_frames, stack * features.shape[1]).astype(np.float32)


class MelEncoder(nn.Module):
    """Log-mel spectrogram, 25 ms windows every 10 ms, per-utterance mean/variance normalised."""

    def __init__(self, n_mels: int = 80, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.n_fft, self.hop, self.win = 512, sample_rate // 100, sample_rate * 25 // 1000
        fb = mel_filter_bank(self.n_fft // 2 + 1, n_mels, 20.0, sample_rate / 2, sample_rate, "slaney", "slaney")
        self.register_buffer("filters", torch.from_numpy(fb).float(), persistent=False)  # (F, n_mels)
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.dim, self.rate = n_mels, sample_rate / self.hop

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (N,) → features (M, n_mels) on the CPU, centre times (M,) in seconds."""
        audio = audio.to(self.window.device)  # computed where the module lives (a GPU replica's, say)
        spec = torch.stft(
            audio, self.n_fft, self.hop, self.win, self.window, center=True, return_complex=True
        ).abs()  # (F, M)
        mel = torch.log(torch.clamp(spec.pow(2).T @ self.filters, min=1e-10))  # (M, n_mels)
        mel = (mel - mel.mean(0)) / (mel.std(0) + 1e-5) if mel.shape[0] > 1 else mel - mel.mean(0)
        times = torch.arange(mel.shape[0], dtype=torch.float64) * self.hop / SAMPLE_RATE
        return mel.cpu(), times


# the weights ``from_pretrained`` loads, in the order it looks for them
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_audio_weights(cfg: AudioEncoderConfig) -> None:
    """FileNotFoundError or ValueError unless ``cfg`` names a whole saved Wav2Vec2Model: a config.json of a
    wav2vec2 model beside weights that are not cut short (``check_weights_file``). A few small reads, by a
    job's driver before many workers each load the model and each fail with a traceback."""
    if cfg.kind != "wav2vec2":
        return
    where = f"{cfg.path}: expected a saved Wav2Vec2Model directory (config.json and model.safetensors)"
    config = storage.join(cfg.path, "config.json")
    if not storage.exists(config):
        raise FileNotFoundError(f"{cfg.path}: no config.json; expected a saved Wav2Vec2Model directory")
    try:
        model_type = json.loads(storage.read_text(config)).get("model_type")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{config}: not a JSON model config ({e}); {where}") from e
    if model_type != "wav2vec2":
        raise ValueError(f"{config}: model_type {model_type!r}, not 'wav2vec2'; {where}")
    name = next((n for n in WEIGHT_FILES if storage.exists(storage.join(cfg.path, n))), None)
    if name is None:
        raise FileNotFoundError(f"{cfg.path}: config.json without weights (none of {', '.join(WEIGHT_FILES)})")
    files = [name]
    if name.endswith(".index.json"):  # weights in shards, each named in the index
        index = storage.join(cfg.path, name)
        try:
            files = sorted(set(json.loads(storage.read_text(index))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index}: not an index of weight shards (a JSON weight_map): {e}") from e
    for file in files:
        check_weights_file(storage.join(cfg.path, file))


class Wav2Vec2Encoder(nn.Module):
    """Hidden states of a saved ``Wav2Vec2Model`` (e.g. facebook/wav2vec2-base-960h), chunked."""

    def __init__(self, path: str, layer: int | None, chunk_seconds: float, context_seconds: float) -> None:
        super().__init__()
        from transformers import Wav2Vec2Model

        with storage.local_copy(path, tree=True) as local:
            if not (local / "config.json").is_file():
                raise FileNotFoundError(f"{path}: no config.json; expected a saved Wav2Vec2Model directory")
            try:
                self.model = Wav2Vec2Model.from_pretrained(str(local)).eval()
            except Exception as e:  # transformers', safetensors' and torch's errors alike, with the path and why
                raise ValueError(f"{path}: the saved Wav2Vec2Model does not load: {load_failure_reason(e)}") from e
            prep = local / "preprocessor_config.json"
            self.normalize = json.loads(prep.read_text()).get("do_normalize", True) if prep.is_file() else True
        self.layer, self.chunk, self.context = layer, chunk_seconds, context_seconds
        self.dim = self.model.config.hidden_size
        self.stride = int(np.prod(self.model.config.conv_stride))  # samples per output step (320)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (N,) → hidden states (M, D) at ~50 Hz, centre times (M,) in seconds."""
        if self.normalize:
            audio = (audio - audio.mean()) / (audio.std() + 1e-7)
        n, chunk, ctx = audio.numel(), round(self.chunk * SAMPLE_RATE), round(self.context * SAMPLE_RATE)
        device = next(self.model.parameters()).device
        feats, times = [], []
        for start in range(0, n, chunk):
            lo, hi = max(0, start - ctx), min(n, start + chunk + ctx)
            piece = audio[lo:hi]
            if piece.numel() < 400:  # shorter than the conv receptive field: pad (last tiny chunk)
                piece = nn.functional.pad(piece, (0, 400 - piece.numel()))
            out = self.model(piece[None].to(device), output_hidden_states=self.layer is not None)
            h = (out.hidden_states[self.layer] if self.layer is not None else out.last_hidden_state)[0].float()
            t = (lo + torch.arange(h.shape[0], dtype=torch.float64) * self.stride + self.stride / 2) / SAMPLE_RATE
            keep = (t >= start / SAMPLE_RATE) & (t < min(n, start + chunk) / SAMPLE_RATE)
            feats.append(h.cpu()[keep])
            times.append(t[keep])
        return torch.cat(feats), torch.cat(times)


class AudioEncoder(nn.Module):
    """16 kHz mono audio → (num_frames, dim) features on the video timeline."""

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        if cfg.kind == "mel":
            self.encoder: nn.Module = MelEncoder(cfg.n_mels)
        else:
            self.encoder = Wav2Vec2Encoder(cfg.path, cfg.layer, cfg.chunk_seconds, cfg.context_seconds)
        self.dim = self.encoder.dim * cfg.stack

    @torch.no_grad()
    def forward(self, audio: np.ndarray | torch.Tensor, num_frames: int) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if x.ndim != 1 or x.numel() == 0:
            raise ValueError(f"audio: expected a non-empty 1-d 16 kHz signal, got shape {tuple(x.shape)}")
        feats, times = self.encoder(x)
        out = interpolate_to_frames(feats.numpy(), times.numpy(), num_frames, self.cfg.fps, self.cfg.stack)
        return torch.from_numpy(out)  # (num_frames, dim)
