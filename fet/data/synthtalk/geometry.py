"""SynthTalk face geometry: MediaPipe's canonical mesh deformed by identity and per-frame expression.

Returns the 478 landmarks (468 mesh vertices + 2 × 5 iris points) in the canonical head frame (cm),
so projected ground truth has exactly MediaPipe's layout.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from fet.data.synthtalk.identity import Identity
from fet.landmarks.face_mesh import contours, load_canonical_mesh

UPPER_INNER_LIP, LOWER_INNER_LIP, MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP = 13, 14, 291, 61, 1
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324)
UPPER_INNER_LIP_LINE = (191, 80, 81, 82, 13, 312, 311, 310, 415)  # corners (78, 308) excluded
IRIS_RADIUS_CM = 0.55


@dataclass
class Expression:
    jaw: float = 0.0  # 0 closed … 1 wide open
    round: float = 0.0  # lip rounding (o, u)
    stretch: float = 0.0  # lip spreading (i, e)
    smile: float = 0.0
    blink: float = 0.0  # 0 open … 1 closed


@functools.lru_cache(maxsize=1)
def _rig() -> dict:
    """Per-vertex weights of each deformation, computed once from the canonical mesh."""
    v = load_canonical_mesh().vertices.astype(np.float64)
    c = contours()
    mouth_c = (v[MOUTH_LEFT] + v[MOUTH_RIGHT]) / 2
    y_lip = v[LOWER_INNER_LIP, 1]
    jaw = np.clip((y_lip - v[:, 1]) / 2.5, 0, 1) * np.exp(-((v[:, 0] / 7.0) ** 2))
    jaw[list(LOWER_LIP)] = 1.0
    jaw[[MOUTH_LEFT, MOUTH_RIGHT, 78, 308]] = 0.5
    d_mouth = np.linalg.norm((v - mouth_c)[:, :2] / [3.2, 1.8], axis=1)
    mouth = np.exp(-(d_mouth**2))
    corners = np.exp(-np.sum((v[:, None, :2] - v[[MOUTH_LEFT, MOUTH_RIGHT], :2][None]) ** 2, axis=2).min(1) / 1.5)
    nose = np.exp(-np.sum((v - v[NOSE_TIP]) ** 2, axis=1) / 4.0)
    eyes = {}
    for side in ("left_eye", "right_eye"):
        loop = c[side][0]
        centre = v[loop].mean(0)
        w = np.exp(-np.sum(((v - centre)[:, :2] / [2.2, 1.5]) ** 2, axis=1))
        eyes[side] = (loop, centre, w)
    return dict(v=v, jaw=jaw, mouth=mouth, mouth_c=mouth_c, corners=corners, nose=nose, eyes=eyes)


def face_points(identity: Identity, expr: Expression) -> np.ndarray:
    """(478, 3) landmarks in the head frame, cm."""
    r = _rig()
    v = r["v"].copy()
    # identity: lips and nose scale about their centres, eyes move apart, then the whole face scales
    v += (v - r["mouth_c"]) * (identity.lip_size - 1) * r["mouth"][:, None]
    v += (v - r["v"][NOSE_TIP] + [0, 0, 1.5]) * (identity.nose_size - 1) * r["nose"][:, None]
    for _, centre, w in r["eyes"].values():
        v[:, 0] += np.sign(centre[0]) * identity.eye_spacing * w
    # expression
    mouth_x = v[:, 0] - r["mouth_c"][0]
    v[:, 0] += mouth_x * (0.25 * expr.stretch - 0.3 * expr.round + 0.2 * expr.smile) * r["mouth"]
    v[:, 2] += 0.6 * expr.round * r["mouth"]
    # a smile lifts and spreads the corners and raises the upper lip off the teeth
    v[:, 1] += 1.2 * expr.smile * r["corners"]
    v[list(UPPER_INNER_LIP_LINE), 1] += 0.35 * expr.smile
    v[:, 1] -= 1.6 * expr.jaw * r["jaw"]
    iris = []
    for side in ("right_eye", "left_eye"):  # MediaPipe: 468–472 right iris, 473–477 left iris
        loop, _, _ = r["eyes"][side]
        centre = v[loop].mean(0)
        upper = [i for i in loop if v[i, 1] > centre[1]]
        lower = [i for i in loop if v[i, 1] <= centre[1]]
        v[upper, 1] -= expr.blink * (v[upper, 1] - centre[1]) * 0.95
        v[lower, 1] -= expr.blink * (v[lower, 1] - centre[1]) * 0.3
        rad = IRIS_RADIUS_CM
        ctr = centre + np.array([0.0, 0.0, 0.3])
        rim = np.array([[rad, 0, 0], [0, rad, 0], [-rad, 0, 0], [0, -rad, 0]])
        iris.append([ctr, *(ctr + rim)])
    v[:, 0] *= identity.face_width
    v[:, 1] *= identity.face_height
    pts = np.concatenate(
        [v, np.asarray(iris, np.float64).reshape(10, 3) * [identity.face_width, identity.face_height, 1]]
    )
    return pts
