"""The model deployments behind the ingress; each loads the bundle once and scales on its own.

- ``Encoder``: face detection, alignment, E_sem and DDIM inversion of a reference image (the costly
  part of a request), stored under a content id (the image's bytes and a fingerprint of the weights and
  settings that inverted it) so the same face is never inverted twice, and a bundle replaced at the
  same path never reuses references of the old one.
- ``Animator``: speech → per-frame landmarks (audio encoder, Audio2Mesh, Audio2Pose, projection).
- ``Renderer``: landmarks (+ edits) → frames; ``@serve.batch`` gathers frames of concurrent requests
  into one denoiser batch, whatever reference each frame belongs to.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import numpy as np
from ray import serve

from fet import storage
from fet.editing.interpolate import lerp, slerp
from fet.pipeline import FaceEditTalkerPipeline, Reference
from fet.references import inversion_fingerprint, reference_from_bytes, reference_id, reference_to_bytes
from serve.options import AppOptions
from serve.store import StateStore

FrameRequest = tuple[str, np.ndarray | None, dict[str, float]]  # reference id, landmarks (None: its own), edits


class _Models:
    """Bundle, store and a small LRU of decoded references, shared by the three deployments."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = AppOptions(**options)
        overrides = {"steps": self.options.steps} if self.options.steps else {}
        self.pipeline = FaceEditTalkerPipeline.from_bundle(self.options.bundle, self.options.device, **overrides)
        self.store = StateStore(self.options.state_dir, touch_every=self.options.reference_ttl_seconds / 10)
        self.cache: OrderedDict[str, Reference] = OrderedDict()

    def reference(self, ref_id: str) -> Reference:
        if ref_id not in self.cache:
            try:
                data = self.store.get_reference(ref_id)
            except storage.NotFoundError:
                raise KeyError(
                    f"reference_id {ref_id!r}: unknown; encode the image first (POST /v1/references)"
                ) from None
            self.cache[ref_id] = reference_from_bytes(data, self.pipeline.device)
            while len(self.cache) > 64:
                self.cache.popitem(last=False)
        self.cache.move_to_end(ref_id)
        return self.cache[ref_id]

    def ready(self) -> bool:
        return True


@serve.deployment
class Encoder(_Models):
    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.fingerprint = inversion_fingerprint(self.pipeline)  # what a stored reference was made with

    def encode(self, image: bytes) -> dict[str, Any]:
        """→ {reference_id, notes, cached}; NoFaceError / ImageError reach the caller."""
        ref_id = reference_id(self.fingerprint, image)
        if self.store.use_reference(ref_id):  # stored: marked used, so a sweep keeps it
            ref = self.reference(ref_id)
            return {"reference_id": ref_id, "notes": ref.notes, "cached": True}
        cached = ref_id in self.cache  # inverted here before its stored copy expired: stored again
        ref = self.cache[ref_id] if cached else self.pipeline.encode(image)
        self.store.put_reference(ref_id, reference_to_bytes(ref))
        self.cache[ref_id] = ref
        return {"reference_id": ref_id, "notes": ref.notes, "cached": cached}


@serve.deployment
class Animator(_Models):
    def motion(self, ref_id: str, speech: np.ndarray, pose_style: int | None = None) -> np.ndarray:
        """16 kHz speech → (T, 478, 2) landmarks of the reference's aligned crop."""
        return self.pipeline.motion(speech, self.reference(ref_id), pose_style)


@serve.deployment
class Renderer(_Models):
    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.render_frames.set_max_batch_size(self.options.render_batch)
        self.render_frames.set_batch_wait_timeout_s(self.options.render_wait_s)

    async def render(self, ref_id: str, points: np.ndarray | None, edits: dict[str, float]) -> np.ndarray:
        """One frame: landmarks (478, 2) of the aligned crop (None: the reference's own, i.e. an edited
        photo) + {attribute: α} → (S, S, 3) uint8."""
        frame = await self.render_frames((ref_id, points, edits))
        if isinstance(frame, Exception):
            raise frame
        return frame

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def render_frames(self, items: list[FrameRequest]) -> list[np.ndarray | Exception]:
        return self._render(items)

    def _render(self, items: list[FrameRequest]) -> list[np.ndarray | Exception]:
        """The batch's frames; an item whose reference cannot be loaded (deleted since the ingress checked
        it) gets its error in its place, and the other requests' frames of the batch are rendered."""
        out: list[np.ndarray | Exception | None] = [None] * len(items)
        good, refs = [], []
        for i, (ref_id, _, _) in enumerate(items):
            try:
                refs.append(self.reference(ref_id))
                good.append(i)
            except Exception as e:
                out[i] = e
        if good:
            points = np.stack([r.landmarks.points[:, :2] if items[i][1] is None else items[i][1]
                               for r, i in zip(refs, good)])  # fmt: skip
            for i, frame in zip(good, self.pipeline.render(refs, points, [items[i][2] for i in good])):
                out[i] = frame
        return out

    def interpolate(self, ref_a: str, ref_b: str, ts: list[float]) -> np.ndarray:
        """Faces between two references (lerp z_sem, slerp x_T), each in a's pose → (n, S, S, 3) uint8."""
        a, b = self.reference(ref_a), self.reference(ref_b)
        between = [dataclasses.replace(a, z_sem=lerp(a.z_sem, b.z_sem, t), x_T=slerp(a.x_T, b.x_T, t)) for t in ts]
        return self.pipeline.render(between, np.repeat(a.landmarks.points[None, :, :2], len(ts), axis=0))
