"""Cheap broadcast-QC detectors for sampled frames and frame timing.

Each detector is one module that declares its measures, its settings and its default alert
rules together and registers itself (:mod:`monitor.detectors.registry`); the imports below
are the registration lines of the built-in ones, in the order their measures are taken and
their rules listed. docs/extending.md shows how to add one.

``FrameDetectors(settings).update(frame_rgb, pts, wall_time) -> dict[str, float]``
    The picture detectors on one *sampled* frame (``uint8`` RGB, ``H x W x 3``). The frame is
    usually already downscaled (e.g. 640 wide or the model's 384x384); every value is a
    fraction, a ratio, a level on the 8-bit scale or a duration, so no value needs the
    source resolution, except the block measures, whose grid moves when the frame is scaled
    (pass ``source_size``, or ``luma_native``, the decoded picture's own luma plane, on which
    ``blockiness`` and ``mb_edge_breaks`` then run at the codec's own grid). Keys:
    ``FRAME_KEYS``, documented in each detector's module.

``TimingDetectors.on_frame(pts, wall_time)`` / ``TimingDetectors.values(now) -> dict``
    Stall, frame-rate and PTS-continuity values from the timestamps of decoded frames.

numpy and scipy only. A value is ``nan`` when it cannot be measured on this frame (e.g.
blockiness and blur on a flat black picture, freeze on the first frame); the alert engine
treats ``nan`` as "no data" and neither fires nor clears on it.
"""
from __future__ import annotations

# The registration lines of the built-in detectors. Their order is the order in which the
# measures are taken and the rules listed: a detector may read the values of those above it,
# and a rule may yield (suppressed_by) only to rules above it.
from . import black  # noqa: F401,I001
from . import freeze  # noqa: F401
from . import measures  # noqa: F401
from . import blocking  # noqa: F401
from . import blur  # noqa: F401
from . import noise  # noqa: F401
from . import macroblock  # noqa: F401
from . import exposure  # noqa: F401
from . import bars  # noqa: F401
from . import timing  # noqa: F401

from .bars import black_bars  # noqa: I001
from .black import black_fraction
from .blocking import BLOCKINESS_FLAT_BLOCKS, blockiness
from .blur import blur_effect
from .frame import FrameDetectors
from .freeze import mafd_db
from .macroblock import macroblock_edge_breaks
from .noise import estimate_noise_sigma
from .registry import frame_keys, luma, register_detector, settings_model
from .timing import TimingDetectors

__all__ = [
    "DetectorSettings",
    "FrameDetectors",
    "TimingDetectors",
    "FRAME_KEYS",
    "TIMING_KEYS",
    "register_detector",
    "luma",
    "black_fraction",
    "mafd_db",
    "blockiness",
    "blur_effect",
    "macroblock_edge_breaks",
    "estimate_noise_sigma",
    "black_bars",
    "BLOCKINESS_FLAT_BLOCKS",
]

DetectorSettings = settings_model()  # the settings of the built-in detectors, one flat model
FRAME_KEYS = frame_keys()
TIMING_KEYS = TimingDetectors.keys
