"""Frozen picture, as FFmpeg ``freezedetect``.

``freeze_db``      change from the freeze reference frame in dB: ``20*log10(MAFD)`` where
                   MAFD is the mean absolute difference of the luma normalised to 0..1 --
                   the amplitude convention FFmpeg ``freezedetect`` uses for its ``noise``
                   option (``-60dB`` == 0.001). ``0 dB`` = every pixel flipped black<->white,
                   floored at ``freeze_db_floor`` (-120 dB) for identical pictures.
``frozen``         1.0 when this sample shows the same picture as the reference (change
                   ``<= freeze_noise_db``) *and* its timestamp advanced, else 0.0.
                   Never set on a black picture (``black`` reports that).
``freeze_seconds`` how long the picture has been frozen (timestamp now minus the
                   reference's), 0 when not frozen. FFmpeg reports a freeze once this
                   reaches ``d=2`` s; the alert side applies the same minimum duration.

Still scene or frozen feed?
---------------------------
A frozen feed keeps delivering frames with *new* timestamps but an identical picture; a
stall delivers no frames at all (``TimingDetectors``' ``stall_seconds``). A live camera
looking at a still scene is not frozen, because its sensor noise (and the encoder's
periodic intra refresh) changes every frame: Gaussian sensor noise of sigma ``s`` levels
gives an MAFD of about ``1.13*s/255`` between frames, i.e. -47 dB for ``s = 1``, well above
-60 dB, while re-sent identical pictures give -inf dB (floored at -120). So the heuristic is:
*near-identical picture (<= -60 dB, the FFmpeg default) while pts keeps advancing = frozen*;
identical picture with a pts that did not advance = the same frame delivered again, which
is neither frozen nor new evidence. As in FFmpeg, each frame is compared with the first
frame of the candidate freeze (the reference), not only with the previous sample, so a
slow drift cannot hide inside the tolerance. A stricter set-up for very clean, heavily
compressed static scenes (skip-coded areas can decode bit-identically): lower
``freeze_noise_db`` to e.g. -90 so that only (almost) bit-identical pictures count.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from .registry import DetectorSettingsBase, FrameDetector, Picture, register_detector


class FreezeSettings(DetectorSettingsBase):
    freeze_noise_db: float = Field(
        -60.0, le=0.0,
        description="Change (20*log10 of the normalised luma mean absolute difference) at or "
        "below which two pictures are the same. FFmpeg freezedetect noise=-60dB (=0.001).")
    freeze_min_duration: float = Field(
        2.0, ge=0.0,
        description="Seconds a picture must stay frozen before it is reported (FFmpeg d=2). "
        "Applied by the alert rule 'frozen'.")
    freeze_require_pts_advance: bool = Field(
        True,
        description="Count a sample as frozen only if its timestamp advanced: a frozen feed "
        "sends new timestamps with an identical picture.")
    freeze_db_floor: float = Field(
        -120.0, le=-60.0, description="freeze_db reported for identical pictures (instead of -inf).")


def mafd_db(y: np.ndarray, ref: np.ndarray, floor_db: float = -120.0) -> float:
    """``20*log10`` of the mean absolute difference of two 0..1 luma planes, floored."""
    mafd = float(np.mean(np.abs(y - ref), dtype=np.float64))
    floor = 10.0 ** (floor_db / 20.0)
    return 20.0 * math.log10(max(mafd, floor))


@register_detector
class FreezeDetector(FrameDetector):
    """Keeps the freeze reference; reads ``black`` (registered before it): a black picture
    repeated is "black", not also "frozen" (one cause, one alert)."""

    name = "freeze"
    keys = ("freeze_db", "frozen", "freeze_seconds")
    Settings = FreezeSettings

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        return [dict(condition="frozen", key="frozen", comparison="above", threshold=0.5, clear_threshold=0.5,
                     min_duration=s.freeze_min_duration, clear_duration=1.0, severity="critical",
                     description="Frozen picture: change <= -60 dB with advancing timestamps for 2 s "
                                 "(FFmpeg freezedetect).")]

    def reset(self) -> None:
        self._ref: np.ndarray | None = None  # freeze reference luma
        self._ref_t: float | None = None
        self._last_t: float | None = None

    def measure(self, pic: Picture) -> dict[str, float]:
        out = self._freeze(pic.y, pic.t)
        self._last_t = pic.t
        if pic.values.get("black", 0.0) >= self.settings.black_ratio_threshold:
            out["frozen"] = 0.0
            out["freeze_seconds"] = 0.0
        return out

    def _freeze(self, y: np.ndarray, t: float) -> dict[str, float]:
        s = self.settings
        nan = float("nan")
        if self._ref is None or self._ref.shape != y.shape or self._last_t is None or t < self._last_t:
            # first frame, new resolution, or the clock went backwards (discontinuity): restart
            self._ref, self._ref_t = y, t
            return {"freeze_db": nan, "frozen": 0.0, "freeze_seconds": 0.0}
        db = mafd_db(y, self._ref, s.freeze_db_floor)
        advanced = t > self._last_t
        if db <= s.freeze_noise_db:
            if advanced or not s.freeze_require_pts_advance:
                # same picture, new timestamp: frozen (keep the reference: FFmpeg measures
                # against the first frame of the freeze)
                return {"freeze_db": db, "frozen": 1.0, "freeze_seconds": max(0.0, t - self._ref_t)}
            # same picture, same timestamp: the same frame delivered again -- no evidence
            return {"freeze_db": db, "frozen": 0.0, "freeze_seconds": 0.0}
        self._ref, self._ref_t = y, t
        return {"freeze_db": db, "frozen": 0.0, "freeze_seconds": 0.0}
