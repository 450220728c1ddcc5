"""Training loops and losses for the quality models (recipe: ``docs/training.md``).

* :func:`train_stage1`: pre-training on synthetic distortions of pristine images -
  regression to a pseudo-MOS, pairwise ranking within one image and distortion type (a lower
  level must score higher, by a margin), and for models with a distortion encoder a supervised
  contrastive loss on its embedding (positives = same distortion type and level), plus the
  model's auxiliary loss (MoE load balancing).
* :func:`train_stage2`: fine-tuning on human MOS - L1 + differentiable PLCC loss + pairwise
  ranking in the batch, backbone learning rate 10x lower than the heads, backbone BatchNorm
  frozen, AdamW with warm-up and cosine decay, whole images with flips and small shifts.

Images live on the training device as uint8 ``(N, S, S, 3)`` (:class:`ImageBank`) and batches
are made there: no data loader, no host copies per step.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0

# =========================================================================== losses


def regression_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 0.05) -> torch.Tensor:
    """Smooth-L1 on the 0-1 scale (scores and targets are 0-100); ``beta=0`` gives plain L1."""
    p, t = pred.float() / 100.0, target.float() / 100.0
    if beta <= 0:
        return (p - t).abs().mean()
    return F.smooth_l1_loss(p, t, beta=beta)


def pairwise_rank_loss(pred: torch.Tensor, better: torch.Tensor, margin: float = 0.02) -> torch.Tensor:
    """Hinge ranking loss over ordered pairs.

    ``better[i, j]`` True means sample ``i`` must score above sample ``j`` by at least
    ``margin`` (on the 0-1 scale: scores / 100). Loss = mean over those pairs of
    ``relu(margin - (s_i - s_j))``: zero when every pair is ordered with the margin; 0 when
    there are no pairs.
    """
    s = pred.float() / 100.0
    diff = s[:, None] - s[None, :]
    mask = better.to(torch.bool)
    # no host sync: an empty pair set gives 0 / 1
    return (F.relu(margin - diff) * mask).sum() / mask.sum().clamp(min=1)


def target_pairs(target: torch.Tensor, min_gap: float = 0.0) -> torch.Tensor:
    """``better[i, j] = target[i] - target[j] > min_gap`` (targets on their own scale)."""
    t = target.float()
    return (t[:, None] - t[None, :]) > min_gap


def synthetic_pairs(src: torch.Tensor, dtype: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Pairs whose order is known without labels: same source image, same distortion type (or
    one of them undistorted, level 0), lower level better."""
    same_src = src[:, None] == src[None, :]
    same_type = (dtype[:, None] == dtype[None, :]) | (level[:, None] == 0) | (level[None, :] == 0)
    return same_src & same_type & (level[:, None] < level[None, :])


def supcon_loss(emb: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, "L_out"), on L2-normalised embeddings.

    For each anchor with at least one positive (same label, not itself): minus the mean over
    its positives of ``log softmax`` of the similarity among all other samples.
    """
    z = F.normalize(emb.float(), dim=1)
    n = z.shape[0]
    sim = z @ z.t() / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    has = (n_pos > 0).float()
    mean_log_prob = (log_prob * pos).sum(1) / n_pos.clamp(min=1)
    # anchors without positives are left out (no host sync: an empty set gives 0)
    return -(mean_log_prob * has).sum() / has.sum().clamp(min=1)


def plcc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(1 - Pearson r) / 2``: 0 for perfectly correlated predictions, 1 for anti-correlated."""
    p, t = pred.float(), target.float()
    p, t = p - p.mean(), t - t.mean()
    r = (p * t).sum() / (p.norm() * t.norm() + eps)
    return (1.0 - r) / 2.0


# =========================================================================== images on device


