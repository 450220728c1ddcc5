"""``vqmon report FILE... -o report.html``: a QC report of video files (HTML and/or JSON).

Each file runs through the monitor's own pipeline at full speed (``analysis``), gets a
verdict (``verdict``) and is drawn into one self-contained HTML page (``render``).

Exit status: 0 when no file failed (pass or warn), 1 when any file failed or could not be
read (the others are still reported), 2 when the report could not be made at all (bad
arguments or configuration, the model would not start, the output could not be written).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from engines.backends import backend_names

from .. import __version__
from ..alerts import SEVERITIES

DEFAULT_RATE = 2.0  # samples/s: twice the service's default, a file can afford it
DEFAULT_HTML = "report.html"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="QC report of video files (self-contained HTML, JSON)",
        description="Run video files through the monitor (sampling, QC detectors, quality model, "
                    "alert rules) on media time and write one self-contained HTML report: score and "
                    "detectors over time, alerts, worst moments with their region maps, and a "
                    "pass/warn/fail verdict per file. Exit status 1 when any file fails or cannot "
                    "be read.")
    p.add_argument("paths", nargs="+", metavar="FILE", help="video files")
    p.add_argument("-o", "--output", metavar="HTML",
                   help=f"HTML report to write (default {DEFAULT_HTML}; with --json or --json-out, "
                        "only when given)")
    p.add_argument("--json", action="store_true", help="write the report's data as JSON to stdout")
    p.add_argument("--json-out", metavar="PATH", help="write the report's data as JSON to PATH")
    p.add_argument("-c", "--config", metavar="YAML",
                   help="a vqmon config: its defaults' sample_rate, model, alerts and detectors "
                        "and its engine section are used (flags given here win)")
    p.add_argument("--rate", "--fps", dest="rate", type=float, default=None,
                   help=f"samples per second of media time (default: the config's sample_rate, "
                        f"else {DEFAULT_RATE:g})")
    p.add_argument("--model", default=None, help="quality model (default: the config's, else bifusion)")
    p.add_argument("--backend", default=None, choices=backend_names(),
                   help="inference backend (default: the config's, else auto)")
    p.add_argument("--weights", default=None, help="weights file, 'default' or 'none' (untrained)")
    p.add_argument("--batch", type=int, default=None, help="frames per inference batch (default 8)")
    p.add_argument("--moments", type=int, default=3, metavar="N",
                   help="lowest-scoring moments (at least 5 s apart) shown per file besides the "
                        "alert onsets (default 3)")
    v = p.add_argument_group("verdict", "pass / warn / fail of each file (see monitor/report/verdict.py)")
    v.add_argument("--fail-severity", choices=SEVERITIES, default="critical",
                   help="an alert of this severity or worse fails the file (default critical)")
    v.add_argument("--warn-severity", choices=SEVERITIES, default="warning",
                   help="an alert of this severity or worse warns (default warning)")
    v.add_argument("--fail-median", type=float, default=10.0, metavar="SCORE",
                   help="fail when the median score is below this (default 10; -1: off)")
    v.add_argument("--warn-median", type=float, default=20.0, metavar="SCORE",
                   help="warn when the median score is below this (default 20; -1: off)")
    v.add_argument("--warn-p10", type=float, default=None, metavar="SCORE",
                   help="warn when the 10th-percentile score is below this (default: off)")
    v.add_argument("--ignore-condition", action="append", default=[], metavar="NAME",
                   help="alert condition shown but not counted in the verdict (repeatable)")
    p.set_defaults(func=run_report, heavy=True)


def _thresholds(args: argparse.Namespace):
    from .verdict import Thresholds
    ignore = tuple(args.ignore_condition)
    off = lambda x: None if x is None or x < 0 else x  # noqa: E731
    return Thresholds(fail_severity=args.fail_severity, warn_severity=args.warn_severity,
                      fail_median=off(args.fail_median), warn_median=off(args.warn_median),
                      warn_p10=off(args.warn_p10), ignore=ignore)


def run_report(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..alerts import default_rules
    from ..config import ConfigError, DetectorConfig, load_config
    from .analysis import Settings, analyze
    from .render import render_html, report_data
    from .verdict import judge

    err = Console(stderr=True)
    try:
        thresholds = _thresholds(args)
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    model, backend, weights, batch, preprocess = "bifusion", "auto", "default", 8, "auto"
    rate, rules, detectors, rules_from = DEFAULT_RATE, default_rules(), DetectorConfig(), "defaults"
    if args.config:
        try:
            cfg = load_config(args.config)
        except ConfigError as e:
            err.print(f"[red]error:[/] {e}")
            return 2
        d = cfg.defaults
        model, rate, rules, detectors = d.model, d.sample_rate, d.alert_rules(), d.detectors
        e = cfg.engine
        backend, weights, batch, preprocess = e.options, e.weights or "none", e.max_batch or batch, e.preprocess
        rules_from = f"defaults + {Path(args.config).name}"
    model = args.model or model
    backend = args.backend or backend
    weights = args.weights or weights
    batch = args.batch or batch
    rate = args.rate if args.rate is not None else rate
    if rate <= 0 or batch <= 0 or args.moments < 0:
        err.print("[red]error:[/] --rate and --batch must be > 0, --moments >= 0")
        return 2
    html_path = args.output or (None if (args.json or args.json_out) else DEFAULT_HTML)

    from engines.engine import QualityEngine  # heavy import: only once the arguments are fine
    try:
        engine = QualityEngine(model, backend=backend, weights=weights, max_batch=batch, preprocess=preprocess)
    except Exception as e:  # noqa: BLE001 -- any set-up failure is reported, not traced
        err.print(f"[red]error:[/] cannot start {model} on {backend}: {e}")
        return 2
    info = engine.info
    if not info["trained"]:
        err.print("[bold red]WARNING: untrained model (no trained weights loaded): "
                  "scores and maps are NOT meaningful.[/]")

    settings = Settings(rate=rate, rules=rules, detectors=detectors, lowest=args.moments,
                        quiet=thresholds.ignore)
    results = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.fields[media]}"), TimeElapsedColumn(),
                        console=err, transient=True, disable=not err.is_terminal)
    with progress:
        for i, path in enumerate(args.paths, 1):
            task = progress.add_task(f"[{i}/{len(args.paths)}] {Path(path).name}", total=None, media="")

            def advance(t: float, total: float | None, task=task) -> None:
                media = f"{t:.0f}/{total:.0f} s of media" if total else f"{t:.0f} s of media"
                progress.update(task, completed=t, total=total, media=media)

            res = analyze(path, engine, settings, advance)
            res.verdict, res.reasons = judge(res.error, res.stats(), res.events, thresholds)
            progress.remove_task(task)
            err.print(f"{res.verdict.upper():4s} {path}" + (f": {'; '.join(res.reasons)}" if res.reasons else ""),
                      highlight=False, soft_wrap=True)
            results.append(res)

    header = {
        "vqmon": {"version": __version__},
        "generated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "engine": info,
        "settings": {"rate": rate, "detectors_enabled": detectors.enabled,
                     "detector_width": detectors.frame_width, "rules_from": rules_from,
                     "moments": args.moments},
        "thresholds": {**asdict(thresholds), "ignore": list(thresholds.ignore)},
    }
    data = report_data(results, header, thresholds.ignore)
    try:
        if html_path:
            Path(html_path).write_text(render_html(results, data, thresholds.ignore), encoding="utf-8")
            err.print(f"report written to {html_path}")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(data, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as e:
        err.print(f"[red]error:[/] cannot write the report: {e}")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(data, allow_nan=False) + "\n")
    return 1 if any(r.verdict == "fail" for r in results) else 0
