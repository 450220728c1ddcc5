"""Per-stream settings: the ``defaults`` section and each entry of ``streams`` (monitor.config)."""
from __future__ import annotations

import re
import urllib.parse
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .credentials import redact_url, url_scheme
from .detectors import DetectorSettings

# what may name a stream or a sink's key prefix: safe in keys, topics, labels and URL paths
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# stream names go into Redis keys, MQTT topics, metric labels and the live view's URL paths:
# NAME_PATTERN, but not only dots ("." and ".." are path segments)
NAME_RULE = "1-64 of A-Z a-z 0-9 _ . - (not only dots)"
_NAME_RE = re.compile(NAME_PATTERN)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# ------------------------------------------------------------------------------------------
# per-stream settings
# ------------------------------------------------------------------------------------------

class DetectorConfig(_Model):
    enabled: bool = True
    frame_width: int = Field(
        640, ge=0, le=3840,
        description="width of the frame the detectors see (height keeps the aspect ratio); "
        "0 = the model's square frame. Blockiness needs at least half the source width.")
    rate: float = Field(
        0.0, ge=0, le=60,
        description="detector samples per second; 0 = the stream's sample_rate")
    settings: DetectorSettings = Field(default_factory=DetectorSettings)


class Reconnect(_Model):
    initial_delay: float = Field(1.0, gt=0, le=600)
    max_delay: float = Field(30.0, gt=0, le=3600)
    multiplier: float = Field(2.0, ge=1.0, le=10)
    jitter: float = Field(0.3, ge=0, le=1, description="random +-fraction of each delay")

    @model_validator(mode="after")
    def _ordered(self) -> Reconnect:
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be >= initial_delay")
        return self


class Timeouts(_Model):
    open: float = Field(10.0, gt=0, le=600, description="seconds to open/connect a source")
    read: float = Field(10.0, gt=0, le=600, description="seconds without data before a read fails")
    stale: float = Field(5.0, gt=0, le=3600,
                         description="seconds without a decoded frame before the stream is marked down")
    hang: float = Field(30.0, gt=0, le=3600,
                        description="seconds without any sign of life before the worker process is killed")


class StreamSettings(_Model):
    """Settings shared by ``defaults`` and every stream."""

    sample_rate: float = Field(1.0, gt=0, le=60, description="frames scored per second")
    score_smoothing: float = Field(
        4.0, ge=0, le=3600, description="time constant (s) of the smoothed score published beside "
        "the raw per-frame score (monitor.smoothing); 0 = the raw score")
    model: str = Field("bifusion", min_length=1, max_length=64)
    alerts: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict,
        description="alert rule overrides by condition (monitor.alerts.default_rules): "
        "{quality_low: {threshold: 35}, noisy: {enabled: false}, my_rule: {key: ..., ...}}")
    detectors: DetectorConfig = Field(default_factory=DetectorConfig)
    reconnect: Reconnect = Field(default_factory=Reconnect)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    loop: bool = Field(False, description="files: start again at EOF")
    pace: bool | None = Field(
        None, description="decode at real time: null = files yes, network sources no (live); "
        "true paces e.g. an HTTP/HLS VOD, false decodes a file as fast as possible")
    options: dict[str, str] = Field(default_factory=dict,
                                    description="extra FFmpeg options for av.open (strings)")
    decode_threads: int = Field(0, ge=0, le=64, description="0 = FFmpeg's choice")
    nice: int = Field(
        19, ge=0, le=19, description="CPU priority of the stream's decoder process (Unix nice; the "
        "scorer runs at 0): with the cores full, the scorer keeps scoring what is sampled and the "
        "decoders fall behind, instead of the reverse. 19: dozens of workers at nice 10 still "
        "outweigh the scorer (docs/performance.md)")
    decode: Literal["all", "keyframes", "auto"] = Field(
        "all", description="which frames to decode (monitor.decode_mode): all; keyframes = key "
        "frames only, so samples follow the GOP, at a small part of the CPU; auto = key frames "
        "once the measured key-frame interval fits in the sample interval. keyframes and auto go "
        "back to all frames, saying why, while the key-frame interval is longer than the sample "
        "interval. Key frames only: decode errors, freezes and damage between key frames are not seen")
    decoder: Literal["auto", "software", "nvdec"] = Field(
        "auto", description="auto: NVDEC (FFmpeg's cuvid decoders) when it works here, else "
        "software with the reason logged; nvdec: fail the stream without NVDEC; software: never try")

    @field_validator("options", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): (str(x).lower() if isinstance(x, bool) else str(x)) for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _check_alerts(self) -> StreamSettings:
        from .alerts import default_rules, merge_rules
        base = default_rules(self.detectors.settings)
        errors = []
        for name, override in self.alerts.items():
            try:
                merge_rules(base, {name: override})
            except ValidationError as e:
                for err in e.errors(include_url=False):
                    where = ".".join(str(p) for p in err["loc"])
                    msg = err["msg"].removeprefix("Value error, ")
                    errors.append(f"alerts.{name}{'.' + where if where else ''}: {msg}")
            except (ValueError, TypeError) as e:
                errors.append(f"alerts.{name}: {e}")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def alert_rules(self) -> list:
        """The alert rules of this stream: the defaults with ``alerts`` applied."""
        from .alerts import default_rules, merge_rules
        return merge_rules(default_rules(self.detectors.settings), self.alerts)

    @property
    def sample_interval(self) -> float:
        return 1.0 / self.sample_rate


class StreamConfig(StreamSettings):
    name: str = Field(..., description=NAME_RULE)
    url: str = Field(..., min_length=1, repr=False, description="URL or file path")
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v) or not v.strip("."):
            raise ValueError(f"{v!r} is not a valid stream name: use {NAME_RULE}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("empty url")
        if any(c in v for c in "\r\n\0"):
            raise ValueError("url contains control characters")
        return v

    @property
    def scheme(self) -> str:
        return url_scheme(self.url)

    @property
    def is_file(self) -> bool:
        return self.scheme == "file"

    @property
    def path(self) -> str:
        """The local path of a file stream (``file:`` prefix removed)."""
        if self.url.startswith("file://"):
            return urllib.parse.unquote(self.url[len("file://"):])
        if self.url.startswith("file:"):
            return urllib.parse.unquote(self.url[len("file:"):])
        return self.url

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:  # never the clear URL
        return f"StreamConfig(name={self.name!r}, url={self.redacted_url!r})"

    __str__ = __repr__
