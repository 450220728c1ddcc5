"""The detector registry: each detector declares its measures, its settings and its default
alert rules in one class, registered with :func:`register_detector` (as timm's
``register_model``).

A detector is a :class:`Detector` subclass with

``name``      its registry name;
``keys``      the measures it adds to the frame record (detector values, alert rule keys);
``Settings``  a :class:`DetectorSettingsBase` subclass with its fields of the stream's
              ``detectors.settings`` (one flat mapping: :func:`settings_model` composes the
              fields of every registered detector into ``DetectorSettings``);
``rules``     its default alert rules, as :class:`monitor.alert_rules.AlertRule` fields.

A :class:`FrameDetector` measures sampled pictures: the stream worker and ``vqmon report``
make one per registered frame detector and stream (:class:`monitor.detectors.FrameDetectors`),
in registration order, and call :meth:`FrameDetector.measure` with the :class:`Picture` of
each sample. A detector may read what those registered before it measured (``values``).
The default rules are collected in registration order too, so a rule that is
``suppressed_by`` another must be registered after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

__all__ = ["Detector", "FrameDetector", "Picture", "DetectorSettingsBase", "register_detector",
           "registered", "frame_detectors", "frame_keys", "settings_model", "detector_rules", "luma"]

_LUMA_COEFFS = {
    "bt601": (0.299, 0.587, 0.114),
    "bt709": (0.2126, 0.7152, 0.0722),
}


class DetectorSettingsBase(BaseModel):
    """Base of every detector's settings, and the settings every frame detector shares."""

    model_config = ConfigDict(extra="forbid")

    luma_coefficients: Literal["bt601", "bt709"] = Field(
        "bt601", description="RGB -> luma weights (swscale's default conversion is BT.601).")


class Detector:
    """A registered detector: its measures, its settings and its default rules."""

    name: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]
    Settings: ClassVar[type[DetectorSettingsBase]] = DetectorSettingsBase

    @classmethod
    def rules(cls, settings: Any) -> list[dict[str, Any]]:
        """The default alert rules (AlertRule fields) for ``settings`` (a ``DetectorSettings``)."""
        return []


def check_frame(frame_rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(frame_rgb)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"expected an H x W x 3 RGB frame, got shape {a.shape}")
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise ValueError(f"frame too small: {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {a.dtype}")
    return a[..., :3]


def luma(frame_rgb: np.ndarray, coefficients: str = "bt601") -> np.ndarray:
    """Full-range luma of a uint8 RGB frame as float32 in 0..1."""
    r, g, b = _LUMA_COEFFS[coefficients]
    f = frame_rgb.astype(np.float32)
    y = f[..., 0] * np.float32(r / 255.0)
    y += f[..., 1] * np.float32(g / 255.0)
    y += f[..., 2] * np.float32(b / 255.0)
    return y


@dataclass
class Picture:
    """One sampled frame as the frame detectors see it."""

    rgb: np.ndarray                          # uint8 H x W x 3, checked
    y: np.ndarray                            # its luma, float32 0..1
    t: float                                 # the stream's clock: pts, or wall time when unknown
    source_size: tuple[int, int] | None      # (w, h) decoded, before the frame was scaled
    luma_native: np.ndarray | None           # the decoded luma plane at source resolution (levels)
    values: dict[str, float] = field(default_factory=dict)  # measured so far on this frame

    @cached_property
    def scale(self) -> tuple[float, float]:
        """(frame width / source width, frame height / source height); 1 without a source size."""
        src = self.source_size
        if not src:
            return 1.0, 1.0
        return self.rgb.shape[1] / float(src[0]), self.rgb.shape[0] / float(src[1])

    @property
    def at_source(self) -> bool:
        """The frame is (almost) unscaled: grids of the codec survive on it."""
        sx, sy = self.scale
        return abs(sx - 1.0) < 0.01 and abs(sy - 1.0) < 0.01


class FrameDetector(Detector):
    """A detector of sampled pictures; one instance per stream, which may keep state."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Forget the previous pictures (e.g. after a reconnect)."""

    def measure(self, pic: Picture) -> dict[str, float]:
        """This detector's ``keys`` for one picture."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Detector]] = {}
D = TypeVar("D", bound=type[Detector])


def register_detector(cls: D) -> D:
    """Class decorator: add a detector to the registry (its module must be imported: the
    built-in ones by ``monitor/detectors/__init__.py``)."""
    if cls.name in _REGISTRY:
        raise ValueError(f"detector {cls.name!r} is already registered")
    for other in _REGISTRY.values():
        shared = set(cls.keys) & set(other.keys)
        fields = (set(cls.Settings.model_fields) & set(other.Settings.model_fields)) \
            - set(DetectorSettingsBase.model_fields)
        if shared or (fields and cls.Settings is not other.Settings):
            raise ValueError(f"detector {cls.name!r}: {sorted(shared | fields)} already declared "
                             f"by detector {other.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def registered() -> list[type[Detector]]:
    """The registered detectors, in registration order."""
    return list(_REGISTRY.values())


def frame_detectors() -> list[type[FrameDetector]]:
    return [d for d in _REGISTRY.values() if issubclass(d, FrameDetector)]


def frame_keys() -> tuple[str, ...]:
    """The measures of one sampled frame (what :class:`FrameDetectors` returns)."""
    return tuple(k for d in frame_detectors() for k in d.keys)


def detector_rules(settings: Any) -> list[dict[str, Any]]:
    """The default alert rules of the registered detectors, in registration order."""
    return [r for d in _REGISTRY.values() for r in d.rules(settings)]


_composed: dict[tuple[type[BaseModel], ...], type[DetectorSettingsBase]] = {}


def settings_model() -> type[DetectorSettingsBase]:
    """``DetectorSettings``: one model with the settings fields of every registered detector."""
    own = list(dict.fromkeys(d.Settings for d in _REGISTRY.values()))
    # a class that another one extends (DetectorSettingsBase) comes in through that one
    bases = tuple(c for c in own if not any(o is not c and issubclass(o, c) for o in own))
    if bases not in _composed:
        # pydantic takes the fields of the last base first: reversed, they keep registration order
        _composed[bases] = create_model(
            "DetectorSettings", __base__=tuple(reversed(bases)), __module__="monitor.detectors",
            __doc__="Detector thresholds and parameters (the ``Settings`` of every registered "
                    "detector); defaults follow FFmpeg's filters where one exists.")
    return _composed[bases]

