"""Pictures and documents of a report: matplotlib plots, heat-map thumbnails, HTML and JSON.

The HTML is one self-contained file: plots (PNG) and thumbnails (JPEG) are embedded as
base64 ``data:`` URIs and the style sheet is inline, so it opens anywhere without a network.
"""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import overlay
from .analysis import Event, FileResult, Moment

PLOT_DPI = 80
OUTLINED_CELLS = 3  # as many as the JSON's worst_regions
THUMB_QUALITY = 80
SEVERITY_COLORS = {"info": "#3b82f6", "warning": "#f59e0b", "critical": "#dc2626"}
VERDICT_COLORS = {"pass": "#15803d", "warn": "#b45309", "fail": "#b91c1c"}
# detector values on the plot, (key, label): fractions and 0-1 measures share one panel;
# keys a file does not have are left out (other values are still in the JSON)
FRACTION_KEYS = (("black", "black"), ("frozen", "frozen"), ("blur", "blur"), ("luma_mean", "mean luma"),
                 ("clipped_highlights", "clipped white"), ("letterbox", "letterbox"),
                 ("pillarbox", "pillarbox"))


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# ----------------------------------------------------------------------------------------------
# plot
# ----------------------------------------------------------------------------------------------

def plot_png(res: FileResult, ignore: Sequence[str] = ()) -> bytes:
    """Alerts, score, worst region and detector values over media time.

    The top lane shows every alert (one row per condition, coloured by severity, hatched when
    not counted in the verdict); the counted warning and critical ones are also shaded in the
    panels below, so what made the verdict stands out.
    """
    import matplotlib
    matplotlib.use("Agg")  # no display: render to memory only
    from matplotlib.figure import Figure

    t = np.asarray(res.t, dtype=np.float64)
    end = float(t[-1]) if t.size > 1 else 1.0
    conditions = list(dict.fromkeys(e.condition for e in res.events))
    lane = 0.35 + 0.28 * len(conditions) if conditions else 0.0
    ratios = ([lane] if conditions else []) + [3, 1.5, 1.5]
    fig = Figure(figsize=(11, 5.6 + lane), dpi=PLOT_DPI, layout="constrained")
    axes = fig.subplots(len(ratios), 1, sharex=True, height_ratios=ratios)
    ax_s, ax_f, ax_b = axes[-3:]
    if conditions:
        ax_a = axes[0]
        for e in res.events:
            counted = e.condition not in ignore
            stop = e.end if e.end is not None else end
            ax_a.broken_barh([(e.start, max(stop - e.start, end / 200))], (conditions.index(e.condition) - 0.38, 0.76),
                             facecolor=SEVERITY_COLORS.get(e.severity, "#6b7280"), alpha=0.9 if counted else 0.35,
                             hatch=None if counted else "///", edgecolor="white", lw=0.5)
        ax_a.set_yticks(range(len(conditions)), [c + ("" if c not in ignore else " *") for c in conditions],
                        fontsize=8)
        ax_a.set_ylim(len(conditions) - 0.5, -0.5)
        ignored = any(c in ignore for c in conditions)
        ax_a.set_title("alerts" + (" (* = not counted in the verdict)" if ignored else ""), fontsize=8, loc="left")
    ax_s.plot(t, res.worst_region, color="#9ca3af", lw=1, label="worst region")
    ax_s.plot(t, res.score, color="#1d4ed8", lw=1.8, label="quality score")
    ax_s.set_ylim(0, 100)
    ax_s.set_ylabel("score (0-100)")
    det = res.detectors
    for key, label in FRACTION_KEYS:
        if key in det:
            ax_f.plot(t, det[key], lw=1.3, label=label, drawstyle="steps-post" if key == "frozen" else "default")
    ax_f.set_ylim(-0.05, 1.05)
    ax_f.set_ylabel("fraction / 0-1")
    if "blockiness" in det:
        ax_b.plot(t, det["blockiness"], color="#7c3aed", lw=1.3, label="blockiness (ratio)")
    ax_b.set_ylabel("blockiness")
    ax_n = ax_b.twinx()
    if "noise_sigma" in det:
        ax_n.plot(t, det["noise_sigma"], color="#0d9488", lw=1.3, label="noise sigma (levels)")
    if "mb_edge_breaks" in det:
        ax_n.plot(t, 100.0 * np.asarray(det["mb_edge_breaks"], dtype=np.float64), color="#db2777", lw=1.3,
                  label="broken MB edges (%)")
    ax_n.set_ylabel("noise / MB edges")
    if "decode_errors" in det:
        errs = np.asarray(det["decode_errors"], dtype=np.float64)
        hit = errs > 0
        if hit.any():
            ax_s.plot(t[hit], np.full(int(hit.sum()), 3.0), "x", color="#dc2626", ms=6,
                      label="decode errors")
    ax_b.set_xlabel("media time (s)")
    for e in res.events:
        if e.condition in ignore or e.severity == "info":
            continue
        stop = e.end if e.end is not None else end
        for ax in (ax_s, ax_f, ax_b):
            ax.axvspan(e.start, max(stop, e.start + end / 200), color=SEVERITY_COLORS[e.severity], alpha=0.15, lw=0)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlim(0, end)
    ax_s.legend(loc="lower left", fontsize=8, ncol=3, framealpha=0.8)
    ax_f.legend(loc="upper left", fontsize=7, ncol=7, framealpha=0.8)
    lines = ax_b.get_legend_handles_labels()
    lines_n = ax_n.get_legend_handles_labels()
    ax_b.legend(lines[0] + lines_n[0], lines[1] + lines_n[1], loc="upper left", fontsize=7, ncol=3,
                framealpha=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# thumbnails
# ----------------------------------------------------------------------------------------------

def legend_gradient(stops: int = 6) -> str:
    """CSS linear-gradient of the region-map colours from 0 to 100 (as ``monitor.overlay``)."""
    from matplotlib import colormaps
    rgba = colormaps[overlay.COLORMAP](np.linspace(0.0, 1.0, stops))
    cols = (rgba[:, :3] * 255.0 + 0.5).astype(int)
    return "linear-gradient(to right, " + ", ".join(f"rgb({r},{g},{b})" for r, g, b in cols) + ")"


def thumbnail_jpeg(m: Moment) -> bytes:
    """The frame with its region map as a heat map and the worst cells outlined (as the live view)."""
    h, w = m.image.shape[:2]
    return overlay.overlay_jpeg(m.image, m.region, (w, h), width=w, quality=THUMB_QUALITY,
                                outlined=OUTLINED_CELLS)


# ----------------------------------------------------------------------------------------------
# data (JSON and template)
# ----------------------------------------------------------------------------------------------

def _num(v: float | None, digits: int = 4) -> float | None:
    if v is None:
        return None
    v = float(v)
    return round(v, digits) if math.isfinite(v) else None


def event_record(e: Event, ignore: Sequence[str]) -> dict[str, Any]:
    return {"condition": e.condition, "severity": e.severity, "key": e.key, "start": _num(e.start, 3),
            "end": _num(e.end, 3), "duration": _num(e.duration, 3), "announced": _num(e.announced, 3),
            "open_at_end": e.open_at_end, "peak": _num(e.peak), "threshold": _num(e.threshold),
            "counted": e.condition not in ignore, "message": e.message}


def file_record(res: FileResult, ignore: Sequence[str]) -> dict[str, Any]:
    info = res.info
    return {
        "path": res.path,
        "verdict": res.verdict,
        "reasons": list(res.reasons),
        "error": res.error,
        "info": None if info is None else {
            "codec": info.codec, "width": info.width, "height": info.height, "fps": _num(info.fps, 3),
            "duration": _num(info.duration, 3), "pix_fmt": info.pix_fmt},
        "elapsed_s": round(res.elapsed, 3),
        "stats": {k: (_num(v, 2) if k != "samples" else v) for k, v in res.stats().items()},
        "events": [event_record(e, ignore) for e in res.events],
        "moments": [{"t": _num(m.t, 3), "score": _num(m.score, 2), "reason": m.reason,
                     "worst_cells": [[r, c, _num(s, 2)] for r, c, s in m.worst_cells]} for m in res.moments],
        "series": {
            "t": [_num(x, 3) for x in res.t],
            "score": [_num(x, 2) for x in res.score],
            "worst_region": [_num(x, 2) for x in res.worst_region],
            "detectors": {k: [_num(x) for x in v] for k, v in res.detectors.items()},
        },
    }


def report_data(results: Sequence[FileResult], header: dict[str, Any], ignore: Sequence[str]) -> dict[str, Any]:
    """Everything the report says, JSON-safe (``nan`` -> ``None``)."""
    counts = {v: sum(r.verdict == v for r in results) for v in ("pass", "warn", "fail")}
    return {**header, "summary": counts, "files": [file_record(r, ignore) for r in results]}


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------

def render_html(results: Sequence[FileResult], data: dict[str, Any], ignore: Sequence[str]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("monitor.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, fmt="{:.1f}": "–" if v is None else fmt.format(v)
    files = []
    for res, rec in zip(results, data["files"]):
        files.append({
            **rec,
            "name": Path(res.path).name,
            "plot": _data_uri("image/png", plot_png(res, ignore)) if res.t else None,
            "thumbs": [{"src": _data_uri("image/jpeg", thumbnail_jpeg(m)), "t": m.t, "score": m.score,
                        "reason": m.reason} for m in res.moments],
        })
    return env.get_template("report.html.j2").render(
        report=data, files=files, severity_colors=SEVERITY_COLORS, verdict_colors=VERDICT_COLORS,
        heat_gradient=legend_gradient())
