"""Per-clip evaluation records → the paper's Table 1 (and Table 2 for edits), as CSV, Markdown and JSON.

Table 1 (video quality, lip sync, landmarks), one row for the generated clips and one for the real
test clips where a metric applies to a single video (CPBD, sync): FID↓ SSIM↑ PSNR↑ CPBD↑ | Min Dist↓
AVConf↑ AVOffset(→0) | M-LMD↓ F-LMD↓, plus the weight-free sync score (correlation↑ and lag).
Table 2 (identity kept through edits): TL-ID↑ TG-ID↑ of the unedited and each edited generation, against
the real clip. Values are means over clips of per-clip values; FID pools the frames of every clip. A
column whose metric was skipped holds "skipped" and the reason is listed under the tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fet.evaluation.clip import GROUPS, slug
from fet.metrics.fid import fid

# (column, record key of the generated row, record key of the real row or None, decimals)
TABLE1 = [
    ("FID", "fid", None, 2),
    ("SSIM", "ssim", None, 4),
    ("PSNR", "psnr", None, 2),
    ("CPBD", "cpbd", "gt_cpbd", 4),
    ("Min Dist", "syncnet_min_dist", "gt_syncnet_min_dist", 3),
    ("AVConf", "syncnet_conf", "gt_syncnet_conf", 3),
    ("AVOffset", "syncnet_offset", "gt_syncnet_offset", 2),
    ("M-LMD", "m_lmd", None, 3),
    ("F-LMD", "f_lmd", None, 3),
    ("Sync r", "sync_corr", "gt_sync_corr", 3),
    ("Sync lag", "sync_offset", "gt_sync_offset", 2),
]
SKIPPED = "skipped"


@dataclass
class Report:
    table1: list[dict[str, Any]]  # rows: {"Method": ..., column: value}
    table2: list[dict[str, Any]]
    skipped: dict[str, str]  # column → reason
    clips: int
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow: ``generated.psnr``, ``real.cpbd``, ``edit.add_glasses.tl_id``, ..."""
        out: dict[str, float] = {}
        for row in self.table1:
            prefix = "generated" if row["Method"] == "Generated" else "real"
            for col, value in row.items():
                if isinstance(value, float) and math.isfinite(value):
                    out[f"{prefix}.{slug(col)}"] = value
        for row in self.table2:
            for col in ("TL-ID", "TG-ID"):
                value = row[col]
                if isinstance(value, float) and math.isfinite(value):
                    out[f"edit.{slug(row['Edit'])}.{slug(col)}"] = value
        return out

    def markdown(self) -> str:
        lines = [f"Evaluated clips: {self.clips}", "", "Table 1", "", *_md(self.table1)]
        lines += ["", "Table 2", "", *_md(self.table2)]
        if self.skipped:
            lines += ["", "Skipped metrics:", ""] + [f"- {col}: {why}" for col, why in self.skipped.items()]
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(value: Any, decimals: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{decimals}f}"
    return str(value)


def _md(rows: list[dict[str, Any]]) -> list[str]:
    cols = list(rows[0])
    decimals = {c: d for c, _, _, d in TABLE1}
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_fmt(r[c], decimals.get(c, 3)) for c in cols) + " |" for r in rows]
    return out


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _mean(records: list[dict[str, Any]], key: str) -> float:
    values = [float(r[key]) for r in records if key in r and r[key] is not None]
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def build_report(records: list[dict[str, Any]], unavailable: dict[str, str], edits: list[str]) -> Report:
    """Aggregate per-clip records (``fet.evaluation.clip``) into the tables; ``unavailable`` maps metric
    groups to why they were skipped."""
    if not records:
        raise ValueError("evaluation: no clips were evaluated; check the split and the shards")
    skipped = {col: why for group, why in unavailable.items() for col in GROUPS[group]}
    generated: dict[str, Any] = {"Method": "Generated"}
    real: dict[str, Any] = {"Method": "Real (test clips)"}
    notes = []
    for col, key, real_key, _ in TABLE1:
        if col in skipped:
            generated[col], real[col] = SKIPPED, SKIPPED
            continue
        if key == "fid":
            gen = np.concatenate([r["gen_features"] for r in records])
            ref = np.concatenate([r["real_features"] for r in records])
            generated[col] = fid(ref, gen) if len(gen) >= 2 else float("nan")
            notes.append(f"FID from {len(gen)} generated and {len(ref)} real frames")
            if len(gen) < 2048:
                notes.append("FID with fewer than 2,048 frames is biased upwards; compare only runs of equal size")
        else:
            generated[col] = _mean(records, key)
        real[col] = _mean(records, real_key) if real_key else float("nan")
    faces = _mean(records, "face_found")
    if math.isfinite(faces):
        notes.append(f"dlib found a face in {faces:.0%} of generated frames")
    notes += [f"Sync r and Sync lag leave out clip {r['clip_id']}: {r['sync_missing']}"
              for r in records if r.get("sync_missing")]  # fmt: skip
    table2 = []
    if "TL-ID" not in skipped:
        table2.append({"Edit": "none", "TL-ID": _mean(records, "tl_id"), "TG-ID": _mean(records, "tg_id")})
        for text in edits:
            key = f"edit.{slug(text)}"
            tl, tg = _mean(records, f"{key}.tl_id"), _mean(records, f"{key}.tg_id")
            table2.append({"Edit": text, "TL-ID": tl, "TG-ID": tg})
    else:
        table2.append({"Edit": "none", "TL-ID": SKIPPED, "TG-ID": SKIPPED})
    return Report([generated, real], table2, skipped, len(records), notes)


def per_clip_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scalar fields of each record (features and pictures left out), for per_clip.csv."""
    return [{k: v for k, v in r.items() if not isinstance(v, np.ndarray | bytes)} for r in records]


def report_json(report: Report) -> str:
    return json.dumps(
        {"clips": report.clips, "table1": report.table1, "table2": report.table2, "skipped": report.skipped,
         "notes": report.notes, "metrics": report.metrics()},
        indent=2, default=str,
    )  # fmt: skip
