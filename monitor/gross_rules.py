"""Gross damage from the first second: absolute rules that need no baseline, their
calibration, and the fast warm-up shared by the relative rules (monitor.alert_rules).

The absolute thresholds are set on the resolution-aware measures of
:mod:`monitor.picture_measures` from the clean calibration set of bench/calibrate_gross.py
(the pristine photos, the LIVE Challenge images with MOS >= 70, the clips of ../shared/media
and synthetic night scenes, snow, title cards, graphics, low-key grades and film grain), never
from the bench's test contents. Margins (clean maximum / threshold / smallest gross damage)
are in docs/degradations.md.

``heavy_noise``     noise sigma at source resolution (``noise_native``), warning.
``heavy_blur``      width of the sharpest edges at 640 px wide (``edge_width``), warning.
``underexposed``    the picture's white (``white_level``, 99.9th percentile of luma) dim, but
                    not black (``black`` has that), warning.
``level_collapse``  the average picture level fell under a third of the stream's own, the
                    white with it (a cut to a night scene keeps its lights), warning.
"""
from __future__ import annotations

from typing import Any

# -- calibration (bench/calibrate_gross.py, docs/degradations.md) ------------------------------
NOISE_SIGMA = 8.5          # noise_native, 8-bit levels at source resolution
NOISE_CLEAR = 7.0
EDGE_WIDTH = 4.0           # edge_width, px at 640 wide
EDGE_CLEAR = 3.5
WHITE_LEVEL = 0.25         # white_level, 0..1: exposure at 20 % puts it at <= 0.2
WHITE_CLEAR = 0.32
LEVEL_FALL = 2.0 / 3.0     # luma_mean under a third of its baseline ...
WHITE_FALL = 0.5           # ... confirmed by white_level under half of its own

# -- the fast warm-up of the relative rules ------------------------------------------------------
# usable after 5 s of a stream; the required deviation falls from twice its value at 5 s to its
# value at 30 s; a value that moves with the content (robust spread of the baseline) needs
# more. The first seconds of a stream that starts damaged are the absolute rules' job.
FAST_WARMUP: dict[str, Any] = dict(baseline_min_seconds=5.0, warmup_seconds=30.0, warmup_factor=2.0)

# quality_drop is confirmed by a detector moving the same way (half of the dedicated rules'
# deviations), so that a score that moves with the content (a pan across a photo, a cut, a
# loop back to a title) does not read as a drop
QUALITY_DROP_CONFIRM: list[dict[str, Any]] = [
    dict(key="edge_width", comparison="above", drop_ratio=0.4),
    dict(key="blur", comparison="above", drop_points=0.08),
    dict(key="noise_native", comparison="above", drop_points=2.0),
    dict(key="blockiness", comparison="above", drop_points=0.3),
    dict(key="mb_edge_breaks", comparison="above", drop_points=0.002),
    dict(key="luma_mean", comparison="below", drop_ratio=0.5),
    dict(key="clipped_highlights", comparison="above", drop_points=0.08),
    dict(key="frozen", comparison="above", drop_points=0.5),
]


def _absolute(condition: str, key: str, comparison: str, threshold: float, clear: float,
              suppressed_by: list[str], description: str, min_duration: float = 1.5) -> dict[str, Any]:
    """An absolute gross-damage rule: the median of 1.5 s (one odd sample, e.g. a motion-blurred
    frame, does not move it) beyond the threshold for ``min_duration``: an alert 2.0 s after
    the onset (2.5 s for 2 s)."""
    return dict(condition=condition, key=key, comparison=comparison, threshold=threshold,
                clear_threshold=clear, smoothing_seconds=1.5, smoothing_statistic="median",
                min_duration=min_duration, clear_duration=3.0, severity="warning", cooldown=60.0,
                suppressed_by=suppressed_by, description=description)


def gross_rules() -> list[dict[str, Any]]:
    """The absolute gross-damage rules (and ``level_collapse``) as rule dicts; the rule list
    places them after ``black`` and ``frozen``, which they yield to."""
    return [
        _absolute("heavy_noise", "noise_native", "above", NOISE_SIGMA, NOISE_CLEAR, ["black", "frozen"],
                  f"Noise sigma >= {NOISE_SIGMA:g} levels at source resolution (clean pictures, "
                  "film grain included, stay under it; docs/degradations.md)."),
        _absolute("heavy_blur", "edge_width", "above", EDGE_WIDTH, EDGE_CLEAR, ["black", "frozen"],
                  f"Even the sharpest edges are >= {EDGE_WIDTH:g} px wide at 640 px (defocus, a "
                  "soft or smeared picture)."),
        _absolute("underexposed", "white_level", "below", WHITE_LEVEL, WHITE_CLEAR, ["black"],
                  f"The picture's white (99.9th percentile of luma) <= {WHITE_LEVEL:g}: dim but "
                  "not black (exposure, gain or level error).",
                  # 2 s: a fade from black reads dim for 1.5 s (bbb30's opening, calibration set)
                  min_duration=2.0),
        dict(condition="level_collapse", key="luma_mean", comparison="below", drop_ratio=LEVEL_FALL,
             clear_drop_ratio=0.5, baseline="median", baseline_seconds=300.0,
             baseline_min_seconds=5.0, smoothing_seconds=1.0, min_duration=2.0, clear_duration=3.0,
             severity="warning", cooldown=60.0, suppressed_by=["black", "underexposed"],
             confirm=[dict(key="white_level", comparison="below", drop_ratio=WHITE_FALL)],
             description="Average picture level under a third of the stream's own 5-minute "
                         "median, its white under half of its own (a cut to a night scene keeps "
                         "its lights)."),
    ]