class ImageBank:
    """uint8 images ``(N, S, S, 3)`` kept on ``device``; batches made there, normalised."""

    def __init__(self, images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
                 chunk: int = 256):
        device = torch.device(device)
        src = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        if src.dtype != torch.uint8 or src.ndim != 4 or src.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N,S,S,3) images, got {tuple(src.shape)} {src.dtype}")
        if device.type == "cpu":
            self.data = src
        else:  # upload in chunks (pinned staging would be faster, this is fine for a few GB)
            self.data = torch.empty(src.shape, dtype=torch.uint8, device=device)
            for i in range(0, src.shape[0], chunk):
                self.data[i:i + chunk].copy_(src[i:i + chunk], non_blocking=False)
        self.device = self.data.device  # "cuda:0", not "cuda": compared with tensors' devices
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def size(self) -> int:
        return int(self.data.shape[1])

    def index(self, idx) -> torch.Tensor:
        """Indices as a long tensor on the device, copied without stalling the GPU queue (a
        plain host-to-device copy from pageable memory waits for all queued work)."""
        idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx, dtype=torch.long)
        if idx.device == self.device:
            return idx
        if self.device.type == "cuda":
            return idx.pin_memory().to(self.device, non_blocking=True)
        return idx.to(self.device)

    def generator(self, seed: int) -> torch.Generator:
        """A random generator on the bank's device (augmentation draws stay there)."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def batch(self, idx, augment: bool = False, generator: torch.Generator | None = None,
              max_shift: int = 0, channels_last: bool = False) -> torch.Tensor:
        """Normalised float batch ``(B, 3, S, S)``; ``augment``: random horizontal flips and
        integer shifts up to ``max_shift`` px (reflect padding) - nothing that changes quality.
        ``generator`` must live on the bank's device (:meth:`generator`)."""
        x = self.data[self.index(idx)].permute(0, 3, 1, 2).float()
        if augment:
            b = x.shape[0]
            flip = torch.rand(b, generator=generator, device=x.device) < 0.5
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
            if max_shift > 0:
                x = _random_shift(x, max_shift, generator)
        x = (x - self.mean) / self.std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class TapBank:
    """The frozen backbone's maps of every image of an :class:`ImageBank`, computed once and
    kept in fp16 on its device; used in its place by a :class:`TapModel` (same ``index``,
    ``generator``, ``batch`` interface; ``batch`` returns the maps dict).

    ``mirrored``: the maps of each mirrored image too, which ``augment`` picks at random (the
    flip augmentation). Shifts would need the image, so a tap bank does none: on a 2-core CPU a
    backbone pass per training step costs ~15 s at batch 32, a cached batch a few ms.
    """

    def __init__(self, model: nn.Module, bank: ImageBank, mirrored: bool = False, chunk: int = 16,
                 show_progress: bool = False, desc: str = "backbone maps"):
        self.device, self.n, self.mirrored = bank.device, len(bank), mirrored
        backbone = find_backbone(model)
        was = backbone.training
        backbone.eval()
        views = (False, True) if mirrored else (False,)
        self.taps: dict[str, torch.Tensor] = {}
        bar = progress(total=self.n * len(views), desc=desc, disable=not show_progress)
        with torch.no_grad():
            for v, flip in enumerate(views):
                for i in range(0, self.n, chunk):
                    x = bank.batch(torch.arange(i, min(i + chunk, self.n)))
                    taps = model.backbone_taps(x.flip(-1) if flip else x)
                    for k, t in taps.items():
                        if k not in self.taps:
                            self.taps[k] = torch.empty((self.n * len(views), *t.shape[1:]),
                                                       dtype=torch.float16, device=self.device)
                        self.taps[k][v * self.n + i:v * self.n + i + len(t)] = t.to(torch.float16)
                    bar.update(len(x))
        bar.close()
        backbone.train(was)

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.taps.values())

    def index(self, idx) -> torch.Tensor:
        idx = idx if isinstance(idx, torch.Tensor) else torch.as_tensor(np.asarray(idx))
        return idx.to(device=self.device, dtype=torch.long)

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def batch(self, idx, augment: bool = False, generator: torch.Generator | None = None,
              max_shift: int = 0, channels_last: bool = False) -> dict[str, torch.Tensor]:
        """Float32 maps of ``idx``; ``augment`` picks the mirrored maps at random (``max_shift``
        and ``channels_last`` are accepted for the :class:`ImageBank` interface and unused)."""
        it = self.index(idx)
        if augment and self.mirrored:
            flip = torch.rand(len(it), generator=generator, device=self.device) < 0.5
            it = it + flip.long() * self.n
        return {k: t.index_select(0, it).float() for k, t in self.taps.items()}


