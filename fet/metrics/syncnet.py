"""SyncNet lip-sync scores: Min Dist, AVConf and AVOffset.

Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV workshops 2016; the network and
the evaluation are those of joonson's ``syncnet_python`` (weights ``syncnet_v2.model``), which Wav2Lip
and most talking-head papers report:

- video: the face track cropped as its pipeline does (box centre and size median-filtered over 13
  frames, crop from the box top to 1.8 box half-sizes below the centre and 1.4 to each side, grey
  padding 110), resized to 224×224, BGR, 0–255; one lip feature per window of 5 frames.
- audio: 13 MFCCs at 100 Hz (python_speech_features defaults, on 16-bit sample values); one audio
  feature per window of 20 MFCC frames starting at video frame i (4 MFCC frames per video frame).
- distances: for every video window i, the Euclidean distance to the audio windows i − 15 … i + 15
  (zero-padded features beyond the ends); averaged over i. Min Dist is the smallest mean distance,
  AVOffset = 15 − its index (frames; > 0: the audio leads), AVConf = median − minimum.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.signal import medfilt
from torch import nn

from fet.metrics.weights import load_state_dict_file

SYNCNET_SOURCE = "syncnet_v2.model, the SyncNet weights published with joonson/syncnet_python"
VSHIFT = 15
WINDOW = 5  # video frames per lip feature
MFCC_PER_FRAME, MFCC_WINDOW = 4, 20
CROP_SCALE = 0.4
CROP_SIZE = 224


def _conv_bn(conv: nn.Module, bn: nn.Module) -> list[nn.Module]:
    return [conv, bn, nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """The two-stream network; module names match ``syncnet_v2.model`` so it loads key for key."""

    def __init__(self, embedding: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv_bn(nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64)),
            nn.MaxPool2d(1, 1),
            *_conv_bn(nn.Conv2d(64, 192, 3, padding=1), nn.BatchNorm2d(192)),
            nn.MaxPool2d(3, (1, 2)),
            *_conv_bn(nn.Conv2d(192, 384, 3, padding=1), nn.BatchNorm2d(384)),
            *_conv_bn(nn.Conv2d(384, 256, 3, padding=1), nn.BatchNorm2d(256)),
            *_conv_bn(nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256)),
            nn.MaxPool2d(3, 2),
            *_conv_bn(nn.Conv2d(256, 512, (5, 4)), nn.BatchNorm2d(512)),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netcnnlip = nn.Sequential(
            *_conv_bn(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(96)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1)),
            *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn(nn.Conv3d(256, 512, (1, 6, 6)), nn.BatchNorm3d(512)),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows → (N, embedding)."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR face windows, 0–255 → (N, embedding)."""
        return self.netfclip(self.netcnnlip(x).flatten(1))


def load_syncnet(path: str | os.PathLike | None, device: str | torch.device = "cpu") -> SyncNet:
    """SyncNet with weights from ``path`` (a state dict); MissingWeightsError naming the file when absent."""
    return load_state_dict_file(SyncNet(), path, "SyncNet", SYNCNET_SOURCE, "syncnet_weights", device)


@dataclass
class SyncNetScore:
    min_dist: float
    confidence: float  # AVConf
    offset: int  # AVOffset, frames


def offset_distances(video: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """(N, D) video and audio features → (N, 2·vshift + 1) distances: row i, column j is
    ‖video[i] − audio[i + j − vshift]‖ (zero features past either end)."""
    padded = F.pad(audio, (0, 0, vshift, vshift))
    windows = padded.unfold(0, 2 * vshift + 1, 1).permute(0, 2, 1)  # (N, 2·vshift+1, D)
    return torch.linalg.vector_norm(video[:, None, :] - windows[: len(video)] + 1e-6, dim=-1)


def sync_scores(distances: torch.Tensor, vshift: int = VSHIFT) -> SyncNetScore:
    """Min Dist, AVConf and AVOffset from the (N, 2·vshift + 1) distance table."""
    mean = distances.mean(0)
    min_dist, index = torch.min(mean, 0)
    return SyncNetScore(float(min_dist), float(torch.median(mean) - min_dist), vshift - int(index))


def mfcc(audio: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """Float speech in [-1, 1] → (13, M) MFCCs at 100 Hz, on 16-bit sample values as SyncNet was trained."""
    import python_speech_features

    return python_speech_features.mfcc(np.asarray(audio, np.float64) * 32768.0, sample_rate).T


def face_crops(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB frames and (T, 4) face boxes (x0, y0, x1, y1) → (T, 224, 224, 3) BGR crops."""
    k = min(13, len(boxes) - (1 - len(boxes) % 2))  # the track's smoothing window; odd, at most the track
    half = medfilt(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2, k)
    cy = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, k)
    cx = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, k)
    out = np.empty((len(frames), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for i, frame in enumerate(frames):
        bs = half[i]
        pad = int(bs * (1 + 2 * CROP_SCALE))
        padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=110)
        my, mx = cy[i] + pad, cx[i] + pad
        rows = slice(int(my - bs), int(my + bs * (1 + 2 * CROP_SCALE)))
        cols = slice(int(mx - bs * (1 + CROP_SCALE)), int(mx + bs * (1 + CROP_SCALE)))
        face = padded[rows, cols]
        out[i] = np.asarray(Image.fromarray(face).resize((CROP_SIZE, CROP_SIZE), Image.BILINEAR))[..., ::-1]
    return out


@torch.no_grad()
def syncnet_score(
    model: SyncNet, crops: np.ndarray, audio: np.ndarray, batch_size: int = 20, vshift: int = VSHIFT
) -> SyncNetScore:
    """(T, 224, 224, 3) BGR face crops at 25 fps and their 16 kHz speech → Min Dist, AVConf, AVOffset."""
    cc = torch.from_numpy(mfcc(audio)).float()[None, None]  # (1, 1, 13, M)
    last = min(len(crops), len(audio) // 640) - WINDOW
    if last < 1:
        raise ValueError(f"SyncNet: needs more than {WINDOW} frames of video and audio, got {len(crops)} frames")
    device = next(model.parameters()).device
    video = torch.from_numpy(np.ascontiguousarray(crops)).float().permute(3, 0, 1, 2)  # (3, T, 224, 224)
    lip, aud = [], []
    for start in range(0, last, batch_size):
        idx = range(start, min(last, start + batch_size))
        lip.append(model.forward_lip(torch.stack([video[:, i : i + WINDOW] for i in idx]).to(device)).cpu())
        windows = [cc[0, :, :, i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + MFCC_WINDOW] for i in idx]
        aud.append(model.forward_aud(torch.stack(windows).to(device)).cpu())
    return sync_scores(offset_distances(torch.cat(lip), torch.cat(aud), vshift), vshift)
