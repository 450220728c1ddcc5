"""JSON views of a running ``Monitor`` for ``/api/streams``: what a person watching the streams
needs, never a credential (URLs redacted, error texts scrubbed)."""
from __future__ import annotations

import math
import time
from typing import Any

from .. import __version__


def _num(value: Any, digits: int = 2) -> float | None:
    """JSON-safe number (NaN/inf and missing -> null), rounded for a small payload."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return round(v, digits) if math.isfinite(v) else None


def instance_status(monitor) -> dict[str, Any]:
    cfg = monitor.config
    shard = cfg.shard_assignment
    models = {m: str((getattr(e, "info", {}) or {}).get("backend", "unknown")) for m, e in (monitor.engines or {}).items()}
    return {
        "version": __version__,
        "now": _num(time.time(), 3),
        "started_at": _num(monitor.started_at, 3),
        "models": models,
        "shard": ({"index": shard.index, "count": shard.count, "assigned": len(monitor.streams),
                   "configured": len(cfg.active_streams)} if shard else None),
        "sinks": {name: {"connected": s.connected, "buffered": s.buffered, "lost": s.lost}
                  for name, s in monitor.publisher.statuses().items()},
    }


def stream_status(monitor, rt, alerts: list[dict[str, Any]], history: int, detail: bool = False) -> dict[str, Any]:
    """One stream (its ``StreamState``); ``history`` = how many of the recent scores to include (0: none)."""
    name = rt.cfg.name
    last = rt.last_scored  # (version, ScoredFrame), replaced as a whole by the scoring thread
    out: dict[str, Any] = {
        "name": name,
        "url": rt.cfg.redacted_url,
        "model": rt.cfg.model,
        "sample_rate": _num(rt.cfg.sample_rate, 3),
        "state": rt.state,
        "up": rt.state == "up",
        "error": monitor.scrub(rt.error) if rt.error else None,
        "score": _num(rt.score),
        "score_smoothed": _num(rt.smoothed),
        "worst": _num(rt.worst),
        "scored": rt.scored,
        "dropped": rt.dropped,
        "decoded": rt.decoded,
        "fps": _num(rt.fps if name in monitor.workers else None),
        "reconnects": rt.reconnects,
        "alerts": [{"condition": a["condition"], "severity": a["severity"], "started_at": _num(a.get("started_at"), 3),
                    "peak": _num(a.get("peak"))} for a in alerts if a["stream"] == name],
        "thumbnail": None,
    }
    if last is not None:
        version, r = last
        rm = r.region_map
        row, col, _ = rm.worst(1)[0]
        out.update(frame_ts=_num(r.frame.ts, 3), scored_at=_num(r.scored_at, 3),
                   frame_size=[r.frame.width, r.frame.height], map_shape=list(rm.shape),
                   worst_box=list(rm.cell_box(row, col)),
                   thumbnail={"url": f"/api/streams/{name}/thumbnail.jpg", "version": version})
    if history:
        points = tuple(rt.history)[-history:]  # a copy: the scoring thread appends meanwhile
        out["history"] = {"t": [_num(p[0], 3) for p in points], "score": [_num(p[1]) for p in points],
                          "worst": [_num(p[2]) for p in points], "smoothed": [_num(p[3]) for p in points]}
    if detail:
        out["detectors"] = {k: _num(v, 4) for k, v in dict(rt.detectors).items()}
        out["timing"] = {k: _num(v, 4) for k, v in dict(rt.timing).items()}
    return out
