"""Model A, "bifusion": bidirectional feature fusion + regional distortion extraction.

After *No-reference image quality assessment via bidirectional feature fusion and regional
distortion extraction* (Neurocomputing 660, 131761, 2026; abstract only, no code). Pipeline::

    Lite0 taps s4/s8/s16/s32 ──► BidirectionalFusion (FPN top-down + PAN bottom-up, dim 48)
      fused s16 ──► WindowAttention ──► OverlappingCrossWindowAttention ──► stride-2 conv
      concat with fused s32 ──► 1x1 conv ──► image tokens (stride-32 grid, dim 128)
    Lite0 s4/s8/s16 ──► distortion encoder (patchify onto s16, dw-conv blocks, down to s32)
                          ──► distortion tokens (s32 grid) ──► distortion_embedding (B,128)
    image tokens ──(query)── MoECrossAttention ──(keys/values)── distortion tokens
      ──► QualityHead: per-cell quality + weight on the stride-32 grid (12x12 at 384)

Where and why this departs from the paper (whose details are not public):

- Backbone: EfficientNet-Lite0 (the only pretrained weights available here), shared by the
  image branch and the distortion encoder; the paper's distortion encoder is presumably a
  separate network. The encoder here is a small head on the backbone's low/mid-level maps,
  so contrastive pre-training (``distortion_embedding``; positives = same distortion type and
  level) also shapes the backbone unless it is frozen for that stage.
- Regional attention runs at stride 16 (24x24 at 384, window 8 -> 3x3 windows; OCAB keys from
  12x12 windows) and is then brought to stride 32, where the region map lives; stride 16
  keeps regions finer than the map cells at little cost.
- The experts of the MoE are computed densely and masked to the router's top-k (4 experts,
  top-2): with so few experts that is cheaper than gathering, and it exports to ONNX.
- Output head: per-cell quality and weight (``QualityHead``) instead of a global regressor, so
  the score is the weighted mean of the region map.
- Sizes (fusion dim 48 with 3 heads, token dim 128 with 4 heads) are chosen for CPU cost:
  4.0 M parameters (0.7 M outside the backbone); at 384x384 on 2 CPU threads it takes about
  1.3x the bare backbone's time at batch 1 and 1.2x at batch 8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import load_pretrained_backbone
from ..layers import (
    BidirectionalFusion,
    DWConvBlock,
    MoECrossAttention,
    OverlappingCrossWindowAttention,
    QualityHead,
    SpatialInteraction,
    WindowAttention,
    init_weights,
)
from .base import QualityModel

TAPS = ("s4", "s8", "s16", "s32")
TAP_CHANNELS = (24, 40, 112, 320)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize to ``size`` when needed (only for inputs that are not multiples of 32)."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class DistortionEncoder(nn.Module):
    """Low/mid-level backbone maps -> distortion feature map on the stride-32 grid.

    s4/s8/s16 are patchified onto the stride-16 grid (kernel = stride = 4, 2, 1), summed,
    refined by a gated depthwise block, taken to stride 32 by a strided depthwise block and
    refined again. ``embed`` pools it (mean and std per channel) into a vector for
    contrastive pre-training.
    """

    def __init__(self, dim: int = 96, embed_dim: int = 128):
        super().__init__()
        self.from_s4 = nn.Conv2d(TAP_CHANNELS[0], dim, 4, stride=4)
        self.from_s8 = nn.Conv2d(TAP_CHANNELS[1], dim, 2, stride=2)
        self.from_s16 = nn.Conv2d(TAP_CHANNELS[2], dim, 1)
        self.block16 = SpatialInteraction(dim)
        self.down = DWConvBlock(dim, dim, stride=2)
        self.block32 = SpatialInteraction(dim)
        self.embed_head = nn.Sequential(nn.Linear(2 * dim, embed_dim), nn.GELU(),
                                        nn.Linear(embed_dim, embed_dim))

    def forward(self, s4: torch.Tensor, s8: torch.Tensor, s16: torch.Tensor,
                s32_size: tuple[int, int]) -> torch.Tensor:
        x = self.from_s16(s16)
        x = x + _resize(self.from_s4(s4), x.shape[-2:]) + _resize(self.from_s8(s8), x.shape[-2:])
        x = self.down(self.block16(F.gelu(x)))
        return self.block32(_resize(x, s32_size))

    def embed(self, dmap: torch.Tensor) -> torch.Tensor:
        flat = dmap.flatten(2)
        mean = flat.mean(-1)
        std = (flat - mean.unsqueeze(-1)).pow(2).mean(-1).add(1e-6).sqrt()
        return self.embed_head(torch.cat([mean, std], dim=1))


class BiFusionIQA(QualityModel):
    """Bidirectional fusion + regional distortion extraction + MoE cross-attention."""

    name = "bifusion"
    map_stride = 32
    input_size = 384

    def __init__(self, fusion_dim: int = 48, dim: int = 128, distortion_dim: int = 96,
                 embed_dim: int = 128, window: int = 8, num_heads: int = 4,
                 num_experts: int = 4, top_k: int = 2, pretrained: bool = True):
        super().__init__()
        if pretrained:
            self.backbone = load_pretrained_backbone(drop_classifier=True)
        else:  # architecture only (tests of shapes); real use always loads ImageNet weights
            from ..backbone import EfficientNetLite0
            self.backbone = EfficientNetLite0()
            del self.backbone._fc
        self.fusion = BidirectionalFusion(TAP_CHANNELS, fusion_dim)
        region_heads = max(1, fusion_dim // 16)
        self.region_attn = WindowAttention(fusion_dim, region_heads, window)
        self.region_ocab = OverlappingCrossWindowAttention(fusion_dim, region_heads, window, 0.5)
        self.region_down = DWConvBlock(fusion_dim, fusion_dim, stride=2)
        self.to_tokens = nn.Conv2d(2 * fusion_dim, dim, 1)
        self.distortion = DistortionEncoder(distortion_dim, embed_dim)
        self.moe = MoECrossAttention(dim, distortion_dim, num_heads, num_experts, top_k)
        self.head = QualityHead(dim)
        init_weights(self.fusion)
        init_weights(self.distortion)

    @property
    def aux_loss(self) -> torch.Tensor:
        """Load-balancing loss of the MoE in the last forward (0-dim); add it when training."""
        return self.moe.aux_loss

    def backbone_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The backbone maps the rest of the model reads; ``forward(x)`` is
        ``forward_taps(backbone_taps(x))`` (a frozen-backbone stage caches these)."""
        return self.backbone.forward_features(x)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone_taps(x)
        return [feats[k] for k in TAPS]

    def _distortion_map(self, taps: list[torch.Tensor]) -> torch.Tensor:
        return self.distortion(taps[0], taps[1], taps[2], tuple(taps[3].shape[-2:]))

    def distortion_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) -> (B, embed_dim) distortion vector (not normalised; L2-normalise it for
        contrastive losses)."""
        return self.distortion.embed(self._distortion_map(self._features(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_taps(self.backbone_taps(x))

    def forward_taps(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything after the backbone: ``backbone_taps`` output -> ``(scores, maps)``."""
        taps = [feats[k] for k in TAPS]
        fused = self.fusion(taps)
        region = self.region_ocab(self.region_attn(fused[2]))
        s32 = fused[3]
        region = _resize(self.region_down(region), s32.shape[-2:])
        img = self.to_tokens(torch.cat([s32, region], dim=1))  # (B, dim, h, w)
        b, c, h, w = img.shape
        dist = self._distortion_map(taps).flatten(2).transpose(1, 2)  # (B, h*w, Dd)
        tokens = self.moe(img.flatten(2).transpose(1, 2), dist)
        return self.head(tokens.transpose(1, 2).reshape(b, c, h, w))


def bifusion(**kwargs) -> BiFusionIQA:
    """Model A; keyword arguments go to ``BiFusionIQA`` (``pretrained=False`` skips reading
    the ImageNet backbone weights, e.g. when trained weights are loaded right after)."""
    return BiFusionIQA(**kwargs)
