"""Stage 3: region fine-tuning on CPU, with the backbone frozen (recipe: ``docs/training.md``).

The shipped weights score whole frames well enough but their region maps do not say where the
damage is: training only ever supervised the frame score. This stage teaches the maps to
localise while keeping the frame scores of the trained model (the *teacher*, a frozen copy of
the starting weights):

* The backbone is frozen, so its maps (``model.backbone_taps``) are computed once per training
  image and cached; only the modules after it train (``model.forward_taps``), which is cheap
  enough for a 2-core CPU.
* Data: the pack's pristine photos minus the synthetic test's held-out images (the rule of
  ``engines.train.fit``) and minus every scikit-image photo (``tests/test_region_maps.py``
  uses them): per image the clean version, ``--full`` whole-frame distorted versions (random
  type of ``engines.train.distortions``, level 2-5) and ``--pasted`` versions where one
  rectangle on the 32-px cell grid (a quadrant, a half or a random box) comes from one of those
  distorted frames. Further region examples are composed on the fly by mixing the cached maps
  of the clean and the distorted frame under a random cell mask (a cheap approximation of
  pasting: exact away from the rectangle's edge).
* Losses (maps and scores on 0-100, losses on 0-1):
  - region map: the map of a region example should match the teacher's map of the distorted
    frame inside the rectangle and the teacher's map of the clean frame outside it (L1, the
    inside and outside cells weighted equally);
  - localisation hinges: inside the rectangle the map must fall below the clean frame's map
    by half the teacher's whole-frame drop for that distortion (capped at 15 points), and
    below the cells outside by min(that, 5) when the teacher sees real damage (> 4 points);
  - frame maps: clean and whole-frame distorted maps stay near the teacher's (weight 0.5);
  - global judgement: L1 to the teacher's score and a hinge ranking in the teacher's order
    on livec-dev images and the clean / whole-frame distorted pristine images;
  - bifusion: 0.01 x the MoE load-balancing loss, as in the other stages.

    python -m engines.train.regions --model bifusion --pack .cache/trainpack --out OUT [--minutes N]

``--level-rank W`` (experimental, not used for the shipped weights) also ranks each photo's
distorted versions by level across types; ``docs/training.md`` §7 has what it did.

Writes ``OUT/NAME.pt`` (fp16, ``engines.weights.save_weights``, not the shipped file),
``OUT/NAME_regions.json`` (settings, timings, before/after numbers) and
``OUT/NAME_regions_losses.jsonl``.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..backbone import normalize
from ..models import list_models

STAGE3_RECIPE = "stage 3: region fine-tuning on CPU, backbone frozen (engines.train.regions)"
CELL = 32  # the map's stride: regions are whole map cells
EXCLUDE_PREFIX = "skimage:"  # the region test's photos (all of the pack's scikit-image ones)


# =========================================================================== data

def split_pristine(names: list[str], seed: int = 0, holdout_share: float = 0.15,
                   val_images: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) pristine indices: the synthetic test's held-out images (the seeded rule of
    ``engines.train.fit``) and every scikit-image photo are left out of both."""
    from .data import synthetic_holdout
    n = len(names)
    hold = set(synthetic_holdout(n, seed, holdout_share).tolist())
    usable = np.array([i for i in range(n) if i not in hold and not names[i].startswith(EXCLUDE_PREFIX)])
    usable = usable[np.random.default_rng(seed + 1).permutation(len(usable))]
    val_images = min(val_images, max(0, len(usable) - 1))
    return np.sort(usable[val_images:]), np.sort(usable[:val_images])


