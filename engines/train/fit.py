"""Train, cross-validate and ship a quality model: ``python -m engines.train.fit --model NAME``.

One command runs the whole recipe of ``docs/training.md`` on a GPU (``--device cuda``) or, slowly,
on CPU (``--tiny`` is the smoke-test size):

1. load the pack (``python -m engines.train.data pack``) onto the device as uint8;
2. synthesise the pre-training set from its pristine images (all CPU cores), holding out ~15 %
   of the pristine images for the synthetic test;
3. ``--frozen-baseline``: frozen Lite0 features + ridge on the same folds (the floor);
4. stage 1: pre-train once on the synthetic set (bifusion: pseudo-MOS regression + ranking +
   SupCon on the distortion embedding + MoE balance; glint: semantic-aligned quality transfer
   labels + ranking);
5. ``--folds K``: K-fold cross-validation of stage 2 (fine-tuning on livec-dev MOS), every fold
   starting from the same stage-1 weights;
6. ``--final``: stage 2 on all of livec-dev, synthetic test, weights saved with their recipe.

``--frozen-backbone`` is the CPU recipe: the ImageNet backbone stays frozen and runs once per
image (livec-dev also mirrored, for the flip augmentation); stages 1-2 train only the layers
after it, on those cached maps.

Everything it measures goes to ``--out`` (``NAME_results.json``, ``NAME_losses.jsonl``, and a
copy of the weights), and a summary is printed.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import logging
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..models import list_models

log = logging.getLogger("engines.train.fit")

REPO = Path(__file__).resolve().parents[2]
OUT_FILE_LIMIT = 15 * 2**20  # files fetched back from a device run: 16 MiB each at most


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engines.train.fit", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, choices=list_models())
    p.add_argument("--pack", default=".cache/trainpack", help="training pack folder")
    p.add_argument("--out", default=None, help="results folder (default .cache/runs/NAME-DATE)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5, help="K-fold CV on livec-dev (0: none)")
    p.add_argument("--final", action="store_true", help="train on all livec-dev and save weights")
    p.add_argument("--weights-out", default=None,
                   help="where --final saves (default engines/weights/NAME.pt; with --tiny: "
                        "the --out folder, never the shipped weights)")
    p.add_argument("--frozen-baseline", action="store_true",
                   help="also frozen Lite0 features + ridge on the same folds")
    p.add_argument("--tiny", action="store_true",
                   help="smoke-test sizes (CPU): 16 livec + 6 pristine images at 64 px, 1-3 epochs, 2 folds")
    p.add_argument("--size", type=int, default=None, help="input size (default: the pack's)")
    p.add_argument("--limit-livec", type=int, default=None)
    p.add_argument("--limit-pristine", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="synthesis processes (default: all cores)")
    p.add_argument("--frozen-backbone", action="store_true",
                   help="the CPU recipe: keep the ImageNet backbone frozen, run it once per image "
                        "(livec-dev mirrored too) and train only the layers after it on the cached maps")
    g = p.add_argument_group("synthetic pre-training data")
    g.add_argument("--syn-types", type=int, default=16,
                   help="distortion types per pristine image (each at 5 levels)")
    g.add_argument("--syn-holdout", type=float, default=0.15, help="share of pristine images held out")
    g.add_argument("--glint-topk", type=int, default=1,
                   help="glint transfer: anchor = mean MOS of the k most similar livec images")
    g = p.add_argument_group("stage 1 (synthetic pre-training)")
    g.add_argument("--s1-epochs", type=float, default=2.0, help="0 skips stage 1")
    g.add_argument("--s1-types-per-batch", type=int, default=4)
    g.add_argument("--s1-images-per-type", type=int, default=3)
    g.add_argument("--s1-lr-head", type=float, default=5e-4)
    g.add_argument("--s1-lr-backbone", type=float, default=5e-5)
    g.add_argument("--s1-w-con", type=float, default=0.1, help="SupCon weight (bifusion)")
    g = p.add_argument_group("stage 2 (fine-tuning on MOS)")
    g.add_argument("--s2-epochs", type=int, default=30)
    g.add_argument("--s2-batch", type=int, default=32)
    g.add_argument("--s2-lr-head", type=float, default=3e-4)
    g.add_argument("--s2-lr-backbone", type=float, default=3e-5)
    g.add_argument("--s2-w-plcc", type=float, default=1.0)
    g.add_argument("--s2-w-rank", type=float, default=1.0)
    g.add_argument("--max-shift", type=int, default=8, help="random shift augmentation, px")
    g.add_argument("--eval-every", type=int, default=5,
                   help="CV: report validation metrics every N epochs (reporting only)")
    g = p.add_argument_group("runtime")
    g.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    g.add_argument("--no-channels-last", action="store_true")
    g.add_argument("--eval-batch", type=int, default=64)
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--budget-s", type=float, default=480.0,
                   help="time budget of the whole run: stage 1 gets at most 30%% of it, and stage-2 "
                        "epochs are lowered (for every fold alike) if the measured step time says "
                        "the planned ones would not fit")
    g.add_argument("--no-budget", action="store_true", help="never shorten the plan to fit --budget-s")
    return p


TINY = dict(size=64, limit_livec=16, limit_pristine=6, syn_types=2, s1_epochs=1.0, s1_types_per_batch=2,
            s1_images_per_type=2, s2_epochs=3, s2_batch=8, folds=2, eval_batch=16, max_shift=4,
            eval_every=0)


def apply_tiny(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``--tiny`` replaces every size option still at its default."""
    for k, v in TINY.items():
        if getattr(args, k) == parser.get_default(k):
            setattr(args, k, v)


