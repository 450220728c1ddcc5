"""``vqmon run`` (monitor streams until stopped) and ``vqmon check-config``."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from engines.backends import backend_names

from .config import Config, ConfigError, Overrides, load_config

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def demo_sources() -> list[Path]:
    return sorted(p for p in SAMPLES_DIR.glob("*.mp4"))


def run_overrides(args: argparse.Namespace) -> Overrides:
    """What ``vqmon run``'s options change in the configuration."""
    sources = list(args.sources or [])
    if args.demo:
        demo = demo_sources()
        if not demo:
            raise ConfigError(f"no sample clips found in {SAMPLES_DIR}")
        sources += [str(p) for p in demo]
    if not sources and not args.config:
        raise ConfigError("no stream to monitor: give URLs or files, -c CONFIG, or --demo")
    settings: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    if args.backend:
        engine["backend"] = args.backend
    if args.max_batch:
        engine["max_batch"] = args.max_batch
    if args.weights:
        engine["weights"] = args.weights  # "none": the untrained model (engines.models.create_model)
    if engine:
        settings["engine"] = engine
    for section, key, value in (("redis", "url", args.redis), ("metrics", "listen", args.metrics)):
        if value:  # ``none`` disables the section, anything else sets its address
            settings[section] = {"enabled": False} if value == "none" else {key: value, "enabled": True}
    if args.shard:
        settings["shard"] = None if args.shard == "none" else args.shard
    if args.no_console:
        settings["console"] = False
    stream_settings = {k: v for k, v in (("sample_rate", args.sample_rate), ("model", args.model)) if v is not None}
    return Overrides(settings=settings, stream_settings=stream_settings, sources=sources,
                     loop=args.demo or args.loop)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", metavar="URL_OR_FILE",
                   help="streams to monitor (quick form; names are derived from the URLs/files). "
                        "A password in a URL here is visible to every local user in `ps` and in "
                        "the shell history: put it in a config file (-c) as ${ENV}, e.g. "
                        "url: rtsp://user:${CAM_PW}@host/path")
    p.add_argument("-c", "--config", help="YAML configuration (see deploy/vqmon.example.yaml)")
    p.add_argument("--demo", action="store_true",
                   help="monitor the sample clips shipped in monitor/samples (looped, real time)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--sample-rate", type=float, default=None, metavar="HZ",
                   help="frames scored per second per stream (overrides the config)")
    p.add_argument("--model", default=None, help="quality model for all streams (overrides the config)")
    p.add_argument("--backend", default=None, choices=backend_names(),
                   help="inference backend (overrides the config; the file's engine.options then go)")
    p.add_argument("--weights", default=None, help="weights file, 'default' (shipped) or 'none' (untrained)")
    p.add_argument("--max-batch", type=int, default=None, help="largest scoring batch")
    p.add_argument("--loop", action="store_true", help="quick form: loop files at EOF")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="redis://, rediss:// or unix:// URL; 'none' disables Redis "
                        "(default: the config's, else a private redis-server)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="address of /metrics (default 127.0.0.1:9108); 'none' disables it")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="monitor only share I of N (0-based) of the configured streams, by a stable "
                        "hash of their names; 'auto' reads VQMON_SHARD_INDEX (or the StatefulSet "
                        "ordinal in HOSTNAME) and VQMON_SHARD_COUNT; 'none' monitors all")
    p.add_argument("--no-console", action="store_true", help="no live status table")


def register(subparsers) -> None:
    """Add ``run`` and ``check-config`` to the ``vqmon`` command line."""
    p = subparsers.add_parser("run", help="monitor streams: score frames, write the sinks, serve /metrics",
                              description="Monitor live streams and files: sampled frames are scored by "
                              "the quality model; records go to the sinks (Redis, MQTT), metrics to "
                              "/metrics. With no Redis configured a private redis-server is started. "
                              "`vqmon run --demo` monitors the shipped sample clips.")
    _add_run_args(p)
    p.set_defaults(func=cmd_run, heavy=True)
    c = subparsers.add_parser("check-config", help="validate a configuration file and print a summary")
    c.add_argument("config", help="YAML configuration file")
    # models, backend and URL protocols are always checked now (monitor.preflight); kept for old scripts
    c.add_argument("--models", action="store_true", help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_check_config)


def _preflight_failed(cfg: Config, source: str, prefix: str) -> bool:
    """Print what ``cfg`` asks for that this installation lacks (monitor.preflight); True if any."""
    from .preflight import check
    problems = check(cfg)
    if problems:
        print(f"{prefix}invalid configuration: {source}: {len(problems)} error(s):\n  "
              + "\n  ".join(problems), file=sys.stderr)
    return bool(problems)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"invalid configuration: {e}", file=sys.stderr)
        return 2
    if _preflight_failed(cfg, args.config, ""):
        return 2
    print(f"{args.config}: OK")
    print(cfg.summary())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .console import LiveConsole, LogSummary, console_available
    from .service import Monitor
    try:
        cfg = load_config(args.config, overrides=run_overrides(args))
    except ConfigError as e:
        print(f"vqmon run: invalid configuration: {e}", file=sys.stderr)
        return 2
    if _preflight_failed(cfg, args.config or "<command line>", "vqmon run: "):
        return 2
    mlog = logging.getLogger("monitor")
    if mlog.level == logging.NOTSET or mlog.level > getattr(logging, cfg.log_level.upper()):
        mlog.setLevel(getattr(logging, cfg.log_level.upper()))
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for line in cfg.summary().splitlines():
        log.info("%s", line)
    monitor = Monitor(cfg)
    stop = monitor.stop_event

    def on_signal(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            os._exit(130)
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            monitor.start()
        except Exception as e:
            log.debug("start failed", exc_info=True)
            print(f"vqmon run: cannot start: {monitor.scrub(e)}", file=sys.stderr)
            monitor.stop()
            return 2
        view = LiveConsole(monitor) if cfg.console and console_available() else LogSummary(monitor)
        with view:
            return monitor.run(duration=args.duration, console=view)
    finally:
        monitor.stop()
        for s, h in old.items():
            signal.signal(s, h)
