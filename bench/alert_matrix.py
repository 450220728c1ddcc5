"""Alerts from the first second (issue 16): recall, false alarms and time to alert per kind of
damage, strength and clean lead-in, and silence on clean controls of every kind.

    python bench/alert_matrix.py [--quick] [--json m.json] [--keep DIR] [--config vqmon.yaml]
    python bench/alert_matrix.py --replay m.json [--config vqmon.yaml]     # rules only, seconds

Streams are assembled from measured segments. Per content, one clean file (32 s of it,
looped) and, per kind and strength, one file of the damaged seconds 8-14 of that content are
built (H.264 crf 16, 25 fps) and run through ``vqmon report``'s pipeline (decode, sampling at
2/s, the picture and timing detectors, the quality model on the CPU). A stream with a lead-in
of L s is then the clean trace's samples before L, the damaged trace from L to L+6 and the
clean trace's seconds 14-22 (26 for the 32 s lead) after it, fed to the alert engine with the
default rules (or ``--config``'s) on media time. So one damaged segment serves every lead-in:
0 s (the stream starts damaged), 8 s (the picture is the content's own continuous seconds
0-22) and 32 s (as bench/degradations.py: the picture also cuts at the onset). The samples are
the real pipeline's; only the stitching at the seams is the bench's.

Damage (bench/video_quality.py's picture functions, sizes in px at 640 wide), mild / medium /
gross: ``noise`` Gaussian sigma 5 / 10 / 20 and 40 per channel; ``blur`` Gaussian sigma 1 / 2 /
4; ``box_blur`` radius 4 (gross); ``exposure`` gain 0.5 / 0.33 / 0.2; ``pixelate`` blocks of 4 /
8 / 16; ``compression`` libx264 QP 38 / 44 / 48; ``black`` and ``freeze`` (gross). With the
32 s lead also bench/degradations.py's ``blocking``, ``smear`` and ``brightness``.

Contents: the clips bikes, chaplin and bbb (../shared/media) and a slow pan over a pristine
photo. Clean controls, played whole: bbb30 and cockatoo looped, pans across two photos (there
and back), cuts between scenes every 4 s (clips, a photo, a night town, a title card), title
cards and graphics, a night town and a low-key grade (dark scenes), snow, film grain over a
photo pan (bench/contents.py synthesises what the repository has no footage of).

A damage is *detected* when a warning or critical alert has its onset in the damaged span (1 s
of slack before it); time to alert = that alert's start event minus the onset of the damage.
False alarms: warning and critical alerts elsewhere (clean parts and clean controls); info
alerts are listed apart. ``--quick``: bikes and the photo pan, gross damage, three controls
(cuts, graphics, night).
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import contents  # noqa: E402
import degradations as dg  # noqa: E402
import video_quality as vq  # noqa: E402
from engines.backends import backend_names  # noqa: E402
from engines.images import read_rgb  # noqa: E402
from engines.models import list_models  # noqa: E402

FPS = dg.FPS
SEG = (8.0, 14.0)        # the content seconds that are damaged
LEADS = (0.0, 8.0, 32.0)
TAIL = {0.0: 8.0, 8.0: 8.0, 32.0: 12.0}
CLEAN_SECONDS = 32.0
W, H = 1280, 720         # synthetic and photo contents


def _gauss(frames, rng, p):
    return [vq.blur(a, p) for a in frames]


def _box(frames, rng, p):
    from calibrate_gross import box_blur
    return [box_blur(a, p) for a in frames]


def _noise(frames, rng, p):
    return [vq.noise(a, p, rng) for a in frames]


def _exposure(frames, rng, p):
    return [vq.underexpose(a, p) for a in frames]


def _pixelate(frames, rng, p):
    return [vq.pixelate(a, p) for a in frames]


def _qp(frames, rng, p):
    return dg._encode_decode(frames, "libx264", {"preset": "veryfast", "qp": str(int(p))})


def _legacy(name):
    return lambda frames, rng, p: dg.DEGRADATIONS[name](frames, rng)


# kind -> (function, {strength: parameter}); "gross*" strengths are the targets
KINDS = {
    "noise": (_noise, {"mild": 5, "medium": 10, "gross": 20, "gross40": 40}),
    "blur": (_gauss, {"mild": 1.0, "medium": 2.0, "gross": 4.0}),
    "box_blur": (_box, {"gross": 4.0}),
    "exposure": (_exposure, {"mild": 0.5, "medium": 0.33, "gross": 0.2}),
    "pixelate": (_pixelate, {"mild": 4, "medium": 8, "gross": 16}),
    "compression": (_qp, {"mild": 38, "medium": 44, "gross": 48}),
    "black": (_legacy("black"), {"gross": None}),
    "freeze": (_legacy("freeze"), {"gross": None}),
    "blocking": (_legacy("blocking"), {"gross": None}),
    "smear": (_legacy("smear"), {"gross": None}),
    "brightness": (_legacy("brightness"), {"gross": None}),
}
EXPECTED = {"slate": ("frozen",), "night_still": ("frozen",)}  # still pictures are frozen ones
LONG_ONLY = ("blocking", "smear", "brightness")  # bench/degradations.py's, with the 32 s lead


# -------------------------------------------------------------------------------------------------
# contents: name -> frame(i) for i = 0, 1, ... at 25 fps
# -------------------------------------------------------------------------------------------------

class Clip:
    def __init__(self, path: Path):
        self.frames = dg.read_frames(path)

    def __call__(self, i: int) -> np.ndarray:
        return self.frames[i % len(self.frames)]


class Pan:
    """A slow pan across a photo, there and back (period ``seconds``)."""

    def __init__(self, photo: np.ndarray, seconds: float = 32.0, share: float = 1 / 3, fx=None):
        self.photo = photo
        self.n = max(2, round(seconds * FPS))
        h, w = photo.shape[:2]
        scale = max(1.0, H / h, W / (w * (1 - share)))
        if scale > 1.0:
            w, h = int(np.ceil(w * scale)), int(np.ceil(h * scale))
            self.photo = np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.LANCZOS))
        self.span = min(w - W, round(w * share))
        self.y = (h - H) // 2
        self.fx = fx

    def __call__(self, i: int) -> np.ndarray:
        k = i % self.n
        pos = k / (self.n / 2) if k < self.n / 2 else 2 - k / (self.n / 2)
        x = round(self.span * pos)
        a = np.ascontiguousarray(self.photo[self.y:self.y + H, x:x + W])
        return self.fx(a, i) if self.fx else a


class Cuts:
    """Cuts between other contents every ``every`` seconds."""

    def __init__(self, parts: list, every: float = 4.0):
        self.parts, self.every = parts, round(every * FPS)

    def __call__(self, i: int) -> np.ndarray:
        a = self.parts[(i // self.every) % len(self.parts)](i)
        return a if a.shape[:2] == (H, W) else np.asarray(Image.fromarray(a).resize((W, H)))


def still(img: np.ndarray, jitter: float = 0.0):
    """A still picture; ``jitter`` > 0 adds fresh sensor noise of that sigma to each frame
    (a live camera, not a frozen feed)."""
    def frame(i: int) -> np.ndarray:
        if not jitter:
            return img
        rng = np.random.default_rng(i)
        return np.clip(img + rng.normal(0, jitter, img.shape), 0, 255).astype(np.uint8)
    return frame


def on_air(fn):
    """A graphic as broadcast: the same picture with a scrolling ticker."""
    return lambda i: contents.ticker(fn(i), i)


def cycle(frames_fns: list, every: float):
    n = round(every * FPS)
    return lambda i: frames_fns[(i // n) % len(frames_fns)](i)


def photos(n: int) -> list[np.ndarray]:
    return [read_rgb(p) for p in vq.pick_photos(n=max(n, 1))[:n]]


def damaged_contents(quick: bool) -> dict:
    out = {"bikes": Clip(dg.MEDIA / dg.CLIPS["bikes"])}
    if not quick:
        out["chaplin"] = Clip(dg.MEDIA / dg.CLIPS["chaplin"])
        out["bbb"] = Clip(dg.MEDIA / dg.CLIPS["bbb"])
    out["pan"] = Pan(photos(1)[0])
    return out


def clean_controls(quick: bool, damaged: dict) -> dict:
    """name -> (frame function or a media path to play looped, seconds)."""
    ph = photos(3)
    night = still(contents.night(W, H, 0), jitter=1.0)
    title = still(contents.title_card(W, H, 0))
    out = {
        # moving pictures only (still ones are frozen pictures: slate, night_still)
        "cuts": (Cuts([damaged["bikes"], Pan(ph[0]), Pan(contents.night(2 * W, H, 2), share=0.4),
                       on_air(title), damaged.get("bbb", damaged["bikes"]),
                       Pan(contents.snow(2 * W, H, 1), share=0.4)]), 24.0),
        "graphics": (on_air(cycle([still(contents.title_card(W, H, s)) for s in range(3)]
                                  + [still(contents.graphic(W, H, s)) for s in range(2)], 4.0)), 20.0),
        "night": (Pan(contents.night(2 * W, H, 1), seconds=16.0, share=0.4), 16.0),
        # a still card and a still night shot (encoded, their sensor noise gone): frozen by
        # FFmpeg freezedetect's definition (listed apart)
        "slate": (still(contents.title_card(W, H, 1)), 8.0),
        "night_still": (night, 8.0),
    }
    if not quick:
        out.update({
            "pan2": (Pan(ph[1 % len(ph)], seconds=20.0), 20.0),
            "pan3": (Pan(ph[2 % len(ph)], seconds=20.0), 20.0),
            "snow": (Pan(contents.snow(2 * W, H, 0), seconds=16.0, share=0.4), 16.0),
            "grain": (Pan(ph[0], fx=lambda a, i: contents.film_grain(a, 4.0, seed=i)), 16.0),
            "lowkey": (Pan(contents.low_key(ph[0])), 16.0),
            # past its 30 s end: the loop back to its fade from black and title sky
            "bbb30": (dg.MEDIA / dg.CLEAN_CLIPS["bbb30"], 36.0),
            "cockatoo": (dg.MEDIA / dg.CLEAN_CLIPS["cockatoo"], 20.0),
        })
    return out


# -------------------------------------------------------------------------------------------------
# building and measuring
# -------------------------------------------------------------------------------------------------

def encode(frames, out: Path) -> None:
    import av
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(out), "w") as o:
        vs = o.add_stream("libx264", rate=Fraction(FPS), options={"preset": "veryfast", "crf": "16"})
        vs.width, vs.height, vs.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        for a in _chain(first, frames):
            o.mux(vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a[:h - h % 2, :w - w % 2]), format="rgb24")))
        o.mux(vs.encode())


def _chain(first, rest):
    yield first
    yield from rest


def measure_file(path: Path, engine, rate: float, overrides: dict) -> list[dict]:
    """Per-sample trace of one file (vqmon report's pipeline)."""
    cfg = dg.stream_config(path.stem, str(path), rate, overrides)
    trace, _ = dg.measure_media_time(cfg, engine)
    return trace


def build_and_measure(args, overrides: dict) -> dict:
    from engines.engine import QualityEngine
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vqmon-matrix-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        engine = QualityEngine(model=args.model, backend=args.backend, max_batch=8)
        damaged = damaged_contents(args.quick)
        traces: dict[str, list[dict]] = {}
        segments: list[dict] = []

        def run(name: str, make) -> list[dict]:
            path = work / f"{name}.mp4"
            if not path.exists():
                encode(make(), path)
            t0 = time.monotonic()
            tr = measure_file(path, engine, args.rate, overrides)
            print(f"{name:32s} {len(tr):4d} samples {time.monotonic() - t0:5.1f} s", flush=True)
            return tr

        n_clean = round(CLEAN_SECONDS * FPS)
        i0, i1 = round(SEG[0] * FPS), round(SEG[1] * FPS)
        for ci, (cname, fn) in enumerate(damaged.items()):
            traces[f"clean:{cname}"] = run(f"clean-{cname}", lambda fn=fn: (fn(i) for i in range(n_clean)))
            for ki, (kind, (damage, strengths)) in enumerate(KINDS.items()):
                if kind in LONG_ONLY and (args.quick or cname == "pan"):
                    continue
                for strength, param in strengths.items():
                    if not strength.startswith("gross") and (args.quick or cname not in ("bikes", "pan")):
                        continue
                    rng = np.random.default_rng(1000 * ci + 10 * ki + len(strength))

                    def make(fn=fn, damage=damage, param=param, rng=rng):
                        return damage([fn(i) for i in range(i0, i1)], rng, param)
                    name = f"{cname}-{kind}-{strength}"
                    traces[name] = run(name, make)
                    segments.append({"content": cname, "kind": kind, "strength": strength, "trace": name})
        controls = {}
        for cname, (src, seconds) in clean_controls(args.quick, damaged).items():
            if isinstance(src, Path):
                frames = dg.read_frames(src)
                make = (lambda frames=frames, seconds=seconds:
                        (frames[i % len(frames)] for i in range(round(seconds * FPS))))
            else:
                make = lambda src=src, seconds=seconds: (src(i) for i in range(round(seconds * FPS)))  # noqa: E731
            traces[f"control:{cname}"] = run(f"control-{cname}", make)
            controls[cname] = f"control:{cname}"
    info = {"seconds": round(time.monotonic() - t_start, 1), "model": args.model,
            "backend": engine.info.get("backend_detail"), "rate": args.rate, "quick": args.quick}
    return {"traces": traces, "segments": segments, "controls": controls, "run": info}


# -------------------------------------------------------------------------------------------------
# streams from segments, rules, summary
# -------------------------------------------------------------------------------------------------

def splice(clean: list[dict], seg: list[dict], lead: float, tail: float) -> list[dict]:
    """lead s of the clean trace, the damaged segment, then the clean trace from SEG[1] on."""
    length = SEG[1] - SEG[0]
    out = [s for s in clean if s["t"] < lead - 1e-6]
    out += [dict(s, t=s["t"] + lead) for s in seg if s["t"] < length - 1e-6]
    out += [dict(s, t=s["t"] - SEG[1] + lead + length) for s in clean
            if SEG[1] - 1e-6 <= s["t"] < SEG[1] + tail - 1e-6]
    return out


def evaluate(data: dict, rules) -> dict:
    streams = []
    for seg in data["segments"]:
        for lead in LEADS:
            if seg["kind"] in LONG_ONLY and lead != 32.0:
                continue
            if not seg["strength"].startswith("gross") and lead != 8.0:
                continue
            trace = splice(data["traces"][f"clean:{seg['content']}"], data["traces"][seg["trace"]], lead, TAIL[lead])
            res = dg.StreamResult(f"{seg['trace']}@{lead:g}", seg["content"], seg["kind"],
                                  (lead, lead + SEG[1] - SEG[0]), trace[-1]["t"] + 0.5, trace)
            dg.apply_rules(res, rules)
            streams.append((seg, lead, res))
    controls = {}
    for cname, key in data["controls"].items():
        tr = data["traces"][key]
        res = dg.StreamResult(cname, cname, None, None, tr[-1]["t"] + 0.5, tr)
        dg.apply_rules(res, rules)
        controls[cname] = res
    for cname in sorted({s["content"] for s in data["segments"]}):
        tr = data["traces"][f"clean:{cname}"]
        res = dg.StreamResult(f"clean-{cname}", cname, None, None, tr[-1]["t"] + 0.5, tr)
        dg.apply_rules(res, rules)
        controls[f"clean-{cname}"] = res
    return summarize(streams, controls)


def summarize(streams, controls) -> dict:
    rows: dict[tuple, dict] = {}
    false_alarms, info_events = [], []
    for seg, lead, res in streams:
        start, end = res.span
        hit = [a for a in res.alerts if start - dg.ONSET_SLACK <= a.onset <= end and a.severity != "info"]
        other = [a for a in res.alerts if a not in hit]
        false_alarms += [f"{res.name}: {dg._label(a)}" for a in other if a.severity != "info"
                         and not start - dg.ONSET_SLACK <= a.onset <= end]
        info_events += [f"{res.name}: {dg._label(a)}" for a in other if a.severity == "info"
                        and not start - dg.ONSET_SLACK <= a.onset <= end]
        row = rows.setdefault((seg["kind"], seg["strength"], lead),
                              {"streams": 0, "detected": 0, "detected_any": 0, "latencies": [],
                               "conditions": {}, "missed": []})
        row["streams"] += 1
        # as bench/degradations.py counts: an alert of any severity, info included
        row["detected_any"] += any(start - dg.ONSET_SLACK <= a.onset <= end for a in res.alerts)
        first = min(hit, key=lambda a: a.announced) if hit else None
        if first is None:
            row["missed"].append(seg["content"])
        else:
            row["detected"] += 1
            row["latencies"].append(round(first.announced - start, 2))
        for c in sorted({a.condition for a in hit}):
            row["conditions"][c] = row["conditions"].get(c, 0) + 1
    table = []
    for (kind, strength, lead), r in rows.items():
        lat = r.pop("latencies")
        table.append({"kind": kind, "strength": strength, "lead": lead, **r,
                      "median_latency": statistics.median(lat) if lat else None,
                      "max_latency": max(lat) if lat else None})
    ctrl = {name: {"seconds": round(res.media_seconds, 1),
                   "false_alarms": [dg._label(a) for a in res.alerts if a.severity != "info"
                                    and a.condition not in EXPECTED.get(name, ())],
                   "expected": [dg._label(a) for a in res.alerts if a.condition in EXPECTED.get(name, ())],
                   "info": [dg._label(a) for a in res.alerts if a.severity == "info"]}
            for name, res in controls.items()}
    return {"table": table, "false_alarms_clean_parts": false_alarms, "info_clean_parts": info_events,
            "controls": ctrl}


def print_tables(summary: dict) -> None:
    print("\n| kind | strength | lead s | detected (warning, critical) | any severity | median / max onset -> alert s "
          "| conditions | missed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(summary["table"], key=lambda r: (r["kind"], r["strength"], r["lead"])):
        lat = "-" if r["median_latency"] is None else f"{r['median_latency']:.1f} / {r['max_latency']:.1f}"
        conds = ", ".join(f"{c} ({n})" for c, n in sorted(r["conditions"].items(), key=lambda x: -x[1])) or "-"
        print(f"| {r['kind']} | {r['strength']} | {r['lead']:g} | {r['detected']}/{r['streams']} | "
              f"{r.get('detected_any', '-')}/{r['streams']} | {lat} | "
              f"{conds} | {', '.join(r['missed']) or '-'} |")
    gross = [r for r in summary["table"] if r["strength"].startswith("gross") and r["lead"] in (0.0, 8.0)
             and r["kind"] not in LONG_ONLY]
    n, d = sum(r["streams"] for r in gross), sum(r["detected"] for r in gross)
    lats = [r["median_latency"] for r in gross if r["median_latency"] is not None]
    print(f"\ngross damage, 0 and 8 s leads: {d}/{n} detected; per-row medians of onset -> alert "
          f"{min(lats, default=0):.1f}-{max(lats, default=0):.1f} s")
    fa = summary["false_alarms_clean_parts"]
    print(f"false alarms on the clean parts of the streams: {len(fa)}" + (": " + "; ".join(fa) if fa else ""))
    print("clean controls (seconds, warnings/criticals, info):")
    for name, c in summary["controls"].items():
        print(f"  {name}: {c['seconds']} s, {len(c['false_alarms'])} false alarm(s)"
              + (": " + ", ".join(c["false_alarms"]) if c["false_alarms"] else "")
              + (f"; by definition: {', '.join(c['expected'])}" if c.get("expected") else "")
              + (f"; info: {', '.join(c['info'])}" if c["info"] else ""))
    if summary["info_clean_parts"]:
        print(f"info events on clean parts: {len(summary['info_clean_parts'])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="bikes and one photo pan, gross damage, fewer controls")
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--model", default="bifusion", choices=list_models())
    ap.add_argument("--backend", default="cpu", choices=backend_names())
    ap.add_argument("--config", help="vqmon YAML whose 'defaults' (alerts, detectors) apply")
    ap.add_argument("--keep", help="build the files in this folder and keep them (reused when present)")
    ap.add_argument("--json", help="write the traces and results here")
    ap.add_argument("--replay", metavar="JSON", help="rules only, on the traces of a previous --json run")
    args = ap.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import yaml
    overrides = {}
    if args.config:
        overrides = (yaml.safe_load(Path(args.config).read_text()) or {}).get("defaults") or {}
    if args.replay:
        data = json.loads(Path(args.replay).read_text())
        data["run"] = dict(data["run"], replayed_from=args.replay)
    else:
        data = build_and_measure(args, overrides)
    rules = dg.stream_config("matrix", "replay", args.rate, overrides).alert_rules()
    summary = evaluate(data, rules)
    print_tables(summary)
    if not args.replay:
        print(f"\ntotal {data['run']['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({**data, "summary": summary,
                                               "date": datetime.datetime.now().isoformat(timespec="seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
