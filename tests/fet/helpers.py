"""Small models, images and media shared by the tests of the fet modules."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
import torch

from fet.autoencoder import DiffusionAutoencoder
from fet.diffusion.ddim import training_scheduler
from fet.models.presets import preset
from fet.training.losses import diffusion_loss

SIZE = 16


def tiny_config(**overrides):
    fields = dict(image_size=SIZE, base_channels=16, channel_mult=(1, 2), encoder_channel_mult=(1, 2), z_dim=32,
                  attention_resolutions=(8,), attention_head_dim=16)  # fmt: skip
    return preset("tiny", **(fields | overrides))


def smooth_images(n: int, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """n smooth random RGB images (n, 3, size, size) in [-1, 1]: low-frequency blobs like faces at 16 px."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def png_header(side: int) -> bytes:
    """A PNG declaring side × side grey pixels whose pixel data is empty: all a reader needs to learn
    the size, in 45 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"")


def remux(mp4: bytes, move: Callable[[str, float], float | None]) -> bytes:
    """``mp4`` with its first video and audio tracks' packets copied as they are, each moved by
    ``move(kind, its time in seconds)`` seconds ("video" or "audio"; None leaves the packet out).
    (The copy loses the edit list that hid the AAC encoder's 23 ms of priming, which now plays first.)"""
    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(mp4)) as source, av.open(out, "w", format="mp4") as target:
        tracks = (source.streams.video[0], source.streams.audio[0])
        streams = {s.index: target.add_stream_from_template(s) for s in tracks}
        for packet in source.demux(*tracks):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            delay = move(packet.stream.type, float(packet.pts * packet.time_base))
            if delay is None:
                continue
            ticks = round(delay / packet.stream.time_base)
            packet.pts, packet.dts = packet.pts + ticks, packet.dts + ticks
            packet.stream = streams[packet.stream.index]
            target.mux(packet)
    return out.getvalue()


def shifted(mp4: bytes, audio_seconds: float, video_seconds: float = 0.0, audio_from: float | None = None) -> bytes:
    """``mp4`` with its audio track starting ``audio_seconds`` later and its video ``video_seconds``
    later: a track that starts late, as a recorder or a cut writes it. With ``audio_from``, only the
    audio from that time on moves: a gap in the track, as lost packets leave."""

    def move(kind: str, t: float) -> float:
        if kind == "video":
            return video_seconds
        return audio_seconds if audio_from is None or t >= audio_from else 0.0

    return remux(mp4, move)


def audio_cut(mp4: bytes, seconds: float) -> bytes:
    """``mp4`` with its audio track ending at ``seconds``, the video whole."""
    return remux(mp4, lambda kind, t: None if kind == "audio" and t >= seconds else 0.0)


def lag(sound: np.ndarray, later: np.ndarray, near: int, within: int = 200) -> int:
    """How many samples later ``sound`` (its second 1–2) plays in ``later``, searched ``within`` of ``near``."""
    piece = sound[16_000:32_000]
    return max(range(near - within, near + within + 1),
               key=lambda k: float(np.dot(piece, later[16_000 + k : 32_000 + k])))  # fmt: skip


def overfit(model: DiffusionAutoencoder, images: torch.Tensor, steps: int, lr: float = 3e-3) -> list[float]:
    """Train stage 1 on ``images`` for ``steps`` steps; returns the loss history."""
    sched = training_scheduler(model.cfg)
    opt = torch.optim.Adam([p for p in model.parameters()], lr=lr)
    g = torch.Generator().manual_seed(0)
    losses = []
    model.train()
    for _ in range(steps):
        loss = diffusion_loss(model.denoiser, images, model.encoder(images), sched, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="session")
def trained_tiny():
    """A tiny pixel-space autoencoder overfitted on 4 smooth images: (model, images, loss history)."""
    torch.manual_seed(0)
    model = DiffusionAutoencoder(tiny_config())
    images = smooth_images(4)
    losses = overfit(model, images, steps=250)
    return model.eval(), images, losses


def tiny_wav2vec2_config(hidden: int = 32) -> dict:
    """Keyword arguments of a tiny ``Wav2Vec2Config`` (or ``HubertConfig``): ``hidden``-d features, 2 layers."""
    return dict(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden,
                conv_dim=(hidden // 2,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)  # fmt: skip


def save_tiny_wav2vec2(path, hidden: int = 32):
    """A tiny random ``Wav2Vec2Model`` (seed 0) saved with ``save_pretrained`` at ``path``; returns it."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(**tiny_wav2vec2_config(hidden)))
    model.save_pretrained(path)
    return model


def count_listings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """From now on, each listing of a shard folder (its sidecars read) → (folder, kind) in the list returned."""
    from fet.data import shards

    calls, real = [], shards.sidecar_files
    monkeypatch.setattr(shards, "sidecar_files", lambda out, kind: calls.append((out, kind)) or real(out, kind))
    return calls
