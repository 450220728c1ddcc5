"""The CPU recipe: the whole network fine-tuned on native-scale views of human-rated images.

``python -m engines.train.native --model bifusion --view fragments --folds 5 --final``

Every model (``bifusion``, ``glint`` and the ``plain`` Lite0 baseline beside them) is trained the
same way, end to end, backbone included (docs/training.md §9):

- views of livec-dev images at their native scale (``engines.views``: random fragment draws or
  random crops, horizontal flips), a new draw every step;
- backbone BatchNorm frozen (eval mode, affine not trained); AdamW (weight decay 1e-4), backbone
  5e-5, the rest 1e-3 (``--lr-head``), one-cycle schedule with 15 % warm-up;
- loss: L1 on MOS in units of the set's standard deviation + (1 - PLCC of the batch), plus the
  model's auxiliary loss (bifusion's MoE balance);
- test: the mean score over ``--test-draws`` seeded views per image.

Folds are ``engines.labelled.kfold_indices`` (the model card's). A checkpoint is written after
every epoch and ``--resume`` continues a run from it; progress bars show the epochs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import EfficientNetLite0, load_pretrained_backbone, normalize
from ..images import read_rgb
from ..labelled import kfold_indices, load_labelled_csv
from ..metrics import compute_metrics
from ..models import list_models
from ..views import InputView
from .trainer import find_backbone, pairwise_rank_loss, param_groups, plcc_loss, set_train_mode

log = logging.getLogger("engines.train.native")
DEFAULT_CSV = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "livec-dev" / "labels.csv"


class PlainLite0(nn.Module):
    """The baseline: Lite0 with mean+std pooling of its taps and a 2-layer MLP (no map)."""

    name = "plain"
    TAPS = ("s4", "s8", "s16", "s32", "head")

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.backbone = load_pretrained_backbone(drop_classifier=True) if pretrained else EfficientNetLite0()
        dim = 2 * (24 + 40 + 112 + 320 + 1280)
        self.mlp = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        feats = self.backbone.forward_features(x, with_head=True)
        pooled = []
        for k in self.TAPS:
            f = feats[k].flatten(2)
            pooled += [f.mean(-1), f.std(-1)]
        # 0-100 like the real models, centred on the middle of the scale
        return 50.0 + 20.0 * self.mlp(torch.cat(pooled, 1)).squeeze(1), None


def build_model(name: str, init: str) -> nn.Module:
    """``init``: ``shipped`` (the shipped weights), ``imagenet`` (ImageNet backbone, new heads),
    or a weights file."""
    if name == "plain":
        return PlainLite0(pretrained=True)
    from ..models import create_model
    weights = {"shipped": "default", "imagenet": None}.get(init, init)
    return create_model(name, weights=weights)


def make_batch(images: list[np.ndarray], idx: np.ndarray, view: InputView, rng: np.random.Generator,
               flip: bool = True) -> torch.Tensor:
    out = []
    for i in idx:
        v = view(images[i], draw=int(rng.integers(2**31)))
        if flip and rng.random() < 0.5:
            v = v[:, ::-1]
        out.append(torch.from_numpy(np.ascontiguousarray(v)))
    x = torch.stack(out).permute(0, 3, 1, 2).float().div_(255.0)
    return normalize(x)


@torch.no_grad()
def predict(model: nn.Module, images: list[np.ndarray], idx: np.ndarray, view: InputView,
            draws: int, batch: int = 32, seed: int = 1234) -> np.ndarray:
    """Mean score over ``draws`` seeded views of each image (the same draws for every model)."""
    model.eval()
    scores = np.zeros((len(idx), draws))
    for d in range(draws):
        for a in range(0, len(idx), batch):
            part = idx[a:a + batch]
            x = torch.stack([torch.from_numpy(np.ascontiguousarray(view(images[i], draw=seed + 7919 * d + int(i))))
                             for i in part]).permute(0, 3, 1, 2).float().div_(255.0)
            scores[a:a + len(part), d] = model(normalize(x))[0].float().numpy()
    return scores.mean(1)


class SyntheticRanking:
    """Level ranking on synthetic distortions of pristine photos (``--syn-rank``).

    The pack's pristine images minus the synthetic hold-out (``data.synthetic_holdout``, the
    images ``bench/synthetic_eval.py`` tests on) are distorted by ``types_per_image`` seeded
    types at 5 levels. A batch takes ``images`` of them, each with ``types`` of its chains and
    its clean version, all cut by the same view draw (only the distortion differs). Pairs: the
    clean image above every distorted one, a lower level above a higher one of the same type,
    and across types when the levels are at least ``cross_gap`` apart.
    """

    def __init__(self, pack: str | Path, types_per_image: int, seed: int = 0, workers: int | None = None,
                 images: int = 1, types: int = 3, cross_gap: int = 2, cache: bool = False):
        from . import data as D

        p = D.load_pack(pack, workers=workers)
        hold = set(D.synthetic_holdout(len(p.pristine), seed).tolist())
        keep = np.array([i for i in range(len(p.pristine)) if i not in hold])
        cache = Path(pack) / f"native-syn-t{types_per_image}-s{seed}.npz" if cache else None
        if cache is not None and cache.is_file():  # the same seeded set: made once, read by every run
            z = np.load(cache)
            self.syn = D.SyntheticSet(images=z["images"], src=z["src"], dtype=z["dtype"], level=z["level"],
                                      quality=z["quality"], types=list(z["types"]), skipped={},
                                      label_source=D.LABEL_SOURCE)
        else:
            self.syn = D.generate_synthetic(p.pristine[keep], types_per_image=types_per_image, seed=seed,
                                            workers=workers, progress=False)
            if cache is not None:
                np.savez(cache, images=self.syn.images, src=self.syn.src, dtype=self.syn.dtype,
                         level=self.syn.level, quality=self.syn.quality, types=np.array(self.syn.types))
        self.images, self.types, self.cross_gap = images, types, cross_gap
        self.rows_of = {int(s): np.flatnonzero(self.syn.src == s) for s in np.unique(self.syn.src)}
        log.info("synthetic ranking: %d pristine images x %d types x 5 levels (%.0f s)",
                 len(keep), types_per_image, self.syn.seconds)

    def batch(self, view: InputView, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        syn, picked = self.syn, []
        for s in rng.choice(list(self.rows_of), size=self.images, replace=False):
            rows = self.rows_of[int(s)]
            kinds = np.unique(syn.dtype[rows][syn.dtype[rows] >= 0])
            chosen = rng.choice(kinds, size=min(self.types, kinds.size), replace=False)
            picked.append(rows[(syn.dtype[rows] == -1) | np.isin(syn.dtype[rows], chosen)])
        views = []
        for rows in picked:
            draw, flip = int(rng.integers(2**31)), rng.random() < 0.5
            for r in rows:
                v = view(syn.images[r], draw=draw)
                views.append(np.ascontiguousarray(v[:, ::-1] if flip else v))
        rows = np.concatenate(picked)
        src, typ, lvl = (torch.from_numpy(a[rows]) for a in (syn.src, syn.dtype, syn.level))
        lower = lvl[:, None] < lvl[None, :]
        comparable = (typ[:, None] == typ[None, :]) | (lvl[:, None] == 0) \
            | ((lvl[None, :] - lvl[:, None]) >= self.cross_gap)
        better = (src[:, None] == src[None, :]) & lower & comparable
        x = torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).float().div_(255.0)
        return normalize(x), better


def train(model: nn.Module, images: list[np.ndarray], mos: np.ndarray, idx: np.ndarray, view: InputView,
          args: argparse.Namespace, ckpt: Path | None = None, desc: str = "",
          ranking: SyntheticRanking | None = None) -> list[dict]:
    """Fine-tune ``model`` on ``images[idx]`` (plus ``ranking`` batches); returns the loss log."""
    from tqdm import tqdm

    scale = float(mos[idx].std())
    steps_per_epoch = max(1, len(idx) // args.batch)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(param_groups(model, args.lr_head, args.lr_backbone, args.weight_decay))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=0.15)
    for m in find_backbone(model).modules():  # BatchNorm frozen: stats and affine
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters():
                p.requires_grad_(False)
    start, history = 0, []
    if ckpt is not None and args.resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, history = int(state["epoch"]), json.loads(state["history"])
        log.info("resumed %s at epoch %d", desc, start)
    for epoch in range(start, args.epochs):
        rng = np.random.default_rng(args.seed * 1000 + epoch)
        set_train_mode(model)
        order = rng.permutation(idx)
        losses, t0 = [], time.monotonic()
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{args.epochs}",
                   disable=args.no_progress, leave=False, file=sys.stderr)
        for s in bar:
            b = order[s * args.batch:(s + 1) * args.batch]
            target = torch.from_numpy(mos[b]).float()
            x = make_batch(images, b, view, rng)
            if ranking is not None:  # one forward for both: BatchNorm is frozen, so no mixing
                xs, better = ranking.batch(view, rng)
                x = torch.cat([x, xs])
            score, _ = model(x)
            score, syn_score = score[:len(b)], score[len(b):]
            loss = (score - target).abs().mean() / scale + plcc_loss(score, target) * 2.0
            if ranking is not None:
                loss = loss + args.syn_rank * pairwise_rank_loss(syn_score, better, args.syn_margin / 100.0)
            aux = getattr(model, "aux_loss", None)
            if aux is not None:
                loss = loss + args.w_aux * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "s": time.monotonic() - t0})
        log.info("%s epoch %d: loss %.4f (%.0f s)", desc, epoch + 1, history[-1]["loss"], history[-1]["s"])
        if ckpt is not None:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "epoch": epoch + 1, "history": json.dumps(history)}, ckpt)
    return history


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engines.train.native", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help=f"{', '.join(list_models())} or plain")
    p.add_argument("--init", default="shipped", help="shipped, imagenet, or a weights file")
    p.add_argument("--csv", default=str(DEFAULT_CSV), help="labelled set (image,mos CSV)")
    p.add_argument("--view", default="fragments", choices=("fragments", "crops"))
    p.add_argument("--grid", type=int, default=7)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="crop side (crops view)")
    p.add_argument("--serve-size", type=int, default=None,
                   help="--final weights record the whole frame resized to this side as their "
                        "view (what they are served with), not the training view; crops cannot "
                        "be served, and 512 is about the native scale of livec-dev's 500-px photos")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--only-folds", default=None, help="comma-separated fold numbers to run (default all)")
    p.add_argument("--final", action="store_true", help="train on the whole set and save weights")
    p.add_argument("--weights-out", default=None, help="where --final saves (model weights file)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr-head", type=float, default=1e-3)
    p.add_argument("--lr-backbone", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--w-aux", type=float, default=0.01, help="weight of the model's auxiliary loss")
    p.add_argument("--test-draws", type=int, default=5)
    p.add_argument("--syn-rank", type=float, default=0.0,
                   help="weight of the synthetic level ranking (0: none; needs --pack)")
    p.add_argument("--syn-margin", type=float, default=3.0, help="ranking margin, score points")
    p.add_argument("--syn-types", type=int, default=8, help="distortion types per pristine image")
    p.add_argument("--syn-batch-types", type=int, default=3, help="chains per ranking batch")
    p.add_argument("--pack", default=".cache/trainpack", help="training pack (pristine photos)")
    p.add_argument("--syn-cache", action="store_true",
                   help="keep the synthetic set beside the pack and reuse it (it takes minutes to make)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (smoke tests)")
    p.add_argument("--out", required=True, help="results folder (results JSON, checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    view = InputView(mode=args.view, grid=args.grid, patch=args.patch, size=args.size)
    data = load_labelled_csv(args.csv)
    n = len(data) if args.limit is None else min(args.limit, len(data))
    images = [read_rgb(p) for p in data.paths[:n]]
    mos = np.asarray(data.mos[:n], dtype=np.float64)
    results_path = out / f"{args.model}_results.json"
    results = json.loads(results_path.read_text()) if args.resume and results_path.exists() else {}
    results.update({"model": args.model, "init": args.init, "view": view.to_meta(), "epochs": args.epochs,
                    "test_draws": args.test_draws, "seed": args.seed, "n_images": n,
                    "argv": sys.argv[1:] if argv is None else argv})
    per_fold = {f["fold"]: f for f in results.get("per_fold", [])}
    ranking = (SyntheticRanking(args.pack, args.syn_types, args.seed, types=args.syn_batch_types,
                                cache=args.syn_cache)
               if args.syn_rank > 0 else None)
    results["syn_rank"] = {"weight": args.syn_rank, "margin": args.syn_margin, "types": args.syn_types,
                           "batch_types": args.syn_batch_types} if ranking else None
    wanted = (range(args.folds) if args.only_folds is None
              else [int(x) for x in args.only_folds.split(",")]) if args.folds >= 2 else []
    splits = kfold_indices(n, args.folds) if args.folds >= 2 else []
    for i in wanted:
        if i in per_fold:
            continue
        tr, te = splits[i]
        torch.manual_seed(args.seed + i)
        model = build_model(args.model, args.init)
        t0 = time.monotonic()
        hist = train(model, images, mos, tr, view, args, out / f"{args.model}_fold{i}.ckpt", f"fold {i}", ranking)
        pred = predict(model, images, te, view, args.test_draws)
        m = compute_metrics(pred, mos[te])
        per_fold[i] = {"fold": i, "srocc": m["srocc"], "plcc": m["plcc"], "n": int(te.size),
                       "train_s": time.monotonic() - t0, "losses": hist, "pred": pred.round(3).tolist(),
                       "test_idx": te.tolist()}
        log.info("fold %d: SROCC %.4f PLCC %.4f", i, m["srocc"], m["plcc"])
        results["per_fold"] = [per_fold[k] for k in sorted(per_fold)]
        if per_fold:
            results["median"] = {k: float(np.median([f[k] for f in per_fold.values()])) for k in ("srocc", "plcc")}
        results_path.write_text(json.dumps(results, indent=1))
    if args.final:
        torch.manual_seed(args.seed)
        model = build_model(args.model, args.init)
        t0 = time.monotonic()
        hist = train(model, images, mos, np.arange(n), view, args, out / f"{args.model}_final.ckpt", "final",
                     ranking)
        results["final"] = {"train_s": time.monotonic() - t0, "losses": hist}
        if args.model != "plain":
            from ..weights import save_weights
            served = InputView("resize", size=args.serve_size) if args.serve_size else view
            model.input_size, model.input_view = served.side, served
            dest = Path(args.weights_out or out / f"{args.model}.pt")
            save_weights(model, dest, meta={"recipe": "engines.train.native", "epochs": args.epochs,
                                            "init": args.init, "syn_rank": results["syn_rank"],
                                            "trained_view": view.to_meta(),
                                            "trained_on": f"livec-dev ({n} images)"})
            results["final"]["weights"] = str(dest)
        results_path.write_text(json.dumps(results, indent=1))
    if "median" in results:
        log.info("%s %s: median SROCC %.4f PLCC %.4f over %d folds", args.model, view.mode,
                 results["median"]["srocc"], results["median"]["plcc"], len(per_fold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