def random_region(rng: np.random.Generator, cells: int) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) in map cells: a quadrant, a half or a random box (1/4 to 3/4 a side)."""
    h = cells // 2
    kind = rng.integers(3)
    if kind == 0:
        r, c = divmod(int(rng.integers(4)), 2)
        return r * h, (r + 1) * h, c * h, (c + 1) * h
    if kind == 1:
        side = int(rng.integers(4))
        return ((0, h, 0, cells), (h, cells, 0, cells), (0, cells, 0, h), (0, cells, h, cells))[side]
    lo, hi = max(1, cells // 4), max(1, 3 * cells // 4)
    bh, bw = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    r0, c0 = int(rng.integers(0, cells - bh + 1)), int(rng.integers(0, cells - bw + 1))
    return r0, r0 + bh, c0, c0 + bw


def cell_mask(region, cells: int) -> np.ndarray:
    m = np.zeros((cells, cells), np.float32)
    r0, r1, c0, c1 = region
    m[r0:r1, c0:c1] = 1.0
    return m


@dataclass
class TapCache:
    """Backbone maps of every cached image, ``{tap: (N, C, h, w)}``, and what each row is."""

    taps: dict[str, torch.Tensor]
    kind: np.ndarray  # 0 clean, 1 whole-frame distorted, 2 one region distorted, 3 livec
    src: np.ndarray  # pristine index (livec: -1)
    clean: np.ndarray  # row of the same image's clean version (livec: itself)
    full: np.ndarray  # row of the whole-frame distorted version (pasted rows: their source)
    dtype: list[str]
    level: np.ndarray
    region: np.ndarray  # (N, 4) cells r0, r1, c0, c1 (pasted rows; zeros otherwise)

    def __len__(self) -> int:
        return len(self.kind)

    def batch(self, rows, dtype=torch.float32) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return {k: v.index_select(0, idx).to(dtype) for k, v in self.taps.items()}


def _to_input(imgs: np.ndarray) -> torch.Tensor:
    return normalize(torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 255.0)


@torch.no_grad()
def _run_backbone(model, images: list[np.ndarray], store: dict, start: int, dtype) -> None:
    taps = model.backbone_taps(_to_input(np.stack(images)))
    for k, v in taps.items():
        if k not in store:
            continue
        store[k][start:start + len(images)] = v.to(dtype)


def build_cache(model, pristine: np.ndarray, src_idx: np.ndarray, livec: np.ndarray | None,
                types: list[str], n_full: int, n_pasted: int, seed: int, batch: int = 8,
                show_progress: bool = True, min_level: int = 2, chains: int = 0,
                view=None, always: tuple[str, ...] = ()) -> TapCache:
    """Distort, paste and run the (frozen) backbone once per image; pristine rows are kept in
    fp16 (memory), livec rows in fp32 (their old/new scores are compared exactly).

    ``view`` (an ``engines.views.InputView``, fragments or crops): each photo is distorted at its
    own scale, then every version goes through the view with one draw per photo, so a pasted
    region (whole 32-px cells of the model input) is exactly that part of a distorted frame's
    patches. ``livec`` must then already be model inputs (the caller applies the view).

    Whole-frame distorted versions: ``n_full`` of a random type and level each, or with
    ``chains`` that many types per image, each at every level ``min_level``..5 with one seed per
    type (a monotone chain, as in the synthetic test), ``n_full`` then being their number;
    the ``always`` types are among every image's chains (a failure the random draw rarely
    teaches enough)."""
    from tqdm import tqdm

    from .distortions import apply

    if chains:
        n_full = min(chains, len(types)) * (6 - min_level)
        n_pasted = min(n_pasted, min(chains, len(types)) * (6 - max(min_level, 2)))
    n_full, n_pasted = int(n_full), min(int(n_pasted), int(n_full))
    per = 1 + n_full + n_pasted
    n_liv = 0 if livec is None else len(livec)
    n = per * len(src_idx) + n_liv
    seen = (lambda im, s: im) if view is None or view.mode == "resize" else \
        (lambda im, s: view(im, draw=seed * 100003 + int(s)))
    size = seen(pristine[src_idx[0]], src_idx[0]).shape[0]
    cells = size // CELL
    model.backbone.eval()
    with torch.no_grad():
        probe = model.backbone_taps(_to_input(seen(pristine[src_idx[0]], src_idx[0])[None]))
    store = {k: torch.empty((n, *v.shape[1:]), dtype=torch.float16) for k, v in probe.items()}
    kind = np.zeros(n, np.int8)
    src = np.full(n, -1, np.int32)
    clean = np.arange(n, dtype=np.int64)
    full = np.arange(n, dtype=np.int64)
    level = np.zeros(n, np.int8)
    region = np.zeros((n, 4), np.int16)
    dnames = [""] * n
    pending, start = [], 0

    def flush():
        nonlocal pending, start
        if pending:
            _run_backbone(model, pending, store, start, torch.float16)
            start += len(pending)
            pending = []

    bar = tqdm(total=n, desc="backbone cache", disable=not show_progress, mininterval=2.0, leave=False)
    row = 0
    for s in src_idx:
        rng = np.random.default_rng([seed, int(s)])
        frame = pristine[s]
        img = seen(frame, s)
        c_row = row
        rows_img = [img]
        kind[row], src[row] = 0, s
        row += 1
        bads = []
        if chains:
            fixed = [types.index(t) for t in always][:chains]
            rest = [k for k in range(len(types)) if k not in fixed]
            picks = fixed + list(rng.choice(rest, size=min(chains, len(types)) - len(fixed), replace=False))
            plan = [(str(types[k]), lv, j) for j, k in enumerate(picks) for lv in range(min_level, 6)]
        else:
            plan = [(str(types[int(rng.integers(len(types)))]), int(rng.integers(min_level, 6)), j)
                    for j in range(n_full)]
        for t, lv, j in plan:
            bad = seen(apply(t, frame, lv, np.random.default_rng([seed, int(s), j])), s)
            bads.append((row, t, lv, bad))
            kind[row], src[row], clean[row], level[row], dnames[row] = 1, s, c_row, lv, t
            rows_img.append(bad)
            row += 1
        # chains: paste from random versions of level >= 2 (the first rows are all level 1)
        if chains:
            strong = np.flatnonzero([b[2] >= 2 for b in bads])
            sources = [bads[int(k)] for k in rng.choice(strong, min(n_pasted, len(strong)), replace=False)]
        else:
            sources = bads[:n_pasted]
        for f_row, t, lv, bad in sources:
            reg = random_region(rng, cells)
            out = img.copy()
            ys, xs = slice(reg[0] * CELL, reg[1] * CELL), slice(reg[2] * CELL, reg[3] * CELL)
            out[ys, xs] = bad[ys, xs]
            kind[row], src[row], clean[row], full[row], level[row], dnames[row] = 2, s, c_row, f_row, lv, t
            region[row] = reg
            rows_img.append(out)
            row += 1
        for im in rows_img:
            pending.append(im)
            if len(pending) == batch:
                flush()
        bar.update(len(rows_img))
    flush()
    if n_liv:
        # livec in fp32 (own tensors, concatenated below)
        liv_store = {k: torch.empty((n_liv, *v.shape[1:]), dtype=torch.float32) for k, v in probe.items()}
        for i in range(0, n_liv, batch):
            _run_backbone(model, list(livec[i:i + batch]), liv_store, i, torch.float32)
            bar.update(min(batch, n_liv - i))
        kind[row:] = 3
        for k in store:
            store[k] = store[k][:row]
        # keep one dict of tensors: pristine fp16 rows first, livec fp32 rows after
        store = {k: _Concat(store[k], liv_store[k]) for k in store}
    bar.close()
    return TapCache(taps=store, kind=kind, src=src, clean=clean, full=full, dtype=dnames,
                    level=level, region=region)


def native_livec_views(names: list[str], view, seed: int) -> np.ndarray:
    """The pack's livec images (stored squeezed to the pack size) read again at their native
    size from the dataset they came from, one seeded view each, in the pack's order."""
    from ..images import read_rgb
    from ..labelled import load_labelled_csv
    from .native import DEFAULT_CSV

    labelled = load_labelled_csv(DEFAULT_CSV)
    paths = dict(zip(labelled.images, labelled.paths))
    return np.stack([view(read_rgb(paths[n]), draw=seed * 100003 + i) for i, n in enumerate(names)])