class TapModel(nn.Module):
    """A quality model run from cached backbone maps: ``forward(taps) = model.forward_taps(taps)``.

    The backbone is frozen (``requires_grad`` off, so the optimiser and gradient clipping skip
    it) but stays inside, so the training loop's helpers find it; anything else (``distortion``,
    ``aux_loss`` ...) is the wrapped model's. Save and reload the wrapped model, not this.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for p in find_backbone(model).parameters():
            p.requires_grad_(False)

    def forward(self, taps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_taps(taps)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None) -> torch.Tensor:
    """Translate each image by its own integer offset, filling with reflected content."""
    b, _, h, w = x.shape
    m = min(max_shift, h // 4, w // 4)
    if m <= 0:
        return x
    pad = F.pad(x, (m, m, m, m), mode="reflect")
    offs = torch.randint(0, 2 * m + 1, (b, 2), generator=generator, device=x.device)
    rows = offs[:, 0:1] + torch.arange(h, device=x.device)[None]  # (b, h)
    cols = offs[:, 1:2] + torch.arange(w, device=x.device)[None]  # (b, w)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = pad.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (b, h, w, C)
    return out.permute(0, 3, 1, 2)


# =========================================================================== model helpers


def find_backbone(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, EfficientNetLite0):
            return m
    raise ValueError("model has no EfficientNetLite0 backbone")


def set_train_mode(model: nn.Module, freeze_backbone_bn: bool = True) -> None:
    """``model.train()`` with the backbone's BatchNorm layers kept in eval mode (frozen stats)."""
    model.train()
    if freeze_backbone_bn:
        for m in find_backbone(model).modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def param_groups(model: nn.Module, lr_head: float, lr_backbone: float, weight_decay: float):
    backbone_ids = {id(p) for p in find_backbone(model).parameters()}
    groups = {"backbone": ([], []), "head": ([], [])}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = "backbone" if id(p) in backbone_ids else "head"
        # no weight decay on biases, norms, position/bias tables
        (groups[key][1] if p.ndim <= 1 or "bias" in name.split(".")[-1] else groups[key][0]).append(p)
    out = []
    for key, lr in (("backbone", lr_backbone), ("head", lr_head)):
        decay, no_decay = groups[key]
        if decay:
            out.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": key})
        if no_decay:
            out.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": key + "_nd"})
    return out


class CosineSchedule:
    """Linear warm-up then cosine decay to ``min_frac``; ``total`` may be lowered on the way
    (a time budget) and the decay follows."""

    def __init__(self, total: int, warmup_frac: float = 0.05, min_frac: float = 0.01):
        self.total = total
        self.warm = max(1, int(round(warmup_frac * total)))
        self.min_frac = min_frac

    def __call__(self, step: int) -> float:
        if step < self.warm:
            return (step + 1) / self.warm
        t = (step - self.warm) / max(1, self.total - self.warm)
        return self.min_frac + (1 - self.min_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model, lr_head, lr_backbone, weight_decay, total_steps, device_type="cpu"):
    """AdamW (fused on CUDA) over backbone/head groups + a :class:`CosineSchedule`."""
    groups = param_groups(model, lr_head, lr_backbone, weight_decay)
    kw = {"fused": True} if device_type == "cuda" else {}
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), **kw)
    schedule = CosineSchedule(total_steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule), schedule