# =========================================================================== helpers

def _metrics(pred, mos) -> dict:
    """``engines.metrics.compute_metrics`` (SROCC, PLCC after the 5-parameter logistic, ...);
    plain Spearman/Pearson where that cannot run (tiny sets)."""
    import warnings

    pred, mos = np.asarray(pred, np.float64), np.asarray(mos, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from ..metrics import compute_metrics

            m = compute_metrics(pred, mos)
            return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in m.items()}
        except (ImportError, TypeError, ValueError, RuntimeError):
            from scipy import stats

            ok = len(pred) >= 3 and np.ptp(pred) > 0 and np.ptp(mos) > 0
            r = float(stats.pearsonr(pred, mos).statistic) if ok else math.nan
            return {"n": int(len(pred)), "srocc": float(stats.spearmanr(pred, mos).statistic) if ok else math.nan,
                    "plcc": r, "krocc": float(stats.kendalltau(pred, mos).statistic) if ok else math.nan,
                    "rmse": math.nan, "plcc_raw": r, "fit": None}


def _kfold(n: int, k: int, seed: int):
    try:
        from ..labelled import kfold_indices
    except ImportError:  # pragma: no cover
        perm = np.random.default_rng(seed).permutation(n)
        chunks = np.array_split(perm, k)
        return [(np.sort(np.concatenate([c for j, c in enumerate(chunks) if j != i])), np.sort(chunks[i]))
                for i in range(k)]
    return kfold_indices(n, k, seed)


def _summary(rows: list[dict], keys=("srocc", "plcc", "krocc", "rmse", "plcc_raw")) -> dict:
    out = {}
    for stat, fn in (("median", np.median), ("mean", np.mean)):
        out[stat] = {k: float(fn([r[k] for r in rows])) for k in keys if rows and k in rows[0]}
    return out


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _say(msg: str) -> None:
    print(msg, flush=True)


class Clock:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}

    def lap(self, name: str, since: float) -> float:
        dt = time.perf_counter() - since
        self.marks[name] = round(self.marks.get(name, 0.0) + dt, 2)
        return dt

    def total(self) -> float:
        return time.perf_counter() - self.t0


# =========================================================================== the run