class _Concat:
    """Two row blocks of different dtypes read as one (``index_select`` + ``to`` only)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b, self.n = a, b, len(a)

    def index_select(self, dim: int, idx: torch.Tensor) -> torch.Tensor:
        assert dim == 0
        out = torch.empty((len(idx), *self.a.shape[1:]), dtype=torch.float32)
        lo = idx < self.n
        if lo.any():
            out[lo] = self.a.index_select(0, idx[lo]).float()
        if (~lo).any():
            out[~lo] = self.b.index_select(0, idx[~lo] - self.n)
        return out


# =========================================================================== model helpers

@torch.no_grad()
def predict_taps(model, cache: TapCache, rows, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Scores (N,) and maps (N, h, w) of cached rows (eval mode)."""
    was = model.training
    model.eval()
    scores, maps = [], []
    rows = np.asarray(rows)
    for i in range(0, len(rows), batch):
        s, m = model.forward_taps(cache.batch(rows[i:i + batch]))
        scores.append(s.float().numpy())
        maps.append(m.float().numpy())
    model.train(was)
    return np.concatenate(scores), np.concatenate(maps)


def head_parameters(model) -> list[torch.nn.Parameter]:
    """Every parameter outside the backbone (the ones this stage trains)."""
    return [p for n, p in model.named_parameters() if not n.startswith("backbone.")]


