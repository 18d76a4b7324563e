"""Reading video upright: a phone stores the pixels as its sensor lay and marks the turn in the
container's display matrix; the reader gives the frames as players show them, through decord or, where
decord fails, through FFmpeg, which it decodes in order once."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fet.landmarks.detector import FaceLandmarkDetector
from fet.media.mp4 import encode_mp4
from fet.media.video import VideoReader
from tests.conftest import media

MOUTH, LEFT_EYE = 13, 159  # MediaPipe face-mesh points: upper inner lip, left upper eyelid


def turned(mp4: bytes, degrees: int) -> bytes:
    """``mp4`` with its video track's display matrix set to turn the picture ``degrees`` clockwise on
    screen, as a phone writes it (ISO 14496-12 tkhd: 16.16 fixed-point a b u / c d v / x y w)."""
    at = mp4.index(b"tkhd") + 4
    at += 4 + (32 if mp4[at] == 1 else 20) + 16  # version/flags, times/ids/duration, reserved/layer/volume
    cos, sin = {90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    matrix = struct.pack(">9i", cos << 16, sin << 16, 0, -sin << 16, cos << 16, 0, 0, 0, 1 << 30)
    return mp4[:at] + matrix + mp4[at + 36 :]


def phone_video(upright: np.ndarray, degrees: int) -> bytes:
    """What a phone writes for ``upright`` frames: the pixels turned back, and the turn in the matrix."""
    return turned(
        encode_mp4(np.ascontiguousarray(np.rot90(upright, degrees // 90, axes=(1, 2))), None, 16_000), degrees
    )


@pytest.fixture(scope="module")
def talking() -> np.ndarray:
    """30 frames of a real talking head, cropped to a portrait 400 wide and 524 high."""
    return VideoReader(media("video/retalking_5.mp4")).frames(np.arange(30))[:, :, 62:462]


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_phone_video_is_read_upright(tmp_path, talking, degrees):
    reader = VideoReader(phone_video(talking, degrees))
    assert (reader.info.num_frames, reader.info.width, reader.info.height) == (30, 400, 524)
    got = reader.frames(np.arange(30))
    assert np.abs(got.astype(int) - talking).mean() < 3  # the codec's loss only
    with FaceLandmarkDetector() as detector:
        face = detector.require(got[0], "first frame")
    assert face.points[MOUTH, 1] > face.points[LEFT_EYE, 1] + 0.1  # the mouth below the eyes


@pytest.mark.parametrize("degrees", [90, 270])
def test_a_turned_video_decord_garbles_is_read_upright_by_ffmpeg_in_order(degrees):
    upright = np.zeros((30, 64, 48, 3), np.uint8)  # decord garbles a quarter turn of 64 × 48 (0.6.0)
    upright[:, :16, :12] = 255  # a white corner, top left
    upright[:] += (np.arange(30) * 6)[:, None, None, None].astype(np.uint8)  # and each frame's index
    reader = VideoReader(phone_video(upright, degrees))
    assert (reader.info.decoder, reader.info.width, reader.info.height) == ("pyav", 48, 64)
    got = np.concatenate([frames for _, frames in reader.segments(25, 12)])  # three segments, in order
    assert got.shape == upright.shape and np.abs(got.astype(int) - upright).mean() < 3
    assert np.array_equal(reader.frames(np.array([4, 5])), got[4:6])  # an earlier frame: decoded again