def run(args: argparse.Namespace) -> dict:
    import torch

    from .. import create_model
    from . import data as D
    from . import trainer as T

    clock = Clock()
    name = args.model
    out = Path(args.out or REPO / ".cache" / "runs" / f"{name}-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    loss_path = out / f"{name}_losses.jsonl"
    if loss_path.exists():
        loss_path.unlink()
    losslog = T.LossLog(loss_path)
    results: dict = {"model": name, "seed": args.seed, "args": vars(args).copy(),
                     "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                     "torch": str(torch.__version__), "python": platform.python_version(),
                     "commit": _git_commit(), "timings_s": clock.marks}

    # ---------------------------------------------------------------- data
    t = time.perf_counter()
    pack = D.load_pack(args.pack, size=args.size, limit_livec=args.limit_livec,
                       limit_pristine=args.limit_pristine, workers=args.workers)
    clock.lap("load_pack", t)
    n_livec, n_prist = len(pack.mos), len(pack.pristine)
    results["pack"] = {"path": str(args.pack), "size": pack.size, "livec": n_livec, "pristine": n_prist,
                       "bytes": pack.manifest.get("bytes"), "created": pack.manifest.get("created")}
    _say(f"[data] pack {args.pack}: {n_livec} livec + {n_prist} pristine at {pack.size}px "
         f"({clock.marks['load_pack']:.1f} s)")

    hold_src = D.synthetic_holdout(n_prist, args.seed, args.syn_holdout)
    n_hold = len(hold_src)
    syn = None
    if args.s1_epochs > 0:
        t = time.perf_counter()
        syn = D.generate_synthetic(pack.pristine, types_per_image=args.syn_types, seed=args.seed,
                                   workers=args.workers, progress=not args.no_progress)
        clock.lap("synthesis", t)
        if syn.skipped:
            _say("[data] distortions skipped: " + "; ".join(f"{k} ({v})" for k, v in syn.skipped.items()))
        _say(f"[data] synthetic set: {len(syn)} images ({n_prist} pristine x "
             f"{min(args.syn_types, len(syn.types))} types x 5 "
             f"levels + originals) from {len(syn.types)} usable types in {syn.seconds:.1f} s "
             f"on {args.workers or D.default_workers()} processes; labels: {syn.label_source}")
        results["synthetic"] = {"images": len(syn), "types": syn.types, "skipped": syn.skipped,
                                "types_per_image": args.syn_types, "label_source": syn.label_source,
                                "holdout_images": int(n_hold), "seconds": round(syn.seconds, 2)}

    # ---------------------------------------------------------------- device
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        results["gpu"] = torch.cuda.get_device_name(device)
    rt = T.Runtime(device=device, amp=cuda and not args.no_amp,
                   channels_last=cuda and not args.no_channels_last, eval_batch=args.eval_batch,
                   show_progress=not args.no_progress)
    results["device"] = str(device)
    t = time.perf_counter()
    livec_bank = T.ImageBank(pack.livec, device)
    syn_bank = T.ImageBank(syn.images, device) if syn is not None else None
    if syn is not None:
        syn.images = None  # the device copy is the one used from here on
    clock.lap("upload", t)
    mos = pack.mos.astype(np.float32)
    folds = _kfold(n_livec, args.folds, args.seed) if args.folds and args.folds >= 2 else []

    # ---------------------------------------------------------------- frozen baseline
    if args.frozen_baseline and folds:
        t = time.perf_counter()
        results["baseline"] = frozen_baseline(livec_bank, mos, folds, rt)
        clock.lap("baseline", t)
        b = results["baseline"]["summary"]["median"]
        _say(f"[baseline] frozen Lite0 + ridge: median SROCC {b['srocc']:.4f} PLCC {b['plcc']:.4f} "
             f"({clock.marks['baseline']:.1f} s)")

    # ---------------------------------------------------------------- stage 1
    model = create_model(name, weights=None).to(device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # what the stages train and read: the model and the images, or (--frozen-backbone) the
    # layers after the backbone and its cached maps; `model` is the one saved either way
    net, livec_in = model, livec_bank
    if args.frozen_backbone:
        t = time.perf_counter()
        net = T.TapModel(model)
        livec_in = T.TapBank(model, livec_bank, mirrored=True, show_progress=not args.no_progress,
                             desc="livec maps")
        clock.lap("livec_maps", t)
        _say(f"[frozen] backbone frozen; livec-dev maps (and mirrored) cached: "
             f"{livec_in.nbytes / 2**30:.2f} GiB in {clock.marks['livec_maps']:.1f} s")
    syn_in = syn_bank
    stage1_state = None
    if syn is not None:
        t = time.perf_counter()
        src_t = torch.as_tensor(syn.src)
        train_rows = np.flatnonzero(~np.isin(syn.src, hold_src))
        hold_rows = np.flatnonzero(np.isin(syn.src, hold_src))
        if callable(getattr(model, "semantic_embedding", None)):  # glint
            target, transfer = glint_transfer_targets(model, syn, syn_bank, livec_bank, mos, rt, args.glint_topk)
            results["transfer"] = transfer
            _say(f"[stage 1] semantic-aligned transfer: anchors from {transfer['distinct_anchors']} "
                 f"livec images, mean cosine {transfer['mean_cosine']:.3f}, anchor MOS "
                 f"{transfer['anchor_mos_mean']:.1f} +- {transfer['anchor_mos_std']:.1f}")
        else:
            target = 100.0 * syn.quality.astype(np.float32)
        if args.frozen_backbone:
            t_maps = time.perf_counter()
            syn_in = T.TapBank(model, syn_bank, show_progress=not args.no_progress, desc="synthetic maps")
            syn_bank = None  # the maps are all stage 1 and the synthetic test read
            _say(f"[frozen] synthetic maps cached: {syn_in.nbytes / 2**30:.2f} GiB in "
                 f"{time.perf_counter() - t_maps:.1f} s")
        labels = T.SyntheticLabels(src=src_t, dtype=torch.as_tensor(syn.dtype),
                                   level=torch.as_tensor(syn.level), target=torch.as_tensor(target))
        cfg1 = T.Stage1Config(epochs=args.s1_epochs, types_per_batch=args.s1_types_per_batch,
                              images_per_type=args.s1_images_per_type, lr_head=args.s1_lr_head,
                              lr_backbone=args.s1_lr_backbone, w_con=args.s1_w_con,
                              max_shift=args.max_shift)
        s1_max = None if args.no_budget else 0.3 * args.budget_s
        stats = T.train_stage1(net, syn_in, labels, train_rows, cfg1, rt, losslog, args.seed,
                               max_seconds=s1_max)
        if stats["steps"] < stats["planned_steps"]:
            _say(f"[budget] stage 1 shortened to {stats['steps']} of {stats['planned_steps']} steps "
                 f"to stay within {s1_max:.0f} s")
        clock.lap("stage1", t)
        stage1_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        t = time.perf_counter()
        test = _synthetic_eval(net, syn_in, syn, hold_rows, rt)
        clock.lap("synthetic_test", t)
        results["stage1"] = {"config": T.config_dict(cfg1), **stats, "synthetic_test": test,
                             "train_rows": int(len(train_rows)), "holdout_rows": int(len(hold_rows))}
        _say(f"[stage 1] {stats['steps']} steps x {stats['batch']} in {stats['seconds']:.1f} s; loss "
             f"{stats['first_loss']:.4f} -> {stats['last_loss']:.4f}; synthetic test (held-out "
             f"{n_hold} images): median within-image SROCC {test['srocc_image_median']:.4f}, "
             f"within-chain {test['srocc_chain_median']:.4f}")
    else:
        stage1_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        results["stage1"] = None

    cfg2 = T.Stage2Config(epochs=args.s2_epochs, batch_size=args.s2_batch, lr_head=args.s2_lr_head,
                          lr_backbone=args.s2_lr_backbone, w_plcc=args.s2_w_plcc, w_rank=args.s2_w_rank,
                          max_shift=args.max_shift)
    runs = [tr for tr, _ in folds] + ([np.arange(n_livec)] if args.final else [])
    if runs and not args.no_budget:
        t = time.perf_counter()
        fit_stage2_to_budget(cfg2, net, model, stage1_state, livec_in, mos, runs, rt, clock, args, results)
        clock.lap("budget_check", t)
    results["stage2_config"] = T.config_dict(cfg2)

    def save() -> None:  # after every stage, so a run cut short keeps what it measured
        _write_results(out, name, results, clock)

    save()

    # ---------------------------------------------------------------- cross-validation
    if folds:
        t_cv = time.perf_counter()
        rows, oof = [], np.full(n_livec, np.nan, np.float32)
        for k, (tr, va) in enumerate(folds):
            t = time.perf_counter()
            model.load_state_dict(stage1_state)
            evalf = (lambda m, va=va: {kk: v for kk, v in _metrics(T.predict(m, livec_in, va, rt), mos[va]).items()
                                       if kk in ("srocc", "plcc")})
            stats = T.train_stage2(net, livec_in, mos, tr, cfg2, rt, losslog, args.seed + 1 + k,
                                   tag=f"fold{k}", eval_fn=evalf, eval_every=args.eval_every)
            pred = T.predict(net, livec_in, va, rt)
            oof[va] = pred
            m = _metrics(pred, mos[va])
            row = {"fold": k, "n_train": int(len(tr)), "n_val": int(len(va)), **m,
                   "seconds": round(time.perf_counter() - t, 2), "epoch_loss": stats["epoch_loss"],
                   "evals": stats["evals"]}
            if "baseline" in results:
                bl = results["baseline"]["folds"][k]
                row["baseline_srocc"], row["baseline_plcc"] = bl["srocc"], bl["plcc"]
            rows.append(row)
            results["cv"] = {"k": len(folds), "folds": rows, "complete": False}
            save()
            _say(f"[cv] fold {k + 1}/{len(folds)}: SROCC {m['srocc']:.4f} PLCC {m['plcc']:.4f} "
                 f"(train {len(tr)}, val {len(va)}; loss {stats['epoch_loss'][0]:.4f} -> "
                 f"{stats['epoch_loss'][-1]:.4f}; {row['seconds']:.1f} s)")
        clock.lap("cv", t_cv)
        cv = {"k": len(folds), "folds": rows, "summary": _summary(rows), "oof": _metrics(oof, mos)}
        if "transfer" in results:  # diagnostic for the glint transfer's label leak (docs/training.md)
            used = np.zeros(n_livec, bool)
            used[results["transfer"]["anchor_indices"]] = True
            if (~used).sum() >= 10:
                cv["oof_non_anchor"] = _metrics(oof[~used], mos[~used])
            if used.sum() >= 10:
                cv["oof_anchor"] = _metrics(oof[used], mos[used])
        results["cv"] = cv
        save()
        _print_cv(cv, results.get("baseline"))

    # ---------------------------------------------------------------- final
    if args.final:
        t = time.perf_counter()
        model.load_state_dict(stage1_state)
        stats = T.train_stage2(net, livec_in, mos, np.arange(n_livec), cfg2, rt, losslog,
                               args.seed + 100, tag="final")
        clock.lap("final", t)
        final = {k: v for k, v in stats.items() if k != "evals"}
        final["train_fit"] = _metrics(T.predict(net, livec_in, np.arange(n_livec), rt), mos)
        if syn is not None:
            final["synthetic_test"] = _synthetic_eval(net, syn_in, syn,
                                                      np.flatnonzero(np.isin(syn.src, hold_src)), rt)
        results["final"] = final
        save()
        results["weights"] = save_final(model, name, args, results, rt, livec_bank, out)
        _say(f"[final] {stats['steps']} steps in {stats['seconds']:.1f} s; training-set SROCC "
             f"{final['train_fit']['srocc']:.4f}"
             + (f"; synthetic test median SROCC {final['synthetic_test']['srocc_image_median']:.4f}"
                if syn is not None else "")
             + f"; weights {results['weights']['path']} ({results['weights']['bytes'] / 2**20:.1f} MiB)")

    save()
    _say("[time] " + ", ".join(f"{k} {v:.1f}s" for k, v in clock.marks.items())
         + f"; total {results['total_s']:.1f} s")
    if results["total_s"] > args.budget_s:
        _say(f"[time] WARNING: {results['total_s']:.0f} s is over the {args.budget_s:.0f} s budget")
    losslog.close()
    _say(f"[out] {out / f'{name}_results.json'}")
    return results


def _write_results(out: Path, name: str, results: dict, clock: Clock) -> None:
    """(Re)write the results file: a run cut short still leaves what it measured so far."""
    results["timings_s"] = clock.marks
    results["total_s"] = round(clock.total(), 2)
    tmp = out / f".{name}_results.json.tmp"
    tmp.write_text(json.dumps(_json_safe(results), indent=1))
    tmp.replace(out / f"{name}_results.json")


def fit_stage2_to_budget(cfg2, net, model, stage1_state, bank, mos, runs, rt, clock, args, results) -> None:
    """Lower ``cfg2.epochs`` (the same for every fold and the final run) when the measured step
    time (of ``net`` on ``bank``) says the planned epochs would overrun ``--budget-s``; the
    decision is recorded. ``model`` gets ``stage1_state`` back afterwards."""
    from . import trainer as T

    per_step = T.stage2_step_seconds(net, bank, mos, runs[0], cfg2, rt,
                                     **({"steps": 5, "skip": 2} if args.tiny else {}))
    model.load_state_dict(stage1_state)
    steps_per_epoch = sum(max(1, len(r) // min(cfg2.batch_size, len(r))) for r in runs)
    reserve = 15.0 + 0.05 * args.budget_s  # evaluation, saving and reloading the weights
    left = args.budget_s - clock.total() - reserve
    need = per_step * 1.1 * steps_per_epoch * cfg2.epochs
    fit = int(left / (per_step * 1.1 * steps_per_epoch)) if left > 0 else 0
    info = {"stage2_step_s": round(per_step, 4), "planned_epochs": cfg2.epochs,
            "projected_stage2_s": round(need, 1), "left_s": round(left, 1)}
    if fit < cfg2.epochs:
        cfg2.epochs = max(5, fit)
        info["epochs"] = cfg2.epochs
        _say(f"[budget] stage 2: {info['planned_epochs']} epochs would take ~{need:.0f} s, {left:.0f} s "
             f"left of --budget-s {args.budget_s:.0f}: running {cfg2.epochs} epochs per fold instead")
    else:
        _say(f"[budget] stage 2: {cfg2.epochs} epochs x {len(runs)} runs ~{need:.0f} s "
             f"({per_step * 1000:.0f} ms/step), {left:.0f} s left: fits")
    results["budget"] = info


def _synthetic_eval(model, syn_bank, syn, rows, rt) -> dict:
    from . import trainer as T

    if len(rows) == 0:
        return {"images": 0, "srocc_image_median": math.nan, "srocc_chain_median": math.nan}
    scores = T.predict(model, syn_bank, rows, rt)
    return T.synthetic_test(scores, syn.src[rows], syn.dtype[rows], syn.level[rows])


def glint_transfer_targets(model, syn, syn_bank, livec_bank, mos, rt, topk: int = 1):
    """Semantic-aligned quality transfer (GlintIQA), adapted to labels without distortion levels.

    For each pristine image, the livec-dev images most similar by cosine similarity of the
    pretrained ``semantic_embedding`` (ImageNet Lite0 head features) give an anchor MOS (mean of
    the top-k); each distorted version gets ``anchor x quality`` with ``quality`` the
    full-reference pseudo-MOS / 100 of that (type, level) (1 for the image itself).
    """
    from . import trainer as T

    ref_rows = np.flatnonzero(syn.level == 0)
    model.eval()
    e_p = T.embed(model.semantic_embedding, syn_bank, ref_rows, rt)
    e_l = T.embed(model.semantic_embedding, livec_bank, np.arange(len(livec_bank)), rt)
    e_p /= np.linalg.norm(e_p, axis=1, keepdims=True) + 1e-8
    e_l /= np.linalg.norm(e_l, axis=1, keepdims=True) + 1e-8
    sim = e_p @ e_l.T  # (pristine, livec)
    k = max(1, min(topk, sim.shape[1]))
    nn_idx = np.argsort(-sim, axis=1)[:, :k]
    anchor = mos[nn_idx].mean(axis=1)
    anchor_of_src = np.zeros(int(syn.src.max()) + 1, np.float32)
    anchor_of_src[syn.src[ref_rows]] = anchor
    target = anchor_of_src[syn.src] * syn.quality.astype(np.float32)
    info = {"topk": k, "mean_cosine": float(np.take_along_axis(sim, nn_idx, 1).mean()),
            "anchor_mos_mean": float(anchor.mean()), "anchor_mos_std": float(anchor.std()),
            "distinct_anchors": int(len(np.unique(nn_idx))),
            "anchor_indices": sorted(int(i) for i in np.unique(nn_idx)),
            "rule": "target = mean MOS of the top-k most similar livec-dev images x pseudo-MOS/100"}
    return target.astype(np.float32), info


def frozen_baseline(bank, mos, folds, rt) -> dict:
    """Frozen ImageNet Lite0 (mean+std pooled at s4, s8, s16, s32, head) + ridge, alpha by
    leave-one-out on the training folds (``engines.baselines.frozen_ridge``), same folds."""
    import torch

    from ..backbone import load_pretrained_backbone
    from ..baselines.frozen_ridge import RidgeLOO, pool_features

    backbone = load_pretrained_backbone(drop_classifier=True).to(rt.device).eval()
    feats = []
    with torch.no_grad():
        for i in range(0, len(bank), rt.eval_batch):
            x = bank.batch(torch.arange(i, min(i + rt.eval_batch, len(bank))))
            feats.append(pool_features(backbone.forward_features(x, with_head=True)).double().cpu())
    x = torch.cat(feats).numpy()
    rows = []
    for k, (tr, va) in enumerate(folds):
        reg = RidgeLOO().fit(x[tr], mos[tr])
        m = _metrics(reg.predict(x[va]), mos[va])
        rows.append({"fold": k, **m, "alpha": float(reg.alpha_)})
    del backbone
    return {"folds": rows, "summary": _summary(rows),
            "method": "frozen ImageNet Lite0 mean+std at s4,s8,s16,s32,head (3552 features) + ridge, "
                      "alpha by exact leave-one-out on the training folds"}


def save_final(model, name, args, results, rt, bank, out: Path) -> dict:
    import shutil

    import torch

    from .. import create_model
    from ..weights import file_sha256, save_weights
    from . import trainer as T

    if args.weights_out:
        path = Path(args.weights_out)
    else:  # a smoke run must never replace the shipped weights
        path = (out if args.tiny else REPO / "engines" / "weights") / f"{name}.pt"
    cv = results.get("cv")
    meta = {
        "recipe": "docs/training.md",
        "trained": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "seed": args.seed, "commit": results.get("commit"), "device": results.get("gpu") or str(rt.device),
        "torch": results["torch"], "input_size": int(bank.size),
        "data": {"livec_dev_images": int(len(bank)), "pristine_images": results["pack"]["pristine"],
                 "synthetic_images": (results.get("synthetic") or {}).get("images"),
                 "synthetic_label_source": (results.get("synthetic") or {}).get("label_source")},
        "stage1": ({k: results["stage1"][k] for k in ("config", "steps", "batch")}
                   if results.get("stage1") else None),
        "stage2": results["stage2_config"],
        "cv": ({"k": cv["k"], "median": cv["summary"]["median"], "oof": {k: cv["oof"][k] for k in ("srocc", "plcc")},
                "folds": [{"srocc": r["srocc"], "plcc": r["plcc"]} for r in cv["folds"]]} if cv else None),
        "baseline_cv_median": (results["baseline"]["summary"]["median"] if results.get("baseline") else None),
        "synthetic_test": {"stage1": (results.get("stage1") or {}).get("synthetic_test"),
                           "final": results["final"].get("synthetic_test")},
        "transfer": ({k: v for k, v in results["transfer"].items() if k != "anchor_indices"}
                     if results.get("transfer") else None),
        "tiny": bool(args.tiny),
        "frozen_backbone": bool(args.frozen_backbone),
    }
    meta = _json_safe(meta)
    # reference scores from the trained model, to check the saved (fp16) file reproduces them
    check_idx = np.arange(min(16, len(bank)))
    ref = T.predict(model, bank, check_idx, rt)
    model_cpu = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format)
    model_cpu.input_size = int(bank.size)  # served at the size it was trained at
    save_weights(model_cpu, path, meta)
    del model_cpu
    loaded = create_model(name, weights=path).to(rt.device)
    if rt.channels_last:
        loaded = loaded.to(memory_format=torch.channels_last)
    again = T.predict(loaded, bank, check_idx, rt)
    max_diff = float(np.abs(again - ref).max())
    del loaded
    info = {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path),
            "reload_max_abs_diff": max_diff}
    if max_diff > 2.0:
        log.warning("reloaded weights differ by %.3f points from the trained model", max_diff)
    # a copy beside the results (fetched back from a device run; split if too big for one file)
    out.mkdir(parents=True, exist_ok=True)
    if path.stat().st_size <= OUT_FILE_LIMIT:
        if path.resolve() != (out / path.name).resolve():
            shutil.copy(path, out / path.name)
        info["copy"] = [path.name]
    else:
        parts, blob = [], path.read_bytes()
        for i in range(0, len(blob), OUT_FILE_LIMIT):
            part = out / f"{path.name}.part{i // OUT_FILE_LIMIT}"
            part.write_bytes(blob[i:i + OUT_FILE_LIMIT])
            parts.append(part.name)
        info["copy"] = parts
        info["reassemble"] = f"cat {' '.join(parts)} > {path.name}"
    return info


def _print_cv(cv: dict, baseline: dict | None) -> None:
    head = "fold   SROCC   PLCC" + ("  | baseline SROCC  PLCC" if baseline else "")
    _say("[cv] " + head)
    for r in cv["folds"]:
        line = f"{r['fold']:>4}  {r['srocc']:.4f} {r['plcc']:.4f}"
        if baseline:
            line += f"  |          {r['baseline_srocc']:.4f} {r['baseline_plcc']:.4f}"
        _say("[cv] " + line)
    med = cv["summary"]["median"]
    line = f" med  {med['srocc']:.4f} {med['plcc']:.4f}"
    if baseline:
        bm = baseline["summary"]["median"]
        line += f"  |          {bm['srocc']:.4f} {bm['plcc']:.4f}"
    _say("[cv] " + line)
    _say(f"[cv] out-of-fold, all {cv['oof']['n']} images: SROCC {cv['oof']['srocc']:.4f} "
         f"PLCC {cv['oof']['plcc']:.4f}")
    if cv.get("oof_non_anchor"):
        _say(f"[cv] out-of-fold on images never used as a transfer anchor ({cv['oof_non_anchor']['n']}): "
             f"SROCC {cv['oof_non_anchor']['srocc']:.4f} PLCC {cv['oof_non_anchor']['plcc']:.4f}")


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (Path, str)):  # str subclasses too (torch.__version__)
        return str(obj)
    return obj


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tiny:
        apply_tiny(args, parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.folds == 1 or args.folds < 0:
        parser.error("--folds must be 0 (no cross-validation) or at least 2")
    if not args.folds and not args.final:
        parser.error("nothing to do: give --folds K (K >= 2) and/or --final")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