def localisation_rate(maps: np.ndarray, clean_maps: np.ndarray, regions: np.ndarray,
                      margin: float = 2.0) -> dict:
    """The region test's criterion on cached rows: cells inside the region average >= margin
    below the cells outside; also the share whose inside fell more than the outside vs clean."""
    hits, drops = [], []
    cells = maps.shape[-1]
    for m, c, reg in zip(maps, clean_maps, regions):
        inside = cell_mask(reg, cells).astype(bool)
        if inside.all() or not inside.any():
            continue
        hits.append(m[~inside].mean() - m[inside].mean() >= margin)
        d = m - c
        drops.append(d[inside].mean() < d[~inside].mean())
    return {"cases": len(hits), "rate": float(np.mean(hits)) if hits else float("nan"),
            "inside_drops_more": float(np.mean(drops)) if drops else float("nan")}


# =========================================================================== training

@dataclass
class RegionConfig:
    steps: int = 1500
    images_per_step: int = 8  # each: clean + whole-frame distorted + one region example
    livec_per_step: int = 16
    compose_prob: float = 0.5  # region example composed from cached maps (else a real paste)
    lr: float = 3e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    w_region: float = 1.0
    w_hinge: float = 1.0
    w_frame_map: float = 0.5
    w_score: float = 1.0
    w_rank: float = 1.0
    w_aux: float = 0.01
    drop_share: float = 0.5  # inside must fall by this share of the teacher's frame drop
    drop_cap: float = 15.0  # ... capped (points)
    outside_margin: float = 5.0  # inside below outside by min(that, this) points ...
    damage_gate: float = 4.0  # ... when the teacher's frame drop exceeds this (points)
    rank_gap: float = 2.0  # teacher score gap (points) that makes a ranking pair
    rank_margin: float = 0.01
    # cross-type level calibration (0: off, stage 3 as shipped first): within one photo, a
    # lower distortion level of ANY type must score higher, by level_margin per level of gap
    w_level: float = 0.0
    level_images: int = 4  # photos per step, each: clean + level_rows whole-frame distorted rows
    level_rows: int = 6
    level_margin: float = 0.02
    # ... and a one-sided anchor on those rows: a distorted frame may not score above the
    # teacher's score for it + anchor_slack points, so ranking cannot lift strong damage
    # toward the clean score (what made unanchored runs squeeze blur and JPEG together)
    w_anchor: float = 0.0
    anchor_slack: float = 2.0
    seed: int = 0


@dataclass
class Teacher:
    scores: np.ndarray
    maps: np.ndarray


