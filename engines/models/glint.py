"""Model B, "glint": global-local progressive integration (after GlintIQA).

After Wang & Zhang, *No-Reference Image Quality Assessment with Global-Local Progressive
Integration and Semantic-Aligned Quality Transfer* (arXiv 2408.03885). Pipeline::

    Lite0 ──► s32 (320ch) + head (1280ch) ──► 1x1 proj ──► 4 global self-attention layers
                                              (conditional position encoding) ──► g1..g4
    Lite0 ──► s4 / s8 / s16 ──► conv k=s=8 / 4 / 2 (multi-scale kernel alignment onto the
              stride-32 token grid) ──► concat ──► channel-wise self-attention ──► local
    local ──► 4 stages: merge g_i (concat + 1x1), then ChannelAttention / SpatialInteraction
              alternately ──► QualityHead (per-cell quality + weight, stride-32 grid)
    semantic_embedding(x): global-average-pooled 1280-ch backbone head (B,1280), for the
    semantic-aligned quality transfer done in training.

Where and why this departs from the paper:

- No pretrained ViT is available here, so the "global" branch is a hybrid ViT: global
  multi-head self-attention over CNN tokens (the backbone's stride-32 maps), trained from
  scratch, with a depthwise-conv position encoding (CPVT style) so any input size works. The
  four "ViT depths" are the outputs of its four layers.
- One shared backbone (EfficientNet-Lite0) feeds both the global and the local branch; the
  paper uses separate ViT and CNN networks. The token grid is stride 32, not the ViT's 16,
  so the alignment kernels are 8/4/2 instead of 4/2/1.
- Output head: the paper regresses the score with a single 2-layer MLP on pooled features;
  here a per-cell MLP gives quality and a positive weight per cell (``QualityHead``), so the
  score is the weighted mean of a region map (stride 32: 12x12 at 384). Multi-crop test-time
  averaging is replaced by whole-frame scoring (see ``engines.preprocess``).
- Sizes (token dim 160, 4 heads, 4 layers, local channels 3x64) are chosen for CPU cost:
  5.9 M parameters (2.5 M outside the backbone); at 384x384 on 2 CPU threads it takes about
  1.3x the bare backbone's time at batch 1 and 1.2x at batch 8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import HEAD_CHANNELS, load_pretrained_backbone
from ..layers import (
    ChannelAttention,
    LayerNorm2d,
    Mlp,
    QualityHead,
    SpatialInteraction,
    init_weights,
)
from .base import QualityModel


class TransformerLayer(nn.Module):
    """Pre-norm global self-attention + MLP on tokens (B,N,C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        # explicit copy: see engines.layers._merge_heads (keeps dynamo ONNX export working)
        out = out.transpose(1, 2).clone(memory_format=torch.contiguous_format).reshape(b, n, c)
        x = x + self.proj(out)
        return x + self.mlp(self.norm2(x))


class GlobalBranch(nn.Module):
    """Hybrid ViT on the stride-32 grid; returns the token maps after each of its layers."""

    def __init__(self, in_channels: int, dim: int, depth: int, num_heads: int):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, 1)
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)  # conditional position enc.
        self.layers = nn.ModuleList(TransformerLayer(dim, num_heads) for _ in range(depth))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed(x)
        x = x + self.pos(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        outs = []
        for layer, norm in zip(self.layers, self.norms):
            t = layer(t)
            outs.append(norm(t).transpose(1, 2).reshape(b, c, h, w))
        return outs


class GlintIQA(QualityModel):
    """Global-local progressive integration on a shared Lite0 backbone."""

    name = "glint"
    map_stride = 32
    input_size = 384

    def __init__(self, dim: int = 160, local_dim: int = 64, depth: int = 4, num_heads: int = 4,
                 pretrained: bool = True):
        super().__init__()
        if pretrained:
            self.backbone = load_pretrained_backbone(drop_classifier=True)
        else:  # architecture only; real use always loads ImageNet weights
            from ..backbone import EfficientNetLite0
            self.backbone = EfficientNetLite0()
            del self.backbone._fc
        self.global_branch = GlobalBranch(320 + HEAD_CHANNELS, dim, depth, num_heads)
        # multi-scale kernel alignment: kernel = stride lands each map on the stride-32 grid
        self.align = nn.ModuleList([nn.Conv2d(24, local_dim, 8, stride=8),
                                    nn.Conv2d(40, local_dim, 4, stride=4),
                                    nn.Conv2d(112, local_dim, 2, stride=2)])
        self.local_norm = LayerNorm2d(3 * local_dim)
        self.local_attn = ChannelAttention(3 * local_dim, num_heads)
        self.to_dim = nn.Conv2d(3 * local_dim, dim, 1)
        self.merge = nn.ModuleList(nn.Conv2d(2 * dim, dim, 1) for _ in range(depth))
        self.stages = nn.ModuleList(
            ChannelAttention(dim, num_heads) if i % 2 == 0 else SpatialInteraction(dim)
            for i in range(depth))
        self.head = QualityHead(dim)
        init_weights(self.global_branch)

    @property
    def aux_loss(self) -> torch.Tensor:
        """No auxiliary loss in this model (kept for a uniform training loop): 0."""
        return self.head.norm.weight.new_zeros(())

    def semantic_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) -> (B,1280): pooled backbone head features (semantic similarity)."""
        return self.backbone.forward_features(x, with_head=True)["head"].mean(dim=(2, 3))

    def backbone_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The backbone maps the rest of the model reads; ``forward(x)`` is
        ``forward_taps(backbone_taps(x))`` (a frozen-backbone stage caches these)."""
        return self.backbone.forward_features(x, with_head=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_taps(self.backbone_taps(x))

    def forward_taps(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything after the backbone: ``backbone_taps`` output -> ``(scores, maps)``."""
        glob = self.global_branch(torch.cat([feats["s32"], feats["head"]], dim=1))
        grid = feats["s32"].shape[-2:]
        local = []
        for conv, key in zip(self.align, ("s4", "s8", "s16")):
            t = conv(feats[key])
            if t.shape[-2:] != grid:  # only for sizes that are not multiples of 32
                t = F.interpolate(t, size=grid, mode="bilinear", align_corners=False)
            local.append(t)
        z = self.local_attn(self.local_norm(torch.cat(local, dim=1)))
        z = self.to_dim(z)
        for merge, stage, g in zip(self.merge, self.stages, glob):
            z = stage(merge(torch.cat([z, g], dim=1)))
        return self.head(z)


def glint(**kwargs) -> GlintIQA:
    """Model B; keyword arguments go to ``GlintIQA`` (``pretrained=False`` skips reading the
    ImageNet backbone weights, e.g. when trained weights are loaded right after)."""
    return GlintIQA(**kwargs)