class DistortionTap:
    """Collects the distortion embedding during the normal forward (no second backbone pass).

    Models with a ``distortion`` sub-module that has ``embed`` (bifusion) get a forward hook on
    it; the embedding is ``distortion.embed(output)``, exactly ``model.distortion_embedding(x)``.
    Other models with ``distortion_embedding`` fall back to calling it (a second pass).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.last = None
        mod = getattr(model, "distortion", None)
        self.hook = None
        if mod is not None and hasattr(mod, "embed"):
            self.hook = mod.register_forward_hook(self._grab)

    def _grab(self, module, inputs, output):
        self.last = output

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        if self.hook is not None and self.last is not None:
            out, self.last = self.model.distortion.embed(self.last), None
            return out
        return self.model.distortion_embedding(x)

    def close(self):
        if self.hook is not None:
            self.hook.remove()


def has_distortion_embedding(model: nn.Module) -> bool:
    return callable(getattr(model, "distortion_embedding", None))


def aux_loss_of(model: nn.Module) -> torch.Tensor | None:
    a = getattr(model, "aux_loss", None)
    if isinstance(a, torch.Tensor) and a.requires_grad:
        return a.float()
    return None


# =========================================================================== logging


class LossLog:
    """JSON-lines loss log, one object per logged step/epoch (``path=None``: not kept)."""

    def __init__(self, path: str | Path | None):
        self._f = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "a", buffering=1)

    def write(self, **row) -> None:
        if self._f:
            row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
            self._f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        if self._f:
            self._f.close()


def progress(iterable=None, **kw):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    kw.setdefault("mininterval", 0.5 if tty else 15.0)
    kw.setdefault("leave", False)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kw)


# =========================================================================== configs


@dataclass
class Stage1Config:
    epochs: float = 2.0
    types_per_batch: int = 4
    images_per_type: int = 3  # batch = types x images x 6 (levels 0..5)
    lr_head: float = 5e-4
    lr_backbone: float = 5e-5
    weight_decay: float = 0.01
    w_reg: float = 1.0
    w_rank: float = 1.0
    w_con: float = 0.1
    w_aux: float = 0.01
    margin: float = 0.02
    temperature: float = 0.1
    grad_clip: float = 1.0
    max_shift: int = 8


@dataclass
class Stage2Config:
    epochs: int = 30
    batch_size: int = 32
    lr_head: float = 3e-4
    lr_backbone: float = 3e-5
    weight_decay: float = 0.01
    w_l1: float = 1.0
    w_plcc: float = 1.0
    w_rank: float = 1.0
    w_aux: float = 0.01
    margin: float = 0.02
    rank_min_gap: float = 3.0  # MOS points
    grad_clip: float = 1.0
    max_shift: int = 8
    freeze_bn: bool = True


@dataclass
class Runtime:
    device: torch.device
    amp: bool = False  # bf16 autocast (CUDA)
    channels_last: bool = False
    eval_batch: int = 64
    show_progress: bool = True
    eval_amp: bool = False  # evaluation in fp32 (TF32) by default: exact scores, few ties

    def autocast(self, train: bool = True):
        if self.amp and (train or self.eval_amp):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)


# =========================================================================== stage 1


@dataclass
class SyntheticLabels:
    """Per-row tensors of a synthetic set (on CPU) for the sampler and the losses."""

    src: torch.Tensor
    dtype: torch.Tensor
    level: torch.Tensor
    target: torch.Tensor  # 0-100


class ChainSampler:
    """Batches of whole chains: ``types_per_batch`` distortion types, for each
    ``images_per_type`` images having it, each with levels 1..5 and its undistorted row.

    So every batch holds within-image ranking pairs and, for SupCon, ``images_per_type``
    samples of each (type, level) class.
    """

    def __init__(self, labels: SyntheticLabels, rows: np.ndarray, types_per_batch: int,
                 images_per_type: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tpb, self.ipt = types_per_batch, images_per_type
        rows = np.asarray(rows)
        src = labels.src.numpy()[rows]
        dtype = labels.dtype.numpy()[rows]
        level = labels.level.numpy()[rows]
        ref_row = {int(s): int(r) for r, s, lv in zip(rows, src, level) if lv == 0}
        chains: dict[int, list[list[int]]] = {}
        grouped: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for r, s, t, lv in zip(rows, src, dtype, level):
            if lv > 0:
                grouped.setdefault((int(s), int(t)), []).append((int(lv), int(r)))
        for (s, t), items in grouped.items():
            chain = [r for _, r in sorted(items)]
            if s in ref_row:
                chain = [ref_row[s]] + chain
            chains.setdefault(t, []).append(chain)
        self.chains = chains
        self.types = sorted(chains)
        if not self.types:
            raise ValueError("no distortion chains to sample")
        self.rows_per_batch = min(self.tpb, len(self.types)) * self.ipt * 6

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        types = self.rng.choice(self.types, size=min(self.tpb, len(self.types)), replace=False)
        out = []
        for t in types:
            pool = self.chains[int(t)]
            pick = self.rng.choice(len(pool), size=self.ipt, replace=len(pool) < self.ipt)
            for k in pick:
                out.extend(pool[int(k)])
        return np.asarray(out)


def train_stage1(model: nn.Module, bank: ImageBank, labels: SyntheticLabels, rows: np.ndarray,
                 cfg: Stage1Config, rt: Runtime, log: LossLog, seed: int,
                 contrastive: bool = True, max_seconds: float | None = None) -> dict:
    """Pre-train ``model`` on the synthetic rows ``rows``; returns stats (steps, time, losses).

    ``max_seconds``: after 20 steps the step time is measured and the number of steps lowered
    (the cosine decay shortened with it) if the planned ones would not fit.
    """
    torch.manual_seed(seed)
    gen = bank.generator(seed)
    sampler = ChainSampler(labels, rows, cfg.types_per_batch, cfg.images_per_type, seed)
    dev_labels = SyntheticLabels(*(t.to(rt.device) for t in (labels.src, labels.dtype, labels.level,
                                                             labels.target)))
    planned = steps = max(1, int(round(cfg.epochs * len(rows) / sampler.rows_per_batch)))
    opt, sched, schedule = make_optimizer(model, cfg.lr_head, cfg.lr_backbone, cfg.weight_decay, steps,
                                          device_type=rt.device.type)
    use_con = contrastive and has_distortion_embedding(model) and cfg.w_con > 0
    tap = DistortionTap(model) if use_con else None
    set_train_mode(model)
    t0 = time.perf_counter()
    hist: list[dict] = []
    pending: list[torch.Tensor] = []
    bar = progress(total=steps, desc="stage 1", disable=not rt.show_progress)
    step, t_calib = 0, None
    while step < steps:
        idx = next(sampler)
        it = bank.index(idx)
        x = bank.batch(it, augment=True, generator=gen, max_shift=cfg.max_shift,
                       channels_last=rt.channels_last)
        tgt, src, dty, lvl = (dev_labels.target[it], dev_labels.src[it], dev_labels.dtype[it],
                              dev_labels.level[it])
        with rt.autocast():
            scores, _ = model(x)
            emb = tap.embedding(x) if use_con else None
        parts = {"reg": regression_loss(scores, tgt),
                 "rank": pairwise_rank_loss(scores, synthetic_pairs(src, dty, lvl), cfg.margin)}
        loss = cfg.w_reg * parts["reg"] + cfg.w_rank * parts["rank"]
        if use_con:
            cls = torch.where(lvl == 0, torch.zeros_like(lvl), (dty + 1) * 8 + lvl)
            parts["con"] = supcon_loss(emb, cls, cfg.temperature)
            loss = loss + cfg.w_con * parts["con"]
        aux = aux_loss_of(model)
        if aux is not None and cfg.w_aux > 0:
            parts["aux"] = aux
            loss = loss + cfg.w_aux * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        pending.append(torch.stack([loss.detach(), *[v.detach().float() for v in parts.values()]]))
        if step % 10 == 0 or step == steps - 1:  # one host sync per logged step, not per step
            vals = torch.stack(pending).cpu().numpy()
            pending.clear()
            if not np.isfinite(vals).all():
                raise FloatingPointError(f"stage 1: non-finite loss before step {step}: {vals[-1]}")
            keys = ["loss", *parts.keys()]
            hist.extend({k: float(v) for k, v in zip(keys, r)} for r in vals)
            row = hist[-1]
            log.write(stage="stage1", step=step, epoch=round(step * sampler.rows_per_batch / len(rows), 3),
                      lr=sched.get_last_lr()[-1], t=round(time.perf_counter() - t0, 2), **row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            # time budget: measure steps 10..20 (after cuDNN's autotuning), then cap the plan
            if step == 10:
                t_calib = time.perf_counter()
            elif step == 20 and t_calib is not None and max_seconds:
                per_step = (time.perf_counter() - t_calib) / 10
                fit = int((max_seconds - (time.perf_counter() - t0)) / per_step) + step + 1
                if fit < steps:
                    steps = schedule.total = max(step + 1, fit)
                    bar.total = steps
        step += 1
        bar.update(1)
    bar.close()
    if tap:
        tap.close()
    return {"steps": steps, "planned_steps": planned, "batch": sampler.rows_per_batch,
            "seconds": time.perf_counter() - t0,
            "first_loss": _mean_loss(hist[: max(1, len(hist) // 10)]),
            "last_loss": _mean_loss(hist[-max(1, len(hist) // 10):]), "contrastive": use_con}


def _mean_loss(rows: list[dict]) -> float:
    return float(np.mean([r["loss"] for r in rows])) if rows else math.nan


# =========================================================================== stage 2


def _stage2_step(model, opt, bank, mos_t, idx, cfg: Stage2Config, rt: Runtime, gen):
    """One optimiser step on the images ``idx``: ``(loss names, stacked detached losses)``."""
    it = bank.index(idx)
    x = bank.batch(it, augment=True, generator=gen, max_shift=cfg.max_shift, channels_last=rt.channels_last)
    y = mos_t[it]
    with rt.autocast():
        scores, _ = model(x)
    parts = {"l1": regression_loss(scores, y, beta=0.0), "plcc": plcc_loss(scores, y),
             "rank": pairwise_rank_loss(scores, target_pairs(y, cfg.rank_min_gap), cfg.margin)}
    loss = cfg.w_l1 * parts["l1"] + cfg.w_plcc * parts["plcc"] + cfg.w_rank * parts["rank"]
    aux = aux_loss_of(model)
    if aux is not None and cfg.w_aux > 0:
        parts["aux"] = aux
        loss = loss + cfg.w_aux * aux
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return ["loss", *parts], torch.stack([loss.detach(), *[v.detach().float() for v in parts.values()]])


def stage2_step_seconds(model: nn.Module, bank: ImageBank, mos: np.ndarray, train_idx: np.ndarray,
                        cfg: Stage2Config, rt: Runtime, steps: int = 12, skip: int = 4) -> float:
    """Seconds per stage-2 step, timed on ``steps - skip`` real steps (the model is changed:
    reload its weights afterwards)."""
    gen = bank.generator(0)
    rng = np.random.default_rng(0)
    bs = min(cfg.batch_size, len(train_idx))
    opt, _, _ = make_optimizer(model, cfg.lr_head, cfg.lr_backbone, cfg.weight_decay, steps,
                               device_type=rt.device.type)
    mos_t = torch.as_tensor(np.asarray(mos, np.float32), device=rt.device)
    set_train_mode(model, cfg.freeze_bn)
    t0 = None
    for i in range(steps):
        if i == skip:
            _sync(rt.device)
            t0 = time.perf_counter()
        _stage2_step(model, opt, bank, mos_t, rng.choice(train_idx, bs, replace=False), cfg, rt, gen)
    _sync(rt.device)
    return (time.perf_counter() - t0) / (steps - skip)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_stage2(model: nn.Module, bank: ImageBank, mos: np.ndarray, train_idx: np.ndarray,
                 cfg: Stage2Config, rt: Runtime, log: LossLog, seed: int, tag: str = "final",
                 eval_fn: Callable[[nn.Module], dict] | None = None, eval_every: int = 0) -> dict:
    """Fine-tune on MOS of ``train_idx`` (indices into ``bank``/``mos``); returns stats with the
    mean loss of every epoch (``epoch_loss``)."""
    torch.manual_seed(seed)
    gen = bank.generator(seed)
    rng = np.random.default_rng(seed)
    train_idx = np.asarray(train_idx)
    bs = min(cfg.batch_size, len(train_idx))
    per_epoch = max(1, len(train_idx) // bs)  # drop the ragged last batch (PLCC needs pairs)
    steps = per_epoch * cfg.epochs
    opt, sched, _ = make_optimizer(model, cfg.lr_head, cfg.lr_backbone, cfg.weight_decay, steps,
                                   device_type=rt.device.type)
    mos_t = torch.as_tensor(np.asarray(mos, np.float32), device=rt.device)
    t0 = time.perf_counter()
    epoch_loss, evals = [], []
    bar = progress(total=steps, desc=f"stage 2 [{tag}]", disable=not rt.show_progress)
    step = 0
    for epoch in range(cfg.epochs):
        set_train_mode(model, cfg.freeze_bn)
        perm = rng.permutation(train_idx)
        losses = []
        for b in range(per_epoch):
            keys, vals = _stage2_step(model, opt, bank, mos_t, perm[b * bs:(b + 1) * bs], cfg, rt, gen)
            sched.step()
            losses.append(vals)
            step += 1
            bar.update(1)
        vals = torch.stack(losses).cpu().numpy()  # one host sync per epoch
        if not np.isfinite(vals).all():
            raise FloatingPointError(f"stage 2 [{tag}]: non-finite loss in epoch {epoch + 1}")
        mean = dict(zip(keys, (float(v) for v in vals.mean(0))))
        epoch_loss.append(mean["loss"])
        row = {"stage": "stage2", "run": tag, "epoch": epoch + 1, "step": step,
               "lr": sched.get_last_lr()[-1], "t": round(time.perf_counter() - t0, 2), **mean}
        if eval_fn is not None and eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == cfg.epochs):
            m = eval_fn(model)
            evals.append({"epoch": epoch + 1, **m})
            row.update({f"val_{k}": v for k, v in m.items()})
        log.write(**row)
        bar.set_postfix(loss=f"{mean['loss']:.4f}")
    bar.close()
    return {"steps": steps, "batch": bs, "epochs": cfg.epochs, "seconds": time.perf_counter() - t0,
            "epoch_loss": epoch_loss, "evals": evals}


# =========================================================================== inference


@torch.no_grad()
def predict(model: nn.Module, bank: ImageBank, idx, rt: Runtime) -> np.ndarray:
    """Scores (0-100) of ``bank[idx]``, whole images, no augmentation, eval mode."""
    modes = {m: m.training for m in model.modules()}  # restored as they were (frozen BN stays)
    model.eval()
    idx = np.asarray(idx)
    out = []
    for i in range(0, len(idx), rt.eval_batch):
        x = bank.batch(idx[i:i + rt.eval_batch], channels_last=rt.channels_last)
        with rt.autocast(train=False):
            s, _ = model(x)
        out.append(s.float().cpu())
    for m, mode in modes.items():
        m.training = mode
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


@torch.no_grad()
def embed(fn: Callable[[torch.Tensor], torch.Tensor], bank: ImageBank, idx, rt: Runtime) -> np.ndarray:
    """Any ``fn(x) -> (B, D)`` over ``bank[idx]`` (e.g. ``model.semantic_embedding``)."""
    idx = np.asarray(idx)
    out = []
    for i in range(0, len(idx), rt.eval_batch):
        x = bank.batch(idx[i:i + rt.eval_batch], channels_last=rt.channels_last)
        with rt.autocast(train=False):
            out.append(fn(x).float().cpu())
    return torch.cat(out).numpy()


def synthetic_test(scores: np.ndarray, src: np.ndarray, dtype: np.ndarray, level: np.ndarray) -> dict:
    """Within-image agreement of predicted scores with distortion level (held-out images).

    ``srocc_image``: per source image, Spearman correlation of score with ``-level`` over all
    its rows (every type, levels 0..5); ``srocc_chain``: per (image, type) chain including the
    undistorted image. Medians (and means) across images/chains.
    """
    from scipy.stats import spearmanr

    per_img, per_chain = [], []
    for s in np.unique(src):
        m = src == s
        if np.ptp(level[m]) > 0:
            per_img.append(float(spearmanr(scores[m], -level[m]).statistic))
        for t in np.unique(dtype[m & (level > 0)]):
            c = m & ((dtype == t) | (level == 0))
            if c.sum() >= 3:
                per_chain.append(float(spearmanr(scores[c], -level[c]).statistic))
    per_img = [v for v in per_img if np.isfinite(v)]
    per_chain = [v for v in per_chain if np.isfinite(v)]
    return {"images": len(per_img), "srocc_image_median": float(np.median(per_img)) if per_img else math.nan,
            "srocc_image_mean": float(np.mean(per_img)) if per_img else math.nan,
            "chains": len(per_chain),
            "srocc_chain_median": float(np.median(per_chain)) if per_chain else math.nan,
            "srocc_chain_mean": float(np.mean(per_chain)) if per_chain else math.nan}


def config_dict(cfg) -> dict:
    return asdict(cfg)