def _composite(cache: TapCache, clean_rows, full_rows, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Clean-frame maps outside the cell mask, distorted-frame maps inside, at every tap."""
    a, b = cache.batch(clean_rows), cache.batch(full_rows)
    out = {}
    for k in a:
        m = F.interpolate(masks[:, None], size=a[k].shape[-2:], mode="nearest")
        out[k] = a[k] * (1 - m) + b[k] * m
    return out


def _region_means(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inside = (maps * masks).sum((1, 2)) / masks.sum((1, 2)).clamp(min=1)
    outside = (maps * (1 - masks)).sum((1, 2)) / (1 - masks).sum((1, 2)).clamp(min=1)
    return inside, outside


def train_regions(model, cache: TapCache, teacher: Teacher, train_src: np.ndarray,
                  cfg: RegionConfig, budget_s: float | None = None, losslog=None,
                  show_progress: bool = True) -> dict:
    """Fine-tune everything after the backbone on the cached maps; returns training stats."""
    from . import trainer as T

    gen = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.train()
    model.backbone.eval()
    params = head_parameters(model)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    schedule = T.CosineSchedule(cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    by_src_full = {int(s): np.flatnonzero((cache.kind == 1) & (cache.src == s)) for s in train_src}
    by_src_paste = {int(s): np.flatnonzero((cache.kind == 2) & (cache.src == s)) for s in train_src}
    clean_of = {int(s): int(np.flatnonzero((cache.kind == 0) & (cache.src == s))[0]) for s in train_src}
    livec_rows = np.flatnonzero(cache.kind == 3)
    cells = teacher.maps.shape[-1]
    t_scores = torch.from_numpy(teacher.scores).float()
    t_maps = torch.from_numpy(teacher.maps).float()
    aux_of = getattr(type(model), "aux_loss", None)
    calibrate = cfg.w_level > 0

    first = last = None
    history: list[float] = []
    total = cfg.steps
    t_start = time.perf_counter()
    t_timed = None
    step = 0
    bar = T.progress(total=total, desc=f"{model.name} regions", disable=not show_progress)
    while step < total:
        srcs = gen.choice(train_src, size=min(cfg.images_per_step, len(train_src)), replace=False)
        clean_rows, full_rows, reg_full, regions, base_rows, composed = [], [], [], [], [], []
        for s in srcs:
            s = int(s)
            clean_rows.append(clean_of[s])
            full_rows.append(int(gen.choice(by_src_full[s])))
            paste = by_src_paste[s]
            if len(paste) and gen.random() >= cfg.compose_prob:
                r = int(gen.choice(paste))
                base_rows.append(r)
                reg_full.append(int(cache.full[r]))
                regions.append(tuple(int(v) for v in cache.region[r]))
                composed.append(False)
            else:
                base_rows.append(clean_of[s])
                reg_full.append(int(gen.choice(by_src_full[s])))
                regions.append(random_region(gen, cells))
                composed.append(True)
        liv = gen.choice(livec_rows, size=min(cfg.livec_per_step, len(livec_rows)), replace=False) \
            if len(livec_rows) and cfg.livec_per_step else np.zeros(0, np.int64)
        lvl_rows = np.zeros(0, np.int64)
        if calibrate:
            # the frame maps in the batch are the region examples' sources: their (moving) maps
            # are the region targets inside, instead of the teacher's
            full_rows = list(reg_full)
            picks = []
            for s in gen.choice(train_src, size=min(cfg.level_images, len(train_src)), replace=False):
                f = by_src_full[int(s)]
                picks += [clean_of[int(s)], *gen.choice(f, size=min(cfg.level_rows, len(f)), replace=False)]
            lvl_rows = np.asarray(picks, np.int64)
        masks = torch.from_numpy(np.stack([cell_mask(r, cells) for r in regions]))
        # region examples: a real paste is read as it is (mix mask 0), a composed one is the clean
        # frame's maps with the distorted frame's inside the mask
        mix = masks * torch.tensor(composed, dtype=torch.float32)[:, None, None]
        reg_taps = _composite(cache, base_rows, reg_full, mix)
        glob_rows = np.concatenate([clean_rows, full_rows, liv, lvl_rows]).astype(np.int64)
        glob_taps = cache.batch(glob_rows)
        batch = {k: torch.cat([reg_taps[k], glob_taps[k]]) for k in glob_taps}
        nb = len(srcs)

        scores, maps = model.forward_taps(batch)
        m_reg, m_clean = maps[:nb], maps[nb:2 * nb]
        # target of a region example: the teacher's distorted map inside, its clean map outside
        tc = t_maps[clean_rows]
        tf = maps[2 * nb:3 * nb].detach() if calibrate else t_maps[reg_full]
        target = tf * masks + tc * (1 - masks)
        err = (m_reg - target).abs() / 100.0
        e_in, e_out = _region_means(err, masks)
        loss_region = (0.5 * (e_in + e_out)).mean()

        if calibrate:  # the frame drop the model now sees
            drop_t = (scores[nb:2 * nb] - scores[2 * nb:3 * nb]).detach().clamp(min=0)
        else:
            drop_t = (t_scores[clean_rows] - t_scores[reg_full]).clamp(min=0)
        margin = (cfg.drop_share * drop_t).clamp(max=cfg.drop_cap)
        in_reg, out_reg = _region_means(m_reg, masks)
        in_clean, _ = _region_means(m_clean, masks)
        h_fall = F.relu(margin - (in_clean - in_reg)) / 100.0
        gate = (drop_t > cfg.damage_gate).float()
        h_out = gate * F.relu(margin.clamp(max=cfg.outside_margin) - (out_reg - in_reg)) / 100.0
        loss_hinge = (h_fall + h_out).mean()

        # calibrating: distorted frames are ranked by level below, so only the clean photos and
        # livec-dev keep the teacher's maps and scores
        frame_rows = np.asarray(clean_rows) if calibrate else np.concatenate([clean_rows, full_rows])
        loss_frame = ((maps[nb:nb + len(frame_rows)] - t_maps[frame_rows]).abs() / 100.0).mean()
        keep = np.ones(len(glob_rows), bool)
        if calibrate:
            keep[nb:2 * nb] = False
            keep[2 * nb + len(liv):] = False
        s_glob, t_glob = scores[nb:][torch.from_numpy(keep)], t_scores[glob_rows[keep]]
        loss_score = ((s_glob - t_glob).abs() / 100.0).mean()
        loss_rank = T.pairwise_rank_loss(s_glob, T.target_pairs(t_glob, cfg.rank_gap), cfg.rank_margin)
        loss = (cfg.w_region * loss_region + cfg.w_hinge * loss_hinge + cfg.w_frame_map * loss_frame
                + cfg.w_score * loss_score + cfg.w_rank * loss_rank)
        loss_level = loss_anchor = torch.zeros(())
        if calibrate:
            s_lvl = scores[-len(lvl_rows):]
            lv = torch.from_numpy(cache.level[lvl_rows].astype(np.int64))
            src = torch.from_numpy(cache.src[lvl_rows].astype(np.int64))
            gap = (lv[None, :] - lv[:, None]).float()  # > 0: row i has the lower level
            better = (src[:, None] == src[None, :]) & (gap > 0)
            loss_level = (F.relu(cfg.level_margin * gap - (s_lvl[:, None] - s_lvl[None, :]) / 100.0)
                          * better).sum() / better.sum().clamp(min=1)
            loss = loss + cfg.w_level * loss_level
            if cfg.w_anchor:
                dist = torch.from_numpy(cache.kind[lvl_rows] == 1)
                over = F.relu(s_lvl - t_scores[lvl_rows] - cfg.anchor_slack) / 100.0
                loss_anchor = (over * dist).sum() / dist.sum().clamp(min=1)
                loss = loss + cfg.w_anchor * loss_anchor
        if aux_of is not None and cfg.w_aux:
            loss = loss + cfg.w_aux * model.aux_loss

        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        row = {"step": step, "loss": loss.item(), "region": loss_region.item(), "hinge": loss_hinge.item(),
               "frame_map": loss_frame.item(), "score": loss_score.item(), "rank": loss_rank.item(),
               "level": loss_level.item(), "anchor": loss_anchor.item(),
               "lr": float(sched.get_last_lr()[0])}
        first = first or row
        last = row
        history.append(row["loss"])
        if losslog is not None and (step % 10 == 0 or step == total - 1):
            losslog.write(**row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", region=f"{row['region']:.3f}", refresh=False)
        step += 1
        # time budget: steps 5-15 are timed and the schedule shortened to what fits
        if step == 5:
            t_timed = time.perf_counter()
        if budget_s and step == 15 and t_timed is not None:
            per = (time.perf_counter() - t_timed) / 10
            fit = int((budget_s - (time.perf_counter() - t_start)) / per) + step
            if fit < total:
                total = max(step + 1, fit)
                schedule.total = total
                bar.total = total
                print(f"[regions] {per:.2f} s/step: {cfg.steps} steps planned, {total} fit in "
                      f"{budget_s:.0f} s", file=sys.stderr, flush=True)
    bar.close()
    model.eval()
    return {"steps": step, "planned_steps": cfg.steps, "seconds": round(time.perf_counter() - t_start, 1),
            "first": first, "last": last, "losses": [round(v, 6) for v in history]}


# =========================================================================== the command

def record_run(meta: dict, recipe: str, record: dict) -> str:
    """Add this run to the weights' meta: its recipe step and its record under ``stage3``, or,
    for weights that have been through this stage already, beside the earlier run
    (``stage3.2``, ...) rather than over it. Returns the key."""
    key, n = "stage3", 2
    while key in meta:
        key, n = f"stage3.{n}", n + 1
    step = recipe.replace("stage 3", key.replace("stage3", "stage 3"), 1)
    meta["recipe"] = f"{meta.get('recipe', 'unknown')} + {step}"
    meta[key] = record
    return key


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m engines.train.regions", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=list_models())
    ap.add_argument("--pack", type=Path, default=Path(".cache/trainpack"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--weights", default="default", help="starting weights (default: the shipped ones)")
    ap.add_argument("--minutes", type=float, default=None, help="time budget for the training steps")
    ap.add_argument("--steps", type=int, default=RegionConfig.steps)
    ap.add_argument("--full", type=int, default=5, help="whole-frame distorted versions per image")
    ap.add_argument("--pasted", type=int, default=3, help="real one-region versions per image")
    ap.add_argument("--val-images", type=int, default=12, help="pristine images kept for the region check")
    ap.add_argument("--min-level", type=int, default=2, help="lowest level of the whole-frame distorted versions")
    ap.add_argument("--chains", type=int, default=0,
                    help="distortion types per image, each at every level from --min-level (replaces --full)")
    ap.add_argument("--always", nargs="+", default=[], metavar="TYPE",
                    help="with --chains: distortion types in every image's chains")
    ap.add_argument("--level-rank", type=float, default=0.0,
                    help="weight of cross-type level ranking (0: off); on, distorted frames are no "
                         "longer held to the teacher's scores and maps")
    ap.add_argument("--anchor", type=float, default=0.0,
                    help="with --level-rank: weight of the hinge that keeps each distorted frame's "
                         "score at most 2 points above the teacher's")
    ap.add_argument("--limit-pristine", type=int, default=None)
    ap.add_argument("--limit-livec", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    res = run(args)
    print(json.dumps({k: res.get(k) for k in ("livec", "val_regions", "val_levels", "timings_s")}, indent=1))
    return 0


def run(args: argparse.Namespace) -> dict:
    from .. import create_model
    from ..metrics import compute_metrics
    from ..weights import save_weights
    from . import data as D
    from . import trainer as T

    if args.anchor and not args.level_rank:  # before the minutes of caching
        raise SystemExit("--anchor needs --level-rank (it anchors the level-ranked rows)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.model
    pack = D.load_pack(args.pack, limit_livec=args.limit_livec, workers=2)
    pristine, names = pack.pristine, pack.pristine_names
    if args.limit_pristine:
        keep = [i for i in range(len(names)) if not names[i].startswith(EXCLUDE_PREFIX)][:args.limit_pristine]
        pristine, names = pristine[keep], [names[i] for i in keep]
    train_src, val_src = split_pristine(names, args.seed, val_images=args.val_images)
    types, skipped = D.usable_distortions()
    if not set(args.always) <= set(types):
        raise SystemExit(f"--always: {sorted(set(args.always) - set(types))} not usable here "
                         f"(usable: {', '.join(types)})")
    if args.always and not args.chains:
        raise SystemExit("--always needs --chains")
    model = create_model(name, weights=args.weights)
    start_info = {k: model.weights_info.get(k) for k in ("path", "sha256")}
    timings["load"] = round(time.perf_counter() - t0, 1)

    t = time.perf_counter()
    src_all = np.concatenate([train_src, val_src])
    view = model.input_view
    livec = pack.livec if view.mode == "resize" else native_livec_views(pack.livec_names, view, args.seed)
    cache = build_cache(model, pristine, src_all, livec, types, args.full, args.pasted, args.seed,
                        show_progress=not args.no_progress, min_level=args.min_level, chains=args.chains,
                        view=view, always=tuple(args.always))
    timings["cache"] = round(time.perf_counter() - t, 1)
    print(f"[regions] {name}: cached {len(cache)} rows ({len(train_src)} train + {len(val_src)} val "
          f"pristine images, {int((cache.kind == 3).sum())} livec) in {timings['cache']:.0f} s", flush=True)

    t = time.perf_counter()
    teacher_model = copy.deepcopy(model).eval()
    ts, tm = predict_taps(teacher_model, cache, np.arange(len(cache)))
    teacher = Teacher(ts, tm)
    del teacher_model
    timings["teacher"] = round(time.perf_counter() - t, 1)

    cfg = RegionConfig(steps=args.steps, seed=args.seed, w_level=args.level_rank, w_anchor=args.anchor)
    loss_path = out / f"{name}_regions_losses.jsonl"
    loss_path.unlink(missing_ok=True)
    log = T.LossLog(loss_path)
    budget = args.minutes * 60 if args.minutes else None
    stats = train_regions(model, cache, teacher, train_src, cfg, budget, log, not args.no_progress)
    log.close()
    timings["train"] = stats["seconds"]

    # ---- save (fp16) and measure the saved file, not the fp32 weights in memory
    results = {"model": name, "seed": args.seed, "started_from": start_info, "config": T.config_dict(cfg),
               "args": {k: str(v) for k, v in vars(args).items()}, "train_images": int(len(train_src)),
               "val_images": int(len(val_src)), "types": types, "skipped_types": skipped,
               "torch": torch.__version__, "python": platform.python_version(),
               "threads": torch.get_num_threads(), "stats": stats,
               "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    wpath = out / f"{name}.pt"
    # the starting weights' meta stays (their recipe, CV numbers, ...) and stage 3 is added
    meta = {k: v for k, v in model.weights_info.items() if k not in ("path", "sha256")}
    recipe = STAGE3_RECIPE + (f", cross-type level ranking (weight {cfg.w_level:g})" if cfg.w_level else "") \
        + (f", anchored to the teacher (weight {cfg.w_anchor:g}, +{cfg.anchor_slack:g} points)" if cfg.w_anchor else "")
    record_run(meta, recipe, {k: results[k] for k in ("seed", "config", "train_images", "date", "started_from")})
    save_weights(model, wpath, meta=meta)
    new = create_model(name, weights=wpath)

    livec_rows = np.flatnonzero(cache.kind == 3)
    if len(livec_rows):
        new_s, _ = predict_taps(new, cache, livec_rows)
        old_s = teacher.scores[livec_rows]
        from scipy.stats import spearmanr

        results["livec"] = {"n": int(len(livec_rows)),
                            "old_vs_new_srocc": float(spearmanr(old_s, new_s).statistic),
                            "mean_abs_delta": float(np.abs(new_s - old_s).mean()),
                            "old": compute_metrics(old_s, pack.mos), "new": compute_metrics(new_s, pack.mos)}
    val_rows = np.flatnonzero((cache.kind == 2) & np.isin(cache.src, val_src))
    if len(val_rows):
        _, new_m = predict_taps(new, cache, val_rows)
        clean_rows, regs = cache.clean[val_rows], cache.region[val_rows]
        _, new_clean = predict_taps(new, cache, clean_rows)
        results["val_regions"] = {
            "old": localisation_rate(teacher.maps[val_rows], teacher.maps[clean_rows], regs),
            "new": localisation_rate(new_m, new_clean, regs)}
    # level ranking on the check photos' clean and whole-frame distorted versions (few types
    # per photo: a quick proxy of bench/synthetic_eval.py, which is the measurement)
    lvl_rows = np.flatnonzero((cache.kind <= 1) & np.isin(cache.src, val_src))
    if len(lvl_rows):
        new_s, _ = predict_taps(new, cache, lvl_rows)
        key = (cache.src[lvl_rows], np.asarray(cache.dtype, object)[lvl_rows], cache.level[lvl_rows])
        results["val_levels"] = {"old": T.synthetic_test(teacher.scores[lvl_rows], *key),
                                 "new": T.synthetic_test(new_s, *key)}
    timings["total"] = round(time.perf_counter() - t0, 1)
    results["timings_s"] = timings
    results["weights"] = {"path": str(wpath), "bytes": wpath.stat().st_size}
    (out / f"{name}_regions.json").write_text(json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    sys.exit(main())
