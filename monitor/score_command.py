"""``vqmon score``: score image and video files from the command line."""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engines.backends import backend_names
from engines.images import read_image
from engines.types import Prediction
from engines.views import DEFAULT_DRAWS, InputView

from .media import MediaError, SampledFrame, is_image, sample_video


def register(subparsers) -> None:
    p = subparsers.add_parser("score", help="score image and video files",
                              description="Score images and videos (sampled at --fps) with a quality model.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image or video files")
    p.add_argument("--model", default="bifusion", help="quality model (default: bifusion)")
    p.add_argument("--backend", default="auto", choices=backend_names())
    p.add_argument("--weights", default="default",
                   help="weights file (default: the trained weights shipped with vqmon); 'none': untrained")
    p.add_argument("--fps", type=float, default=1.0, help="video samples per second (default 1)")
    p.add_argument("--batch", type=int, default=8, help="frames per inference batch (default 8)")
    p.add_argument("--maps", action="store_true", help="include the region map of each frame")
    p.add_argument("--draws", type=int, default=DEFAULT_DRAWS,
                   help="still images: views averaged per image (video: one per sample, averaged "
                        f"over time by the monitor; default {DEFAULT_DRAWS})")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    p.set_defaults(func=run_score, heavy=True)


def _frames(path: str, fps: float, view: InputView) -> Iterator[SampledFrame]:
    if is_image(path):
        img = read_image(path)
        yield SampledFrame(0, None, img, img.shape[0], img.shape[1])
    else:
        yield from sample_video(path, fps, view)


def _record(path: str, frame: SampledFrame, pred: Prediction, maps: bool, video: bool) -> dict:
    region = pred.region_map
    rec: dict = {"path": path, "score": round(pred.score, 2)}
    if video:
        rec.update(frame=frame.index, pts=round(frame.pts, 3) if frame.pts is not None else None)
    worst_r, worst_c, worst_s = region.worst(1)[0]
    rec["worst_region"] = {"row": worst_r, "col": worst_c, "score": round(worst_s, 2),
                           "box": region.cell_box(worst_r, worst_c)}
    if maps:
        rec["map"] = [[round(float(v), 1) for v in row] for row in region.values]
    return rec


def run_score(args: argparse.Namespace) -> int:
    from engines.engine import QualityEngine  # heavy import: only when scoring

    err = Console(stderr=True)
    out = Console(highlight=False)
    if not out.is_terminal:
        out.width = 200  # piped: keep whole paths on one line
    if args.fps <= 0:
        err.print("[red]error:[/] --fps must be > 0")
        return 2
    try:
        engine = QualityEngine(args.model, backend=args.backend, weights=args.weights, max_batch=args.batch)
    except Exception as e:  # noqa: BLE001 — any set-up failure is reported, not traced
        err.print(f"[red]error:[/] cannot start {args.model} on {args.backend}: {e}")
        return 2
    info = engine.info
    err.print(f"model {info['model']} on {info['backend_detail']}, weights {info['weights']}")
    if not info["trained"]:
        err.print("[bold red]WARNING: untrained model (no trained weights loaded): "
                  "scores and maps are NOT meaningful.[/]")

    failures, rows = 0, []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True,
                        disable=args.json or not err.is_terminal)
    with progress:
        task = progress.add_task("scoring", total=len(args.paths))
        for path in args.paths:
            progress.update(task, description=Path(path).name)
            try:
                video = not is_image(path)
                for batch in _batches(_frames(path, args.fps, engine.view), args.batch):
                    preds = engine.score([f.rgb for f in batch], draws=1 if video else args.draws,
                                         frame_sizes=[(f.height, f.width) for f in batch])
                    for f, pred in zip(batch, preds):
                        rec = _record(path, f, pred, args.maps, video)
                        if args.json:
                            out.print(json.dumps(rec), soft_wrap=True)
                        rows.append(rec)
            except (MediaError, ValueError, OSError) as e:
                failures += 1
                err.print(f"[red]error:[/] {path}: {e}")
            progress.advance(task)

    if not args.json and rows:
        table = Table(title=f"vqmon score — {info['model']}" + ("" if info["trained"] else " (UNTRAINED)"))
        for col in ("path", "frame", "pts s", "score", "worst cell (row,col: score)"):
            table.add_column(col, justify="right" if col != "path" else "left")
        for r in rows:
            w = r["worst_region"]
            table.add_row(r["path"], str(r.get("frame", "")), "" if r.get("pts") is None else f"{r['pts']:.2f}",
                          f"{r['score']:.1f}", f"{w['row']},{w['col']}: {w['score']:.1f}")
            if args.maps:
                table.add_row("", "", "", "", "\n".join(" ".join(f"{v:5.1f}" for v in row) for row in r["map"]))
        out.print(table)
    return 1 if failures else 0


def _batches(frames: Iterator[SampledFrame], size: int) -> Iterator[list[SampledFrame]]:
    batch: list[SampledFrame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
