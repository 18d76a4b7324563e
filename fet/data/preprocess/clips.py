"""Clip preprocessing: one talking clip in, shard rows out (one per segment, or a reject).

Decode (decord, PyAV fallback) → 25 fps timeline, in segments of ``segment_seconds`` → 16 kHz mono
audio → a steady face crop (``fet.data.face_track``) → MediaPipe landmarks, transform, blendshapes and
pose on every cropped frame → audio features → quality fields and filters → rows. A clip that fails
anywhere becomes a reject row with a reason code and a message naming the input; the job carries on.
Models are loaded once per object (one MediaPipe FaceLandmarker, one audio encoder), so a Ray actor
pays for them once.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np

from fet import storage
from fet.audio.features import AudioEncoder
from fet.audio.load import SAMPLE_RATE, AudioError, align_start, load_audio
from fet.data import shards
from fet.data.face_track import crop_track, downscale, track_face
from fet.data.preprocess.config import PreprocessConfig, encoder_name
from fet.data.preprocess.rows import EMPTY_CLIP, Reject, base_row, encode_jpeg, resize_square
from fet.data.sources import ClipItem
from fet.landmarks.detector import NUM_BLENDSHAPES, FaceLandmarkDetector, FaceLandmarks
from fet.landmarks.face_mesh import NUM_LANDMARKS, contours
from fet.landmarks.projection import matrix_to_pose
from fet.media.video import VideoError, VideoReader, segment_starts, timeline
from fet.metrics.sync import CHIN, FOREHEAD, landmark_audio_sync


def landmark_jitter(landmarks: np.ndarray, found: np.ndarray) -> float:
    """Median per-frame second difference of the face-oval points, as a fraction of the face height.
    Rigid points move smoothly with the head; detector noise shows as frame-to-frame zig-zag."""
    oval = sorted({i for loop in contours()["face_oval"] for i in loop})
    p = landmarks[:, oval, :2].astype(np.float64)
    ok = found[:-2] & found[1:-1] & found[2:]
    if not ok.any():
        return float("nan")
    accel = np.linalg.norm(p[:-2] - 2 * p[1:-1] + p[2:], axis=-1).mean(-1)[ok]
    height = np.linalg.norm(landmarks[1:-1, FOREHEAD, :2] - landmarks[1:-1, CHIN, :2], axis=-1)[ok]
    return float(np.median(accel / np.maximum(height, 1e-6)))


def fill_missing(detections: list[FaceLandmarks | None]) -> dict[str, np.ndarray]:
    """Per-frame detections → stacked arrays; frames without a face are interpolated from the nearest
    frames with one (``face_found`` marks which are real)."""
    T = len(detections)
    found = np.array([d is not None for d in detections])
    out = {
        "landmarks": np.zeros((T, NUM_LANDMARKS, 3), np.float32),
        "transform": np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
        "blendshapes": np.zeros((T, NUM_BLENDSHAPES), np.float32),
    }
    idx = np.flatnonzero(found)
    for t in idx:
        d = detections[t]
        out["landmarks"][t], out["transform"][t], out["blendshapes"][t] = d.points, d.transform, d.blendshapes
    if 0 < len(idx) < T:
        ticks = np.arange(T)
        for k, arr in out.items():
            flat = arr.reshape(T, -1)
            for j in range(flat.shape[1]):
                flat[:, j] = np.interp(ticks, idx, flat[idx, j])
            out[k] = flat.reshape(arr.shape)
    out["face_found"] = found
    return out


class ClipPreprocessor:
    """Turns ``ClipItem``s into clip rows. ``audio_features=False`` leaves features to a later stage
    (``add_audio_features``), e.g. wav2vec2 actors on GPUs."""

    def __init__(self, cfg: PreprocessConfig, audio_features: bool = True) -> None:
        self.cfg = cfg
        self.detector = FaceLandmarkDetector(cfg.face_landmarker)
        self.encoder_cfg = cfg.audio_encoder
        self.encoder = AudioEncoder(self.encoder_cfg).eval() if audio_features else None

    def __call__(self, item: ClipItem, skip: set[str] = frozenset()) -> list[dict[str, Any]]:
        """All rows of one input: accepted segments and rejects. ``skip``: segment ids already published."""
        timings = {"t_decode": 0.0, "t_landmarks": 0.0, "t_audio": 0.0, "t_encode": 0.0}
        t = time.perf_counter()
        try:
            reader, audio, sidecar = self._open(item)
        except Reject as r:
            return [self._reject(item, item.item_id, 1, r, timings)]
        except storage.NotFoundError as e:  # the video, its audio or its sidecar (listed, then deleted)
            return [self._reject(item, item.item_id, 1, Reject("missing", str(e)), timings)]
        except storage.StorageError as e:  # not the input's fault: tried again on the next run
            return [self._reject(item, item.item_id, 1, Reject(shards.UNREACHABLE, str(e)), timings)]
        except Exception as e:  # the job carries on; the reason says what happened
            return [self._reject(item, item.item_id, 1, Reject("error", f"{item.video}: {type(e).__name__}: {e}"),
                                 timings)]  # fmt: skip
        timings["t_decode"] += time.perf_counter() - t
        seg_frames = max(1, round(self.cfg.segment_seconds * self.cfg.fps))
        min_frames = max(1, round(self.cfg.filters.min_seconds * self.cfg.fps))
        ticks = timeline(reader.info, self.cfg.fps)
        starts = segment_starts(len(ticks), seg_frames, min_frames)
        rows = []
        for k, start in enumerate(starts):
            clip_id = item.item_id if len(starts) == 1 else f"{item.item_id}@{k:03d}"
            if clip_id in skip:
                continue
            end = starts[k + 1] if k + 1 < len(starts) else len(ticks)
            seg_t = {key: 0.0 for key in timings}
            try:
                t = time.perf_counter()
                frames = reader.frames(ticks[start:end])
                seg_t["t_decode"] += time.perf_counter() - t
                row = self._segment(item, clip_id, k, start, frames, audio, sidecar, reader, seg_t)
                row["item_segments"] = len(starts)
                rows.append(row)
            except Reject as r:
                rows.append(self._reject(item, clip_id, len(starts), r, seg_t))
            except VideoError as e:
                rows.append(self._reject(item, clip_id, len(starts), Reject(e.reason, str(e)), seg_t))
            except Exception as e:  # one bad segment must not stop the job; the reason says what happened
                detail = f"{item.video} segment {k}: {type(e).__name__}: {e}"
                rows.append(self._reject(item, clip_id, len(starts), Reject("error", detail), seg_t))
        if rows:  # opening costs belong to the first row
            rows[0]["t_decode"] += timings["t_decode"]
        return rows

    def _reject(self, item: ClipItem, clip_id: str, segments: int, r: Reject, timings: dict) -> dict[str, Any]:
        row = {**EMPTY_CLIP, **base_row(item, item.video, segments), **timings}
        row.update(clip_id=clip_id, speaker=item.speaker, reject_reason=r.reason, reject_detail=r.detail)
        return row

    def _open(self, item: ClipItem) -> tuple[VideoReader, np.ndarray | None, dict | None]:
        f = self.cfg.filters
        try:
            reader = VideoReader(item.video, name=item.video, fps=item.fps)
        except VideoError as e:
            raise Reject(e.reason, str(e)) from e
        seconds = reader.info.seconds
        if seconds < f.min_seconds:
            raise Reject("too_short", f"{item.video}: {seconds:.2f} s of video, expected at least {f.min_seconds:g} s")
        if seconds > f.max_seconds:
            raise Reject("too_long", f"{item.video}: {seconds:.1f} s of video, the limit is {f.max_seconds:g} s "
                                     "(filters.max_seconds)")  # fmt: skip
        audio = None
        source = item.audio or (item.video if reader.info.decoder != "images" else None)
        if source is not None:
            try:
                audio = load_audio(source, SAMPLE_RATE, max_seconds=f.max_seconds + 1, name=source)
                if source == item.video:  # the container's own track: on the frames' clock
                    audio = align_start(audio, reader.info.audio_offset, SAMPLE_RATE, source)
            except AudioError as e:
                if f.require_audio:
                    reason = "no_audio" if "no audio stream" in str(e) or "no such audio" in str(e) else "bad_audio"
                    raise Reject(reason, str(e)) from e
        elif f.require_audio:
            raise Reject("no_audio", f"{item.video}: frames without audio; set filters.require_audio=false to keep")
        sidecar = dict(np.load(io.BytesIO(storage.read_bytes(item.sidecar)))) if item.sidecar else None
        return reader, audio, sidecar

    def _segment(self, item: ClipItem, clip_id: str, k: int, start: int, frames: np.ndarray, audio: np.ndarray | None,
                 sidecar: dict | None, reader: VideoReader, timings: dict) -> dict[str, Any]:  # fmt: skip
        cfg, f = self.cfg, self.cfg.filters
        T, H, W = frames.shape[:3]
        missing = (start + T) / cfg.fps - (audio.size / SAMPLE_RATE if audio is not None else np.inf)
        if missing > f.max_missing_audio:  # silence would teach a moving mouth to say nothing
            raise Reject("short_audio", f"{item.video} segment {k}: the audio track ends {missing:.2f} s before the "
                                        f"segment does; the limit is {f.max_missing_audio:g} s "
                                        "(filters.max_missing_audio)")  # fmt: skip
        t = time.perf_counter()
        if sidecar is not None:  # SynthTalk: frames are aligned crops and the landmarks are ground truth
            crops = np.stack([resize_square(fr, cfg.size) for fr in frames])
            arrays = {
                "landmarks": sidecar["landmarks"][start : start + T].astype(np.float32),
                "transform": sidecar["transform"][start : start + T].astype(np.float32),
                "blendshapes": np.zeros((T, NUM_BLENDSHAPES), np.float32),  # not modelled by SynthTalk
                "face_found": np.ones(T, bool),
            }
            if arrays["landmarks"].shape[0] != T:
                raise Reject("corrupt", f"{item.sidecar}: {arrays['landmarks'].shape[0]} landmark frames for {T} "
                                        "video frames")  # fmt: skip
            face_px, source = float(min(H, W)) / cfg.crop_scale, "sidecar"
        else:
            track = track_face(frames, self.detector, cfg.detect_every, cfg.crop_scale,
                               cfg.smooth_seconds * cfg.fps, cfg.detection_size)  # fmt: skip
            if track is None:
                raise Reject("no_face", f"{item.video} segment {k}: no face found (MediaPipe FaceLandmarker on "
                                        f"every {cfg.detect_every}th frame)")  # fmt: skip
            face_px = track.side / cfg.crop_scale
            if face_px < f.min_face_px:
                raise Reject("small_face", f"{item.video} segment {k}: face about {face_px:.0f} px, the minimum is "
                                           f"{f.min_face_px:g} px (filters.min_face_px)")  # fmt: skip
            crops = crop_track(frames, track, cfg.size)
            small = (
                crops if cfg.size <= cfg.landmark_size else np.stack([downscale(c, cfg.landmark_size) for c in crops])
            )
            arrays = fill_missing(self.detector.detect_video(small, cfg.fps))
            source = "mediapipe"
        timings["t_landmarks"] += time.perf_counter() - t
        ratio = float(arrays["face_found"].mean())
        if ratio < f.min_face_ratio:
            raise Reject("no_face", f"{item.video} segment {k}: a face in {ratio:.0%} of frames, the minimum is "
                                    f"{f.min_face_ratio:.0%} (filters.min_face_ratio)")  # fmt: skip
        jitter = landmark_jitter(arrays["landmarks"], arrays["face_found"])
        if f.max_jitter is not None and jitter > f.max_jitter:
            raise Reject("jitter", f"{item.video} segment {k}: landmark jitter {jitter:.4f} of face height, the "
                                   f"maximum is {f.max_jitter:g} (filters.max_jitter)")  # fmt: skip
        hop = SAMPLE_RATE // cfg.fps
        seg_audio = np.zeros(0, np.float32)
        sync_offset, sync_corr = 0, float("nan")
        if audio is not None:
            seg_audio = np.zeros(T * hop, np.float32)
            piece = audio[start * hop : (start + T) * hop]
            seg_audio[: len(piece)] = piece
            score = landmark_audio_sync(arrays["landmarks"], seg_audio, SAMPLE_RATE, cfg.fps)
            sync_offset, sync_corr = score.offset, score.correlation
            if f.min_sync is not None and not sync_corr >= f.min_sync:
                raise Reject("sync", f"{item.video} segment {k}: mouth/audio correlation {sync_corr:.2f}, the "
                                     f"minimum is {f.min_sync:g} (filters.min_sync)")  # fmt: skip
        row = {**EMPTY_CLIP, **base_row(item, item.video, 1), **timings}
        row.update(
            clip_id=clip_id, speaker=item.speaker, segment=k, start_seconds=start / cfg.fps, fps=cfg.fps,
            num_frames=T, size=cfg.size, sample_rate=SAMPLE_RATE, has_audio=audio is not None,
            audio=shards.pack(seg_audio), landmark_source=source, face_ratio=ratio, jitter=jitter,
            sync_offset=sync_offset, sync_corr=sync_corr, source_width=reader.info.width,
            source_height=reader.info.height, source_fps=reader.info.fps, face_px=face_px,
            decoder=reader.info.decoder,
            pose=shards.pack(np.stack([matrix_to_pose(m.astype(np.float64), 0.0) for m in arrays["transform"]])
                             .astype(np.float32)),
            **{k2: shards.pack(v) for k2, v in arrays.items()},
        )  # fmt: skip
        if self.encoder is not None:
            self.add_audio_features(row)
        t = time.perf_counter()
        row["frames"] = [encode_jpeg(c, cfg.jpeg_quality) for c in crops]
        row["t_encode"] += time.perf_counter() - t
        return row

    def add_audio_features(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.encoder is None:
            self.encoder = AudioEncoder(self.encoder_cfg).eval()
        return add_audio_features(row, self.encoder)


def add_audio_features(row: dict[str, Any], encoder: AudioEncoder) -> dict[str, Any]:
    """Fill ``audio_features`` (T, D) float16 of an accepted row that has audio (rejects pass through)."""
    if row["reject_reason"] or not row["has_audio"]:
        return row
    t = time.perf_counter()
    feats = encoder(shards.unpack(row["audio"]), int(row["num_frames"])).numpy().astype(np.float16)
    row.update(audio_features=shards.pack(feats), audio_encoder=encoder_name(encoder.cfg))
    row["t_audio"] += time.perf_counter() - t
    return row
