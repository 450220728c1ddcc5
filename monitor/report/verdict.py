"""Pass / warn / fail for one analysed file.

A file **fails** when it cannot be read (or decoding broke off), when an alert of severity
``fail_severity`` (default ``critical``: black, frozen) or worse was raised, or when its median
score is below ``fail_median``. It gets a **warning** for an alert of ``warn_severity``
(default ``warning``: blocky, blurry, corrupted, quality_drop, decode_errors, stall, ...) or
worse, a median score below ``warn_median`` or, when set, a 10th-percentile score below
``warn_p10``. Otherwise it **passes**. Every reason is listed. Alerts of the conditions in
``ignore`` are shown in the report but do not count.

The median thresholds (fail < 10, warn < 20) are calibrated on the shipped model, which rates
clean footage lower than clean photos: medians of 22.8-53.4 on the clean clips of
``../shared/media`` (cockatoo 22.8, bikes 35.8, chaplin 43.5, Big Buck Bunny 53.4), 5-8 for a
black picture or the badly compressed ``carphone_distorted`` clip. Gross damage (heavy noise,
heavy blur, an under-exposed picture, black, frozen, blocky) is judged from the file's first
frame on, with no baseline (``monitor.gross_rules``); the rules relative to the file's own
baseline (``quality_drop``, ``blurry``, ``noisy``, ``corrupted``, ``level_collapse``) are usable
after its first 5 s and ask for larger deviations until 30 s, as on a stream.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..alerts import SEVERITIES

_RANK = {s: i for i, s in enumerate(SEVERITIES)}
VERDICTS = ("pass", "warn", "fail")


@dataclass(frozen=True)
class Thresholds:
    fail_severity: str = "critical"
    warn_severity: str = "warning"
    fail_median: float | None = 10.0
    warn_median: float | None = 20.0
    warn_p10: float | None = None
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("fail_severity", "warn_severity"):
            if getattr(self, name) not in _RANK:
                raise ValueError(f"{name} must be one of {', '.join(SEVERITIES)}")
        if _RANK[self.warn_severity] > _RANK[self.fail_severity]:
            raise ValueError("warn_severity must not be above fail_severity")


def judge(error: str | None, stats: dict, events: Sequence, th: Thresholds) -> tuple[str, list[str]]:
    """``(verdict, reasons)``; ``events`` need ``condition``, ``severity`` and ``start``."""
    fail: list[str] = []
    warn: list[str] = []
    if error:
        fail.append(f"error: {error}")
    if not stats.get("samples"):
        if not error:
            fail.append("no frame was scored")
        return "fail", fail
    for e in events:
        if e.condition in th.ignore:
            continue
        rank = _RANK[e.severity]
        what = f"{e.severity} alert {e.condition} at {e.start:.1f} s"
        if rank >= _RANK[th.fail_severity]:
            fail.append(what)
        elif rank >= _RANK[th.warn_severity]:
            warn.append(what)
    median, p10 = stats["median"], stats["p10"]
    if th.fail_median is not None and median < th.fail_median:
        fail.append(f"median score {median:.1f} < {th.fail_median:g}")
    elif th.warn_median is not None and median < th.warn_median:
        warn.append(f"median score {median:.1f} < {th.warn_median:g}")
    if th.warn_p10 is not None and p10 < th.warn_p10:
        warn.append(f"10th-percentile score {p10:.1f} < {th.warn_p10:g}")
    if fail:
        return "fail", fail + warn
    if warn:
        return "warn", warn
    return "pass", []
