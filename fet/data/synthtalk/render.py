"""SynthTalk renderer: a shaded face mesh with hair, eyes, mouth and accessories, drawn with OpenCV.

``render_face`` draws one frame from projected landmarks; ``region_masks`` gives the image regions each
attribute is allowed to change (used by tests). Drawing happens at 2× and is downsampled (antialiasing).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from fet.data.synthtalk.identity import Identity
from fet.landmarks.face_mesh import contours, load_canonical_mesh

SS = 2  # supersampling factor
SHADES = 24  # quantised shading levels
DEPTH_BANDS = 4
HAIRLINE_LEVEL, BANGS_LEVEL = 0.65, 0.1  # hair's lower edge between the brows (0) and the forehead top (1)
LIGHT = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])


@functools.lru_cache(maxsize=1)
def _topology() -> dict:
    c = contours()
    oval = c["face_oval"][0]
    return dict(
        tris=load_canonical_mesh().triangles,
        oval=oval,
        lips_outer=c["lips"][0],
        lips_inner=c["lips"][1],
        eyes=[c["left_eye"][0], c["right_eye"][0]],
        brow_chains=[c["left_eyebrow"][0], c["right_eyebrow"][0]],
    )


def _poly(img, pts, colour, alpha: float = 1.0) -> None:
    p = np.round(pts * 8).astype(np.int32)  # 3 bits of subpixel precision
    if alpha >= 1.0:
        cv2.fillPoly(img, [p], colour, cv2.LINE_AA, shift=3)
    else:
        layer = img.copy()
        cv2.fillPoly(layer, [p], colour, cv2.LINE_AA, shift=3)
        cv2.addWeighted(layer, alpha, img, 1 - alpha, 0, dst=img)


def _line(img, pts, colour, thickness: float, closed: bool = False) -> None:
    p = np.round(pts * 8).astype(np.int32)
    cv2.polylines(img, [p], closed, colour, max(1, round(thickness)), cv2.LINE_AA, shift=3)


def _head_shapes(p: np.ndarray) -> dict:
    """2-D shapes derived from the projected landmarks (pixels at render scale)."""
    t = _topology()
    oval = p[t["oval"], :2]
    top, chin = p[10, :2], p[152, :2]
    # the head frame comes from points the jaw does not move (forehead top, nose bottom)
    up = (top - p[2, :2]) / np.linalg.norm(top - p[2, :2])  # head's up direction in the image
    height = 1.55 * np.linalg.norm(top - p[2, :2])
    centre = p[2, :2] + (top - p[2, :2]) * 0.3
    right = np.array([-up[1], up[0]])
    brow_y = (p[105, :2] + p[334, :2]) / 2
    rel = oval - centre
    upper = oval[(rel @ up) > -0.05 * height]
    cranium = centre + (upper - centre) * 1.16 + up * 0.06 * height
    return dict(
        oval=oval, centre=centre, up=up, right=right, height=height, top=top, chin=chin, brow=brow_y, cranium=cranium
    )


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2)


def render_face(points: np.ndarray, identity: Identity, size: int, transform: np.ndarray) -> np.ndarray:
    """Projected landmarks (478, 3) at ``size`` px (x, y, depth) → RGB uint8 (size, size, 3)."""
    S = size * SS
    p = points.copy()
    p[:, :2] *= SS
    t = _topology()
    h = _head_shapes(p)
    img = np.empty((S, S, 3), np.uint8)
    grad = np.linspace(1.1, 0.8, S)[:, None, None]
    img[:] = np.clip(np.array(identity.background)[None, None] * grad, 0, 255).astype(np.uint8)
    hair = identity.hair_colour
    has_hair = not identity.has("Bald")
    skin = np.array(identity.skin_rgb, np.float64)

    # body: shoulders and neck
    up, right, height, chin = h["up"], h["right"], h["height"], h["chin"]
    neck_w = 0.23 * height
    neck = np.array([chin + right * neck_w - up * 0.1 * height, chin - right * neck_w - up * 0.1 * height,
                     chin - right * neck_w - up * 0.9 * height, chin + right * neck_w - up * 0.9 * height])  # fmt: skip
    shoulders = np.array([chin - up * 0.45 * height + right * 0.95 * height,
                          chin - up * 0.45 * height - right * 0.95 * height,
                          chin - up * 2 * height - right * 1.2 * height,
                          chin - up * 2 * height + right * 1.2 * height])  # fmt: skip
    if has_hair and not identity.has("Male"):  # long hair falls behind the shoulders
        long_hair = np.concatenate([h["cranium"], [chin - up * 0.55 * height + right * 0.62 * height,
                                                   chin - up * 0.55 * height - right * 0.62 * height]])  # fmt: skip
        _poly(img, _hull(long_hair), hair)
    _poly(img, _hull(shoulders), identity.clothes)
    _poly(img, neck, tuple(int(c) for c in skin * 0.8))

    # cranium behind the face: hair, or skin when bald
    _poly(img, _hull(h["cranium"]), hair if has_hair else tuple(int(c) for c in skin * 0.9))

    # face: back-face-culled, Lambert-shaded mesh triangles, painted far to near in depth bands; within a
    # band, triangles of equal (quantised) shade go in one fillPoly call, which keeps a frame in milliseconds
    normals = (transform[:3, :3] @ _vertex_normals_canonical().T).T
    tri = t["tris"]
    a, b, c = p[tri[:, 0], :2], p[tri[:, 1], :2], p[tri[:, 2], :2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    front = area < 0  # image y points down
    shade = np.round(np.clip(normals[tri].mean(1) @ LIGHT, 0, 1) * SHADES).astype(int)
    depth = p[tri, 2].mean(1)
    polys = np.round(p[tri, :2] * 8).astype(np.int32)  # (F, 3, 2)
    bands = np.array_split(np.argsort(-depth), DEPTH_BANDS)
    for band in bands:
        band = band[front[band]]
        for level in np.unique(shade[band]):
            col = tuple(int(v) for v in np.clip(skin * (0.62 + 0.45 * level / SHADES), 0, 255))
            cv2.fillPoly(img, list(polys[band[shade[band] == level]]), col, cv2.LINE_8, shift=3)

    # hair over the forehead: a hairline high on the forehead, or bangs down to the brows. Only the cranium
    # points above the hairline go into the cap: points lower down at the temples would pull its convex hull
    # down to the brows and hide the forehead either way
    if has_hair:
        line_level = HAIRLINE_LEVEL if not identity.has("Bangs") else BANGS_LEVEL
        base = h["brow"] + up * line_level * np.linalg.norm(h["top"] - h["brow"])
        top_band = h["cranium"][(h["cranium"] - base) @ up > 0]
        cap = np.concatenate([top_band, [base + right * 0.42 * height, base - right * 0.42 * height]])
        _poly(img, _hull(cap), hair)

    # eyebrows
    brow_col = tuple(int(v) for v in skin * identity.brow_darkness)
    for chain in t["brow_chains"]:
        _line(img, p[chain, :2], brow_col, (2.2 if identity.has("Male") else 1.5) * S / 128)

    # eyes: white, iris, pupil — clipped to the eye opening (drawn in a small window around each eye)
    for k, loop in enumerate(t["eyes"]):
        eye = p[loop, :2]
        x0, y0 = np.floor(eye.min(0)).astype(int) - 2
        x1, y1 = np.ceil(eye.max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, S), min(y1, S)
        if x1 <= x0 or y1 <= y0:
            continue
        off = np.array([x0, y0])
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        _poly(mask, eye - off, 255)
        layer = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        layer[:] = (235, 235, 230)
        ic = 473 if k == 0 else 468  # left eye ↔ left iris (473–477), right eye ↔ right iris (468–472)
        iris = p[ic, :2] - off
        rad = np.linalg.norm(p[ic + 1, :2] - p[ic, :2])
        centre = tuple(np.round(iris * 8).astype(int))
        cv2.circle(layer, centre, int(rad * 8), identity.iris, -1, cv2.LINE_AA, shift=3)
        cv2.circle(layer, centre, int(rad * 3.6), (15, 15, 15), -1, cv2.LINE_AA, shift=3)
        roi = img[y0:y1, x0:x1]
        roi[mask > 127] = layer[mask > 127]
        _line(img, eye, tuple(int(v) for v in skin * 0.45), S / 200, closed=True)

    # facial hair (hair colour): full beard under the mouth, moustache and goatee over it
    if identity.attributes.get("_full_beard"):
        lower = h["oval"][(h["oval"] - p[2, :2]) @ up < 0]  # the oval below the nose
        beard = np.concatenate([lower, [p[205, :2], p[425, :2]]])
        _poly(img, _hull(beard), hair if has_hair else (60, 45, 35), 0.9)
    # mouth: lips, then the opening with teeth
    lip = (200, 30, 50) if identity.has("Wearing_Lipstick") else identity.lip
    _poly(img, p[t["lips_outer"], :2], lip)
    inner = p[t["lips_inner"], :2]
    opening = np.linalg.norm(p[13, :2] - p[14, :2])
    if opening > 0.8:
        _poly(img, inner, (60, 18, 22))
        smiling = identity.has("Smiling")  # a smile bares the upper teeth
        teeth_h = min(opening * (0.75 if smiling else 0.35), (0.06 if smiling else 0.03) * height)
        mask = np.zeros((S, S), np.uint8)
        _poly(mask, inner, 255)
        teeth = np.zeros_like(mask)
        top_mid = p[13, :2]
        band = np.array([top_mid + right * 0.2 * height, top_mid - right * 0.2 * height,
                         top_mid - right * 0.2 * height - up * teeth_h,
                         top_mid + right * 0.2 * height - up * teeth_h])  # fmt: skip
        _poly(teeth, band, 255)
        img[(mask > 127) & (teeth > 127)] = (240, 240, 235)

    if identity.has("Mustache"):
        m = np.array([p[61, :2], p[291, :2], p[291, :2] + up * 0.05 * height, p[2, :2] - up * 0.01 * height,
                      p[61, :2] + up * 0.05 * height])  # fmt: skip
        _poly(img, m, hair if has_hair else (60, 45, 35))
    if identity.has("Goatee"):
        g = np.array([p[17, :2] - right * 0.09 * height, p[17, :2] + right * 0.09 * height,
                      p[152, :2] + right * 0.06 * height, p[152, :2] - right * 0.06 * height])  # fmt: skip
        _poly(img, g, hair if has_hair else (60, 45, 35))

    if identity.has("Eyeglasses"):
        for loop in t["eyes"]:
            eye = p[loop, :2]
            ctr = eye.mean(0)
            w = np.linalg.norm(eye.max(0) - eye.min(0)) * 0.75
            box = cv2.boxPoints(
                (
                    (float(ctr[0]), float(ctr[1])),
                    (float(w * 1.05), float(w * 0.72)),
                    float(np.degrees(np.arctan2(right[1], right[0]))),
                )
            )
            _line(img, box, (20, 20, 20), S / 70, closed=True)
        _line(
            img,
            np.array(
                [p[133, :2] + (p[168, :2] - p[133, :2]) * 0.3, p[168, :2], p[362, :2] + (p[168, :2] - p[362, :2]) * 0.3]
            ),
            (20, 20, 20),
            S / 90,
        )

    if identity.has("Wearing_Hat"):
        brim = h["brow"] + up * 0.55 * np.linalg.norm(h["top"] - h["brow"])
        above = h["cranium"][(h["cranium"] - brim) @ up > 0]
        crown = np.concatenate([above + up * 0.04 * height, [brim + right * 0.5 * height, brim - right * 0.5 * height]])
        _poly(img, _hull(crown), identity.hat)
        _line(
            img,
            np.array([brim + right * 0.62 * height, brim - right * 0.62 * height]),
            tuple(int(c * 0.6) for c in identity.hat),
            S / 40,
        )

    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


@functools.lru_cache(maxsize=1)
def _vertex_normals_canonical() -> np.ndarray:
    """Per-vertex normals of the canonical mesh (478 rows; iris rows face forward)."""
    m = load_canonical_mesh()
    v, tri = m.vertices.astype(np.float64), m.triangles
    n = np.zeros_like(v)
    fn = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    for k in range(3):
        np.add.at(n, tri[:, k], fn)
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-9)
    if n[1, 2] < 0:  # the nose tip must face the camera (+z)
        n = -n
    return np.concatenate([n, np.tile([0, 0, 1.0], (10, 1))])
