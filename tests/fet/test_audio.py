import io
import os
import re
import tempfile
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from fet.audio.features import AudioEncoder, AudioEncoderConfig, interpolate_to_frames
from fet.audio.load import AudioError, align_start, check_speech, load_audio, num_frames
from tests.conftest import media
from tests.fet.helpers import save_tiny_wav2vec2, shifted, tiny_wav2vec2_config
from tests.fet.talking_helpers import speech


def _encode(audio: np.ndarray, sr: int, fmt: str, codec: str, channels: int = 1) -> bytes:
    """Write audio with PyAV into a container in memory (stereo duplicates the channel); PyAV converts
    the float planar frames to whatever sample format the codec takes."""
    buf = io.BytesIO()
    layout = "stereo" if channels == 2 else "mono"
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        data = np.repeat(audio[None], channels, 0).astype(np.float32)
        for start in range(0, data.shape[1], 1024):
            chunk = np.ascontiguousarray(data[:, start : start + 1024])
            f = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            f.sample_rate, f.pts = sr, start
            out.mux(stream.encode(f))
        out.mux(stream.encode())
    return buf.getvalue()


@pytest.mark.parametrize(
    "fmt,codec,sr,channels",
    [("wav", "pcm_s16le", 44100, 2), ("flac", "flac", 48000, 1), ("mp3", "libmp3lame", 44100, 2),
     ("ipod", "aac", 22050, 1)],  # ipod = .m4a
)  # fmt: skip
def test_any_format_rate_and_layout_decodes_to_16k_mono(fmt, codec, sr, channels):
    seconds = 2.0
    t = np.arange(int(seconds * sr)) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = load_audio(_encode(tone, sr, fmt, codec, channels))
    assert out.dtype == np.float32 and out.ndim == 1
    # lossy codecs pad with encoder delay; the duration is still right to within 60 ms
    assert abs(out.size / 16000 - seconds) < 0.06, out.size
    spectrum = np.abs(np.fft.rfft(out[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 2  # the tone survives resampling


def test_real_speech_files_load(tmp_path):
    out = load_audio(media("audio/sadtalker_chinese_news_zh.wav"))  # 48 kHz stereo
    assert abs(out.size / 16000 - 8.0) < 0.1
    check_speech(out, 0.5)


def test_bad_audio_is_refused_with_its_reason(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(b"this is not audio at all" * 10, name="upload.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav"):
        load_audio(tmp_path / "empty.wav")
    wav = _encode(speech(3.0), 16000, "wav", "pcm_s16le")
    with pytest.raises(AudioError, match="longer than the maximum of 1 s"):
        load_audio(wav, max_seconds=1.0)
    with pytest.raises(AudioError, match="truncated.wav"):  # a header promising more than is there still
        load_audio(wav[:30], name="truncated.wav")
    with pytest.raises(AudioError, match="silent"):
        check_speech(np.zeros(16000, np.float32), 0.2)
    with pytest.raises(AudioError, match="at least 0.2 s"):
        check_speech(speech(0.1), 0.2)


def test_speech_through_a_pipe_loads_and_a_folder_is_named_as_one(tmp_path):
    """`fet generate --audio <(curl ...)` gives a /dev/fd path that is a pipe: it loads, an mp4 too, whose
    index FFmpeg finds only by seeking (it was refused as "no such audio file"). A folder is named as one."""
    clip = media("video/retalking_2.mp4")
    read, write = os.pipe()

    def send() -> None:
        with open(write, "wb") as pipe:
            pipe.write(Path(clip).read_bytes())

    writer = threading.Thread(target=send, daemon=True)
    writer.start()
    try:
        through_a_pipe = load_audio(f"/dev/fd/{read}")
    finally:
        os.close(read)
    writer.join(10)
    assert through_a_pipe.size > 4 * 16000 and np.array_equal(through_a_pipe, load_audio(clip))
    with pytest.raises(AudioError, match=f"{tmp_path}: a folder, not an audio file"):
        load_audio(tmp_path)


def test_video_without_audio_track_is_refused(tmp_path):
    from fet.media.mp4 import encode_mp4

    path = tmp_path / "silent.mp4"
    path.write_bytes(encode_mp4(np.zeros((5, 16, 16, 3), np.uint8), None, 16000))
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(path)


def test_align_start_pads_a_late_track_and_cuts_an_early_one():
    sound = np.arange(1, 16_001, dtype=np.float32)
    late = align_start(sound, 0.25)
    assert late.size == 20_000 and not late[:4000].any() and np.array_equal(late[4000:], sound)
    assert np.array_equal(align_start(sound, -0.25), sound[4000:])
    assert align_start(sound, 0.0) is sound
    with pytest.raises(AudioError, match=r"clip.mp4: the audio ends 1.00 s before the first video frame"):
        align_start(sound, -2.0, name="clip.mp4")


def test_a_gap_in_the_track_is_silence_and_what_follows_keeps_its_time():
    """A talking head whose sound skips half a second at 2 s (packets lost): the gap is silence, as a
    player plays it, and the speech after it lands at its own time, not half a second early."""
    original = media("video/retalking_5.mp4").read_bytes()
    sound, gapped = load_audio(original), load_audio(shifted(original, 0.5, audio_from=2.0))
    assert gapped.size == sound.size + 8000  # 0.5 s at 16 kHz
    silent = np.flatnonzero(gapped[30_000:42_000] == 0) + 30_000
    assert len(silent) == 8000 and silent[-1] - silent[0] == 7999  # one run of silence, 0.5 s long,
    assert 32_000 <= silent[0] <= 32_400  # after the last packet that starts before 2 s (23 ms each)
    np.testing.assert_allclose(gapped[48_000:64_000], sound[40_000:56_000], atol=1e-6)  # seconds 2.5–3.5


def test_frame_count_and_feature_alignment():
    assert num_frames(16000 * 2, 25) == 50 and num_frames(100, 25) == 1
    # a ramp sampled at 100 Hz lands on the video timeline at the sub-frame centres
    times = np.arange(400) / 100
    feats = times[:, None].astype(np.float32)
    out = interpolate_to_frames(feats, times, num_frames=100, fps=25, stack=4)
    assert out.shape == (100, 4)
    np.testing.assert_allclose(out[10], (10 + (np.arange(4) + 0.5) / 4) / 25, atol=1e-6)


def test_mel_encoder_shapes_and_speech_sensitivity():
    enc = AudioEncoder(AudioEncoderConfig(kind="mel", n_mels=40))
    audio = speech(2.0)
    f = enc(audio, num_frames(audio.size, 25))
    assert f.shape == (50, 160) and torch.isfinite(f).all()
    # per-utterance normalisation: loudness does not change the features
    torch.testing.assert_close(enc(audio * 0.1, 50), f, atol=1e-3, rtol=1e-3)


def test_wav2vec2_encoder_from_a_saved_model_and_from_s3(tmp_path, s3_bucket, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # S3 copies land here, to look for after
    from fet import storage

    save_tiny_wav2vec2(tmp_path / "w2v")
    audio = speech(5.0)
    local = AudioEncoder(AudioEncoderConfig(kind="wav2vec2", path=str(tmp_path / "w2v"), stack=2, chunk_seconds=2.0))
    f = local(audio, 125)
    assert f.shape == (125, 64) and torch.isfinite(f).all()
    storage.upload_dir(tmp_path / "w2v", f"{s3_bucket}/w2v")
    remote = AudioEncoder(AudioEncoderConfig(kind="wav2vec2", path=f"{s3_bucket}/w2v", stack=2, chunk_seconds=2.0))
    torch.testing.assert_close(remote(audio, 125), f)
    assert not list(tmp_path.rglob("fet-s3-*/**/model.safetensors"))  # the S3 copy is gone once loaded
    # one pass vs chunks of 2 s with 1 s of context: the same features up to edge effects
    whole = AudioEncoder(AudioEncoderConfig(kind="wav2vec2", path=str(tmp_path / "w2v"), stack=2, chunk_seconds=60))
    corr = np.corrcoef(whole(audio, 125).numpy().ravel(), f.numpy().ravel())[0, 1]
    assert corr > 0.95, corr
    with pytest.raises(ValueError, match="needs path="):
        AudioEncoder(AudioEncoderConfig(kind="wav2vec2"))


def test_a_wav2vec2_folder_is_checked_whole_before_workers_load_it(tmp_path, s3_bucket):
    """``check_audio_weights`` (a job's driver, before its workers start) reads config.json and the weights'
    headers only: a folder with weights cut short, with none, with a shard missing or of another model is
    refused naming the file; the encoder itself says in one line why a folder does not load."""
    import shutil

    from transformers import HubertConfig

    from fet import storage
    from fet.audio.features import check_audio_weights

    model = save_tiny_wav2vec2(tmp_path / "whole")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="60KB")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    storage.upload_dir(tmp_path / "whole", f"{s3_bucket}/whole")
    for path in (tmp_path / "whole", tmp_path / "sharded", f"{s3_bucket}/whole"):
        check_audio_weights(AudioEncoderConfig(kind="wav2vec2", path=str(path)))  # whole: no error

    weights = (tmp_path / "whole" / "model.safetensors").read_bytes()
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    (tmp_path / "cut" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    storage.write_bytes(f"{s3_bucket}/cut/config.json", (tmp_path / "whole" / "config.json").read_bytes())
    storage.write_bytes(f"{s3_bucket}/cut/model.safetensors", weights[: len(weights) // 2])
    shutil.copytree(tmp_path / "sharded", tmp_path / "shard_lost")
    lost = sorted((tmp_path / "shard_lost").glob("model-*.safetensors"))[-1]
    lost.unlink()
    (tmp_path / "config_only").mkdir()
    shutil.copy(tmp_path / "whole" / "config.json", tmp_path / "config_only")
    HubertConfig(**tiny_wav2vec2_config()).save_pretrained(tmp_path / "hubert")
    shutil.copy(tmp_path / "whole" / "model.safetensors", tmp_path / "hubert")
    cases = {
        tmp_path / "cut": (ValueError, f"{tmp_path / 'cut' / 'model.safetensors'}: cut short: {len(weights) // 2} of"),
        f"{s3_bucket}/cut": (ValueError, f"{s3_bucket}/cut/model.safetensors: cut short"),
        tmp_path / "shard_lost": (storage.NotFoundError, f"{lost}: no such file"),
        tmp_path / "config_only": (FileNotFoundError, "config_only: config.json without weights (none of model.safetensors"),
        tmp_path / "hubert": (ValueError, "config.json: model_type 'hubert', not 'wav2vec2'"),
        tmp_path / "nothing": (FileNotFoundError, "nothing: no config.json; expected a saved Wav2Vec2Model directory"),
    }  # fmt: skip
    for path, (error, message) in cases.items():
        with pytest.raises(error, match=re.escape(message)):
            check_audio_weights(AudioEncoderConfig(kind="wav2vec2", path=str(path)))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'cut'}: the saved Wav2Vec2Model does not load: ")):
        AudioEncoder(AudioEncoderConfig(kind="wav2vec2", path=str(tmp_path / "cut")))
