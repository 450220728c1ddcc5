"""Small reusable layers for the quality models (timm style).

Every layer works on any spatial size (odd ones included: 7x7, 10x10, ...), uses no Python
control flow on tensor *values* (only on shapes), and traces cleanly for ``torch.onnx.export``
(opset 17/18) and ``torch.compile``. Attention goes through ``F.scaled_dot_product_attention``.
Maps are ``(B, C, H, W)``; token sequences are ``(B, N, C)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# additive attention-mask value for keys that do not exist (padding); finite so fp16 is safe
MASKED = -1e4


def _exporting() -> bool:
    """True while torch.export / torch.onnx / jit tracing run (skip training-only side outputs)."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_exporting()
                or torch.onnx.is_in_onnx_export())


def init_weights(module: nn.Module) -> None:
    """timm-style init: truncated normal (std .02) for linear/1x1 weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B,C,H,W) map (each pixel normalised on its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """Token MLP: Linear -> GELU -> Linear, on the last dimension."""

    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvMlp(nn.Module):
    """Per-pixel MLP on a (B,C,H,W) map: 1x1 conv -> GELU -> 1x1 conv."""

    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, out or dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DWConvBlock(nn.Module):
    """Depthwise-separable conv: depthwise 3x3 (optionally strided) -> pointwise -> GELU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pw(self.dw(x)))


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B,heads,N,d) attention output -> (B,N,heads*d).

    The explicit contiguous copy keeps torch.onnx's dynamo export working: its SDPA
    decomposition returns a different memory layout than the eager CPU kernel, and the view
    recorded at trace time would then fail (pytorch/pytorch#136543).
    """
    b, h, n, d = x.shape
    return x.transpose(1, 2).clone(memory_format=torch.contiguous_format).reshape(b, n, h * d)


# --------------------------------------------------------------------------- window helpers

def _pad_hw(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-pad a channels-last (B,H,W,C) map at the bottom/right to a multiple of ``window``."""
    ph = (window - x.shape[1] % window) % window
    pw = (window - x.shape[2] % window) % window
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    return x


def _windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B,Hp,Wp,C) -> (B*nW, window*window, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def _unwindows(x: torch.Tensor, window: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``_windows``: (B*nW, window*window, C) -> (B,h,w,C) for padded h, w."""
    c = x.shape[-1]
    x = x.reshape(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def _relative_index(q_size: int, k_size: int) -> tuple[torch.Tensor, int]:
    """Index into a relative-position table for a q_size^2 window centred in a k_size^2 one.

    Returns the (q_size^2, k_size^2) index and the table side (q_size + k_size - 1).
    """
    off = (k_size - q_size) // 2
    qy, qx = torch.meshgrid(torch.arange(q_size) + off, torch.arange(q_size) + off, indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(k_size), torch.arange(k_size), indexing="ij")
    dy = qy.reshape(-1, 1) - ky.reshape(1, -1) + (k_size - 1 - off)
    dx = qx.reshape(-1, 1) - kx.reshape(1, -1) + (k_size - 1 - off)
    side = q_size + k_size - 1
    return dy * side + dx, side


class _RelPosBias(nn.Module):
    """Learned relative-position bias (heads, Nq, Nk) between a query and a key window."""

    def __init__(self, heads: int, q_size: int, k_size: int):
        super().__init__()
        index, side = _relative_index(q_size, k_size)
        self.table = nn.Parameter(torch.zeros(side * side, heads))
        nn.init.trunc_normal_(self.table, std=0.02)
        self.register_buffer("index", index.reshape(-1), persistent=False)
        self.nq, self.nk = q_size * q_size, k_size * k_size

    def forward(self) -> torch.Tensor:
        bias = self.table[self.index].reshape(self.nq, self.nk, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, Nq, Nk)


class WindowAttention(nn.Module):
    """Swin-style block: multi-head self-attention inside non-overlapping windows, then MLP.

    (B,C,H,W) -> (B,C,H,W). H, W are zero-padded up to a multiple of ``window`` and padded keys
    are masked out, so a pixel's output depends only on the real pixels of its own window.
    """

    def __init__(self, dim: int, num_heads: int = 4, window: int = 8, mlp_ratio: float = 2.0):
        super().__init__()
        assert dim % num_heads == 0
        self.dim, self.heads, self.window = dim, num_heads, window
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_bias = _RelPosBias(num_heads, window, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        init_weights(self)

    def _mask(self, x: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        bias = self.rel_bias()  # (1, heads, N, N)
        hp, wp = x.shape[1], x.shape[2]
        if hp == h and wp == w:
            return bias.to(x.dtype)
        valid = x.new_ones(1, h, w, 1)
        valid = _windows(_pad_hw(valid, self.window), self.window)  # (nW, N, 1)
        key_mask = (1.0 - valid.transpose(1, 2)).unsqueeze(1) * MASKED  # (nW, 1, 1, N)
        mask = (bias + key_mask).unsqueeze(0).expand(b, -1, -1, -1, -1)
        return mask.reshape(-1, self.heads, bias.shape[-2], bias.shape[-1]).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1)
        y = _pad_hw(self.norm1(t), self.window)
        hp, wp = y.shape[1], y.shape[2]
        win = _windows(y, self.window)  # (B*nW, N, C)
        n = win.shape[1]
        qkv = self.qkv(win).reshape(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                             attn_mask=self._mask(y, b, h, w))
        out = self.proj(_merge_heads(out))
        out = _unwindows(out, self.window, b, hp, wp)[:, :h, :w]
        t = t + out
        t = t + self.mlp(self.norm2(t))
        return t.permute(0, 3, 1, 2)


class OverlappingCrossWindowAttention(nn.Module):
    """HAT's OCAB: queries from each ``window``-sized window, keys/values from the larger
    ``window*(1+overlap_ratio)`` window centred on it (neighbours overlap), relative-position
    bias; residual + MLP. (B,C,H,W) -> (B,C,H,W); receptive field = the larger window.
    """

    def __init__(self, dim: int, num_heads: int = 4, window: int = 8, overlap_ratio: float = 0.5,
                 mlp_ratio: float = 2.0):
        super().__init__()
        assert dim % num_heads == 0
        self.dim, self.heads, self.window = dim, num_heads, window
        # the margin around the query window must be whole pixels on each side
        margin = max(1, round(window * overlap_ratio / 2))
        self.kv_window = window + 2 * margin
        self.margin = margin
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_bias = _RelPosBias(num_heads, window, self.kv_window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        init_weights(self)

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,Hp,Wp) -> (B*nW, kv_window^2, C) overlapping windows (zero outside the map)."""
        b, c = x.shape[0], x.shape[1]
        k = self.kv_window
        cols = F.unfold(x, kernel_size=k, stride=self.window, padding=self.margin)
        cols = cols.reshape(b, c, k * k, -1)  # (B, C, k*k, nW)
        return cols.permute(0, 3, 2, 1).reshape(-1, k * k, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1)
        y = _pad_hw(self.norm1(t), self.window)
        hp, wp = y.shape[1], y.shape[2]
        q = _windows(self.q(y), self.window)  # (B*nW, N, C)
        kv = self._unfold(self.kv(y).permute(0, 3, 1, 2))  # (B*nW, M, 2C)
        n, m, d = q.shape[1], kv.shape[1], c // self.heads
        q = q.reshape(-1, n, self.heads, d).transpose(1, 2)
        kv = kv.reshape(-1, m, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        # keys outside the image (unfold's border padding or the pad to a window multiple)
        valid = F.pad(x.new_ones(1, 1, h, w), (0, wp - w, 0, hp - h))
        valid = F.unfold(valid, kernel_size=self.kv_window, stride=self.window,
                         padding=self.margin)  # (1, M, nW)
        key_mask = ((1.0 - valid).permute(2, 0, 1) * MASKED).unsqueeze(1)  # (nW, 1, 1, M)
        mask = (self.rel_bias() + key_mask).unsqueeze(0).expand(b, -1, -1, -1, -1)
        mask = mask.reshape(-1, self.heads, n, m).to(x.dtype)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        out = self.proj(_merge_heads(out))
        out = _unwindows(out, self.window, b, hp, wp)[:, :h, :w]
        t = t + out
        t = t + self.mlp(self.norm2(t))
        return t.permute(0, 3, 1, 2)


class ChannelAttention(nn.Module):
    """Transposed (channel-wise) self-attention, Restormer MDTA / MANIQA style, + conv MLP.

    Per head the attention matrix is (C/heads x C/heads) between L2-normalised channel
    vectors, scaled by a learned temperature; q/k/v get a depthwise 3x3 conv. Residual.
    """

    def __init__(self, dim: int, num_heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        assert dim % num_heads == 0
        self.heads = num_heads
        self.norm1 = LayerNorm2d(dim)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.qkv_dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.proj = nn.Conv2d(dim, dim, 1)
        self.mlp_ratio = mlp_ratio
        if mlp_ratio > 0:
            self.norm2 = LayerNorm2d(dim)
            self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv_dw(self.qkv(self.norm1(x))).reshape(b, 3, self.heads, c // self.heads, h * w)
        q = F.normalize(qkv[:, 0], dim=-1) * self.temperature
        k = F.normalize(qkv[:, 1], dim=-1)
        # channels play the role of tokens, pixels the role of features
        out = F.scaled_dot_product_attention(q, k, qkv[:, 2], scale=1.0)
        x = x + self.proj(out.reshape(b, c, h, w))
        if self.mlp_ratio > 0:
            x = x + self.mlp(self.norm2(x))
        return x


class SpatialInteraction(nn.Module):
    """Depthwise-conv enhancement (gated): norm -> 1x1 -> dw 3x3 -> GELU(a)*b -> 1x1, residual."""

    def __init__(self, dim: int, expansion: float = 2.0):
        super().__init__()
        hidden = int(dim * expansion)
        self.norm = LayerNorm2d(dim)
        self.pw_in = nn.Conv2d(dim, 2 * hidden, 1)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.pw_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.dw(self.pw_in(self.norm(x))).chunk(2, dim=1)
        return x + self.pw_out(F.gelu(g) * a)


class MoECrossAttention(nn.Module):
    """Image tokens query distortion tokens (multi-head cross-attention), then a
    mixture-of-experts FFN: a router sends each token to its top-k of n expert MLPs, whose
    outputs are mixed by the renormalised (softmax over the chosen k) router weights.

    ``x`` (B,N,dim), ``context`` (B,M,context_dim) -> (B,N,dim). After each forward,
    ``self.aux_loss`` holds the Switch-Transformer load-balancing loss
    ``n * sum_i f_i * P_i`` (f: share of routed slots, P: mean router probability; 1 when
    balanced, up to n when collapsed) as a 0-dim tensor. The experts are evaluated densely
    and masked (n is small), so nothing depends on tensor values: export/compile friendly.
    """

    def __init__(self, dim: int, context_dim: int | None = None, num_heads: int = 4,
                 num_experts: int = 4, top_k: int = 2, mlp_ratio: float = 2.0):
        super().__init__()
        assert dim % num_heads == 0 and 1 <= top_k <= num_experts
        context_dim = context_dim or dim
        self.heads, self.num_experts, self.top_k = num_heads, num_experts, top_k
        self.norm_q = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(context_dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.router = nn.Linear(dim, num_experts)
        self.experts = nn.ModuleList(Mlp(dim, int(dim * mlp_ratio)) for _ in range(num_experts))
        init_weights(self)
        self.aux_loss = torch.zeros(())

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router on tokens (B,N,dim): dense gates (B,N,n) with exactly top_k non-zeros per
        token (summing to 1), and the load-balancing loss (0-dim)."""
        logits = self.router(x).float()  # route in fp32 (stable under fp16/autocast)
        top_val, top_idx = logits.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, top_idx, torch.softmax(top_val, dim=-1))
        probs = torch.softmax(logits, dim=-1).reshape(-1, self.num_experts)
        chosen = torch.zeros_like(logits).scatter(-1, top_idx, 1.0).reshape(-1, self.num_experts)
        share = chosen.mean(0) / self.top_k
        aux = self.num_experts * (share * probs.mean(0)).sum()
        return gates, aux

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        m, d = context.shape[1], c // self.heads
        q = self.q(self.norm_q(x)).reshape(b, n, self.heads, d).transpose(1, 2)
        kv = self.kv(self.norm_ctx(context)).reshape(b, m, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        x = x + self.proj(_merge_heads(out))
        y = self.norm2(x)
        gates, aux = self.route(y)
        experts = torch.stack([e(y) for e in self.experts], dim=-2)  # (B,N,n,dim)
        x = x + (gates.to(experts.dtype).unsqueeze(-1) * experts).sum(dim=-2)
        if not _exporting():
            self.aux_loss = aux
        return x


class BidirectionalFusion(nn.Module):
    """FPN top-down (upsample high levels into low ones) then PAN bottom-up (strided conv
    from low levels back up) over maps ordered fine -> coarse; all projected to ``dim``.
    Returns the fused maps, fine -> coarse, each at its input's resolution.
    """

    def __init__(self, in_channels: Sequence[int], dim: int):
        super().__init__()
        levels = len(in_channels)
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.td_smooth = nn.ModuleList(DWConvBlock(dim, dim) for _ in range(levels - 1))
        self.bu_down = nn.ModuleList(DWConvBlock(dim, dim, stride=2) for _ in range(levels - 1))
        self.bu_smooth = nn.ModuleList(DWConvBlock(dim, dim) for _ in range(levels - 1))

    @staticmethod
    def _match(x: torch.Tensor, ref: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        if x.shape[-2:] == ref.shape[-2:]:
            return x
        if mode == "nearest":
            return F.interpolate(x, size=ref.shape[-2:], mode="nearest")
        return F.interpolate(x, size=ref.shape[-2:], mode=mode, align_corners=False)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        levels = len(lat)
        # top-down: coarsest stays, each finer level adds the (nearest-)upsampled coarser one
        td = [lat[-1]]
        for i in range(levels - 2, -1, -1):
            td.insert(0, self.td_smooth[i](lat[i] + self._match(td[0], lat[i], "nearest")))
        # bottom-up: finest stays, each coarser level adds the downsampled finer one
        out = [td[0]]
        for i in range(1, levels):
            down = self._match(self.bu_down[i - 1](out[-1]), td[i])
            out.append(self.bu_smooth[i - 1](td[i] + down))
        return out


class QualityHead(nn.Module):
    """Per-cell quality and weight from a (B,C,h,w) map: q = 100*sigmoid(.), w = softplus(.)+eps;
    score = sum(w*q)/sum(w). Returns (scores (B,), maps (B,h,w)) - the map is the score's
    own breakdown (the score is a weighted mean of the cells).
    """

    def __init__(self, dim: int, hidden: int = 64, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.norm = LayerNorm2d(dim)
        self.mlp = ConvMlp(dim, hidden, 2)
        nn.init.normal_(self.mlp.fc2.weight, std=0.01)
        nn.init.zeros_(self.mlp.fc2.bias)

    def cells(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell quality (B,h,w) in [0,100] and positive weight (B,h,w)."""
        out = self.mlp(self.norm(x))
        q = 100.0 * torch.sigmoid(out[:, 0])
        w = F.softplus(out[:, 1]) + self.eps
        return q, w

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, w = self.cells(x)
        score = (q * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2))
        return score, q
