"""The monitor's configuration: one YAML file validated into a typed tree at start-up.

Layout (every key optional except ``streams``; see ``deploy/vqmon.example.yaml``)::

    defaults:          # per-stream settings, overridable in each stream
      sample_rate: 1.0 # frames scored per second of stream time
      model: bifusion
      alerts: {quality_low: {threshold: 35}, noisy: {enabled: false}}  # rule overrides (configuring an off-by-default rule turns it on)
      detectors: {enabled: true, frame_width: 640, rate: 0, settings: {...}}
      reconnect: {initial_delay: 1, max_delay: 30, multiplier: 2, jitter: 0.3}
      timeouts: {open: 10, read: 10, stale: 5, hang: 30}
      loop: false      # files: start again at EOF (false: the stream ends at EOF)
      pace: null       # real time: null = files yes, network no; true/false to force
      options: {}      # extra FFmpeg/PyAV options for av.open
    streams:
      - name: cam1     # [A-Za-z0-9_.-]{1,64}, not only dots: used in Redis keys, metric labels, URLs
        url: rtsp://viewer:${CAM1_PASSWORD}@10.0.0.5/stream1
        sample_rate: 2 # any key of ``defaults`` can be overridden here
    engine:  {backend: auto, weights: default, max_batch: null, max_wait_ms: 50, preprocess: auto, options: {}}
    redis:   {url: null (= start a private redis-server), maxlen: 10000, buffer_size: 10000, ...}
    mqtt:    {enabled: false, host: 127.0.0.1, port: 1883, topic_prefix: vqmon, qos: 1, ...}
    metrics: {listen: "127.0.0.1:9108"}
    console: true
    log_level: info
    shard: null        # "i/N" or "auto": monitor only this process's share (monitor.sharding)

``${VAR}`` (or ``${VAR:-fallback}``) anywhere in a string is replaced by the environment
variable (``$$`` is a literal ``$``): keep passwords out of the file. Errors name the field
(``streams[1] 'cam2'.sample_rate: ...``) and the reason.

The sink sections (``redis``, ``mqtt``) are declared by the sinks themselves
(``monitor.sinks.SINKS``). Credentials never leave :mod:`monitor.credentials` in clear: use
``redact_url`` / ``Scrubber`` for anything printed, logged, exported as a metric or written to a
sink.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from engines.backends import backend_names, options_class, options_union
from engines.types import Preprocess

from .config_io import ConfigError, format_validation_error, load_yaml, substitute_env  # noqa: F401
# moved to their own modules; imported from here as before
from .credentials import (Scrubber, ffmpeg_url, redact_url,  # noqa: F401
                          stream_name_for, url_host, url_scheme)
from .decode_mode import KEYFRAME_LIMITS
from .sharding import Shard, parse_shard, resolve_auto
from .sinks import SINKS
from .stream_config import (NAME_PATTERN, NAME_RULE, DetectorConfig, Reconnect,  # noqa: F401
                            StreamConfig, StreamSettings, Timeouts, _Model)


# ------------------------------------------------------------------------------------------
# global sections
# ------------------------------------------------------------------------------------------

class EngineConfig(_Model):
    backend: Literal[tuple(backend_names())] = Field("auto", description="the inference backend")
    weights: str | None = Field("default", description="'default' (shipped), a path, or null / 'none' (untrained)")
    max_batch: int | None = Field(None, ge=1, le=256, description="largest batch scored in one call; "
                                  "null: the backend's choice (cpu: 1, batches side by side; GPUs: 8)")
    max_wait_ms: float = Field(50.0, ge=0, le=10_000, description="wait this long to fill a batch")
    preprocess: Preprocess = Field(
        "auto", description="where frames become the model's input: auto (the backend's device), host or device")
    options: options_union() = Field(default_factory=lambda: options_class("auto")(),
                                     description="the backend's own settings (its class in engines.backends)")

    @model_validator(mode="before")
    @classmethod
    def _tag_options(cls, data: Any) -> Any:
        """``options`` is validated by the options class of ``backend``: its tag is set here."""
        if not isinstance(data, dict) or not isinstance(data.get("options") or {}, dict):
            return data
        backend = data.get("backend", "auto")
        if backend not in backend_names():  # reported once, under engine.backend
            return {k: v for k, v in data.items() if k != "options"}
        options = data.get("options") or {}
        if options.get("backend", backend) != backend:  # (a dumped configuration repeats it)
            raise ValueError(f"options.backend: these are the options of engine.backend ({backend})")
        return {**data, "options": {**options, "backend": backend}}


class MetricsConfig(_Model):
    enabled: bool = True
    listen: str = Field("127.0.0.1:9108", description="HOST:PORT of the /metrics endpoint (port 0 = any)")
    live_view: bool = Field(True, description="also serve the live view page and /api/streams on listen "
                                              "(/metrics, /healthz and /readyz are always served)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


# one section per registered sink (``redis:``, ``mqtt:``), typed by the sink's own settings class,
# so a new sink needs no line here
_SinkSections = create_model("_SinkSections", __base__=_Model, **{
    name: (sink.config_class, Field(default_factory=sink.config_class)) for name, sink in SINKS.items()})


class Config(_SinkSections):
    version: Literal[1] = 1
    defaults: StreamSettings = Field(default_factory=StreamSettings)
    streams: list[StreamConfig] = Field(..., min_length=1)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    console: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shard: str | None = Field(
        None, description="INDEX/COUNT: monitor only this share of the streams (monitor.sharding); "
        "'auto' takes it from VQMON_SHARD_INDEX (or the HOSTNAME ordinal) and VQMON_SHARD_COUNT")

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: str | None) -> str | None:
        if v is not None:
            parse_shard(v)
        return v

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        """Deep-merge ``defaults`` into each stream (the stream's own keys win)."""
        if not isinstance(data, dict):
            return data
        defaults = data.get("defaults") or {}
        streams = data.get("streams")
        if not isinstance(defaults, dict) or not isinstance(streams, list):
            return data
        try:  # a broken ``defaults`` is reported once, under ``defaults``
            StreamSettings.model_validate(defaults)
        except ValidationError:
            return data
        data = dict(data)
        data["streams"] = [_deep_merge(defaults, s) if isinstance(s, dict) else s for s in streams]
        return data

    @model_validator(mode="after")
    def _unique(self) -> Config:
        seen: dict[str, int] = {}
        for i, s in enumerate(self.streams):
            if s.name in seen:
                raise ValueError(f"streams[{i}].name: {s.name!r} is already used by streams[{seen[s.name]}]")
            seen[s.name] = i
        return self

    @property
    def active_streams(self) -> list[StreamConfig]:
        return [s for s in self.streams if s.enabled]

    @property
    def shard_assignment(self) -> Shard | None:
        return parse_shard(self.shard) if self.shard else None

    @property
    def assigned_streams(self) -> list[StreamConfig]:
        """The enabled streams this process monitors (its shard's share, or all)."""
        shard = self.shard_assignment
        return [s for s in self.active_streams if shard is None or shard.owns(s.name)]

    def models(self) -> list[str]:
        return sorted({s.model for s in self.assigned_streams})

    def sink_configs(self) -> dict[str, Any]:
        """Each registered sink's section (enabled or not), by sink name."""
        return {name: getattr(self, name) for name in SINKS}

    def summary(self) -> str:
        """Human-readable summary without secrets."""
        shard = self.shard_assignment
        assigned = {s.name for s in self.assigned_streams}
        share = f" (shard {shard}: {len(assigned)} of them here)" if shard else ""
        lines = [f"{len(self.active_streams)} stream(s){share}, engine backend={self.engine.backend} "
                 f"max_batch={self.engine.max_batch or 'auto'} max_wait={self.engine.max_wait_ms:g} ms"]
        for s in self.streams:
            flags = []
            if s.is_file:
                flags.append("loop" if s.loop else "once")
                flags.append("unpaced" if s.pace is False else "paced")
            if s.decode != "all":
                flags.append(f"decode {s.decode}: not seen while key frames only: {'; '.join(KEYFRAME_LIMITS)}")
            if not s.enabled:
                flags.append("disabled")
            elif shard and s.name not in assigned:
                flags.append("other shard")
            lines.append(f"  {s.name}: {s.redacted_url}  model={s.model} sample_rate={s.sample_rate:g}/s"
                         + (f" [{', '.join(flags)}]" if flags else ""))
        lines += [f"{name}: {section.summary() if section.enabled else 'disabled'}"
                  for name, section in self.sink_configs().items()]
        if not self.metrics.enabled:
            lines.append("http: disabled")
        else:
            base = "http://" + self.metrics.listen
            lines.append(f"http: {base}/metrics" + (f", live view {base}/" if self.metrics.live_view else ""))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Overrides:
    """Settings given on the command line (``vqmon run``), applied over the file's."""

    settings: dict[str, Any] = field(default_factory=dict)  # merged over the file's: {"engine": {"backend": "cpu"}}
    # for every stream: set in ``defaults`` and removed from the streams that set their own
    stream_settings: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # streams added by URL or path, named after it
    loop: bool = False                                # the added streams loop at EOF

    def apply(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` (YAML data, not changed) with these overrides."""
        data = _deep_merge(raw, self.settings)
        engine, file_engine = self.settings.get("engine") or {}, raw.get("engine")
        if ("backend" in engine and "options" not in engine and isinstance(file_engine, dict)
                and file_engine.get("backend", "auto") != engine["backend"]):
            data["engine"].pop("options", None)  # the file's options are another backend's
        streams = list(data.get("streams") or [])
        taken = {s.get("name") for s in streams if isinstance(s, dict)}
        for src in self.sources:
            streams.append({"name": stream_name_for(src, taken), "url": src, **({"loop": True} if self.loop else {})})
        if self.stream_settings and isinstance(data.get("defaults") or {}, dict):
            data["defaults"] = _deep_merge(data.get("defaults") or {}, self.stream_settings)
            streams = [{k: v for k, v in s.items() if k not in self.stream_settings} if isinstance(s, dict) else s
                       for s in streams]
        if streams:
            data["streams"] = streams
        return data


def load_config(path: str | Path | None, env: dict[str, str] | None = None,
                overrides: Overrides | None = None) -> Config:
    """Read, substitute ``${ENV}`` and validate a YAML file (none: the overrides alone), with
    ``overrides`` applied; raises ConfigError."""
    raw: Any = {}
    source = "<command line>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
        raw = _mapping(load_yaml(text, source), source)
    if overrides is not None:
        raw = overrides.apply(raw)
    return config_from_dict(raw, env=env, source=source)


def parse_config(text: str, env: dict[str, str] | None = None, source: str = "<config>") -> Config:
    return config_from_dict(_mapping(load_yaml(text, source), source), env=env, source=source)


def _mapping(raw: Any, source: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (got {type(raw).__name__})")
    return raw


def config_from_dict(raw: dict, env: dict[str, str] | None = None, source: str = "<config>") -> Config:
    env = dict(os.environ) if env is None else env
    errors: list[str] = []
    data = substitute_env(copy.deepcopy(raw), env, errors)
    if isinstance(data, dict) and isinstance(data.get("shard"), str) and data["shard"].strip() == "auto":
        try:
            data["shard"] = resolve_auto(env)
        except ValueError as e:
            errors.append(f"shard: {e}")
    if errors:
        raise ConfigError(f"{source}: " + ("\n  ".join([f"{len(errors)} error(s):"] + errors)))
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, data, source)) from None


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options":
            out[k] = _deep_merge(out[k], v)
        elif k == "options" and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_listen(v: str) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9108")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
