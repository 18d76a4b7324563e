"""Reading video as a phone recorded it: upright (the phone stores the pixels as its sensor lay and
marks the turn in the container's display matrix) and by time (its frame rate varies), through decord
or, where decord fails, through FFmpeg, which the reader decodes in order once."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from fet.audio.load import align_start, load_audio
from fet.landmarks.detector import FaceLandmarkDetector
from fet.media.mp4 import encode_mp4
from fet.media.video import VideoReader, timeline
from tests.conftest import media
from tests.fet.helpers import lag, shifted

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
def test_a_turned_video_too_narrow_for_decord_is_read_upright_by_ffmpeg_in_order(degrees):
    upright = np.zeros((30, 64, 48, 3), np.uint8)  # decord 0.6.0 garbles frames 48 wide
    upright[:, :16, :12] = 255  # a white corner, top left
    upright[:] += (np.arange(30) * 6)[:, None, None, None].astype(np.uint8)  # and each frame's index
    reader = VideoReader(phone_video(upright, degrees))
    assert (reader.info.decoder, reader.info.width, reader.info.height) == ("pyav", 48, 64)
    got = np.concatenate([frames for _, frames in reader.segments(25, 12)])  # three segments, in order
    assert got.shape == upright.shape and np.abs(got.astype(int) - upright).mean() < 3
    assert np.array_equal(reader.frames(np.array([4, 5])), got[4:6])  # an earlier frame: decoded again


def variable_rate_mp4(frames: np.ndarray, starts_ms: np.ndarray) -> bytes:
    """H.264 mp4 whose frame i starts at ``starts_ms[i]`` milliseconds."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=50)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for frame, start in zip(frames, starts_ms, strict=True):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts, picture.time_base = int(start), Fraction(1, 1000)
            out.mux(stream.encode(picture))
        out.mux(stream.encode())
    return buf.getvalue()


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_a_variable_frame_rate_is_read_by_time(decoder):
    gaps = np.array([20, 60] * 30 + [20] * 30)  # ms: 25 fps on average for 2.4 s, then 50 fps
    starts = np.concatenate([[0], np.cumsum(gaps)[:-1]])
    index = np.arange(len(starts))
    upright = np.zeros((len(starts), 64, 64 if decoder == "decord" else 48, 3), np.uint8)
    upright[..., 0], upright[..., 1] = (index * 16 % 256)[:, None, None], (index // 16 * 40)[:, None, None]
    if decoder == "decord":
        data = variable_rate_mp4(upright, starts)
    else:  # 48 wide, which decord garbles, and turned a quarter
        data = turned(variable_rate_mp4(np.rot90(upright, 1, axes=(1, 2)), starts), 90)
    reader = VideoReader(data)
    assert reader.info.decoder == decoder
    ticks = timeline(reader.info, 25)
    on_screen = np.searchsorted(starts, np.arange(len(ticks)) * 40, side="right") - 1  # the last frame begun
    assert np.array_equal(ticks, on_screen)  # by the average rate, tick 50 (2 s) would show frame 59 (2.34 s)
    frames = reader.frames(ticks).astype(int)
    shown = np.round(frames[:, 32, 24, 1] / 40) * 16 + np.round(frames[:, 32, 24, 0] / 16) % 16
    assert np.array_equal(shown, on_screen)


@pytest.mark.parametrize("audio_s, video_s", [(0.5, 0.0), (0.0, 0.5)])
def test_a_track_that_starts_late_is_put_on_the_frames_clock(audio_s, video_s):
    """A talking head whose sound starts half a second after its first frame, or whose picture starts
    half a second after the sound: the reader says by how much, and ``align_start`` puts the sound where a
    player plays it (on the frames' clock, sample 0 at the first frame)."""
    original = media("video/retalking_5.mp4").read_bytes()
    sound = load_audio(original)
    data = shifted(original, audio_s, video_s)
    offset = VideoReader(data).info.audio_offset
    assert offset == pytest.approx(audio_s - video_s, abs=0.03)  # 23 ms of AAC priming now plays first
    expected = round((audio_s - video_s) * 16_000)
    assert lag(sound, align_start(load_audio(data), offset), expected) == pytest.approx(expected, abs=40)
    assert VideoReader(original).info.audio_offset == 0.0
