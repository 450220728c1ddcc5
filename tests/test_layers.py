"""Shapes, locality and invariants of the reusable layers in engines.layers."""
from __future__ import annotations

import pytest
import torch

from engines.layers import (
    BidirectionalFusion,
    ChannelAttention,
    LayerNorm2d,
    MoECrossAttention,
    OverlappingCrossWindowAttention,
    QualityHead,
    SpatialInteraction,
    WindowAttention,
    _relative_index,
)

ODD_SIZES = [(7, 7), (10, 10), (12, 12), (16, 16), (7, 10)]


@pytest.fixture(autouse=True)
def _seed_no_grad():
    torch.manual_seed(0)
    with torch.no_grad():
        yield


@pytest.mark.parametrize("make", [
    lambda: WindowAttention(32, 2, window=4),
    lambda: OverlappingCrossWindowAttention(32, 2, window=4),
    lambda: ChannelAttention(32, 4),
    lambda: SpatialInteraction(32),
    lambda: LayerNorm2d(32),
], ids=["window", "ocab", "channel", "spatial", "layernorm2d"])
@pytest.mark.parametrize("hw", ODD_SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_map_layers_keep_shape(make, hw):
    layer = make().eval()
    x = torch.randn(2, 32, *hw)
    y = layer(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_window_attention_is_local_to_its_window():
    layer = WindowAttention(16, 2, window=4).eval()
    x = torch.randn(1, 16, 12, 12)
    y = layer(x)
    x2 = x.clone()
    x2[..., 8:12, 8:12] += torch.randn(1, 16, 4, 4)  # bottom-right window only
    y2 = layer(x2)
    outside = torch.ones(12, 12, dtype=torch.bool)
    outside[8:12, 8:12] = False
    assert torch.equal(y[..., outside], y2[..., outside])
    assert not torch.allclose(y[..., 8:12, 8:12], y2[..., 8:12, 8:12])
    # every pixel of the changed window sees the change (attention mixes the whole window)
    assert ((y - y2)[..., 8:12, 8:12].abs().amax(dim=1) > 0).all()


def test_window_attention_padding_is_masked():
    # a 10x10 map with window 4 pads to 12x12; the 2x2 corner window must behave exactly as a
    # 2x2 map would on its own (padded keys masked, relative positions the same)
    layer = WindowAttention(16, 2, window=4).eval()
    x = torch.randn(1, 16, 10, 10)
    y = layer(x)
    corner = layer(x[..., 8:10, 8:10].contiguous())
    assert torch.allclose(y[..., 8:10, 8:10], corner, atol=1e-5)
    # windows that need no padding equal the same windows cut out on their own
    assert torch.allclose(y[..., 0:8, 0:8], layer(x[..., 0:8, 0:8].contiguous()), atol=1e-5)


def test_ocab_receptive_field_is_the_overlapping_window():
    layer = OverlappingCrossWindowAttention(16, 2, window=4, overlap_ratio=0.5).eval()
    assert layer.kv_window == 6  # 4 + 2*1 margin
    x = torch.randn(1, 16, 12, 12)
    y = layer(x)
    centre = (slice(None), slice(None), slice(4, 8), slice(4, 8))

    def changed(r, c):
        x2 = x.clone()
        x2[..., r, c] += 3.0 * torch.randn(16)  # not a constant: LayerNorm would erase it
        return not torch.equal(layer(x2)[centre], y[centre])

    # the centre window (rows/cols 4..7) sees exactly rows/cols 3..8: one pixel of margin
    seen = torch.tensor([[changed(r, c) for c in range(12)] for r in range(12)])
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[3:9, 3:9] = True
    assert torch.equal(seen, expected)
    # the unfold's zero border is masked: a border window sees only real pixels
    assert torch.isfinite(y).all()


def test_relative_index_depends_only_on_displacement():
    for q, k in ((4, 4), (4, 6), (8, 12)):
        index, side = _relative_index(q, k)
        off = (k - q) // 2
        qy, qx = torch.meshgrid(torch.arange(q) + off, torch.arange(q) + off, indexing="ij")
        ky, kx = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
        dy = qy.reshape(-1, 1) - ky.reshape(1, -1)
        dx = qx.reshape(-1, 1) - kx.reshape(1, -1)
        disp = (dy * 1000 + dx).reshape(-1)
        idx = index.reshape(-1)
        assert idx.min() >= 0 and idx.max() < side * side
        # same displacement <-> same table entry
        pairs = torch.unique(torch.stack([disp, idx], 1), dim=0)
        assert len(pairs) == len(torch.unique(disp)) == len(torch.unique(idx))


def test_channel_attention_shape_and_matrix_size():
    layer = ChannelAttention(48, num_heads=4).eval()
    y = layer(torch.randn(3, 48, 7, 10))
    assert y.shape == (3, 48, 7, 10)
    assert layer.temperature.shape == (4, 1, 1)


def test_moe_routes_each_token_to_exactly_top_k_experts():
    moe = MoECrossAttention(32, context_dim=24, num_heads=4, num_experts=4, top_k=2).eval()
    x = torch.randn(2, 9, 32)
    gates, aux = moe.route(moe.norm2(x))
    assert gates.shape == (2, 9, 4)
    assert ((gates > 0).sum(-1) == 2).all()
    assert torch.allclose(gates.sum(-1), torch.ones(2, 9))
    logits = moe.router(moe.norm2(x))
    assert torch.equal(gates > 0, logits >= logits.topk(2, dim=-1).values[..., -1:])
    assert aux.dim() == 0 and aux >= 0
    out = moe(x, torch.randn(2, 5, 24))
    assert out.shape == x.shape
    assert moe.aux_loss.dim() == 0 and moe.aux_loss >= 0


def test_moe_aux_loss_grows_when_routing_collapses():
    moe = MoECrossAttention(32, num_heads=4, num_experts=4, top_k=2).eval()
    x, ctx = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    moe(x, ctx)
    balanced = moe.aux_loss.item()
    moe.router.bias.data = torch.tensor([20.0, 10.0, 0.0, 0.0])  # everything to experts 0,1
    moe(x, ctx)
    collapsed = moe.aux_loss.item()
    assert collapsed > balanced + 0.5
    assert collapsed == pytest.approx(2.0, abs=0.05)  # n * (0.5*1 + 0.5*0) for top-2 of 4


def test_moe_aux_loss_has_gradient_in_training():
    with torch.enable_grad():
        moe = MoECrossAttention(32, num_heads=4).train()
        moe(torch.randn(2, 6, 32), torch.randn(2, 6, 32))
        moe.aux_loss.backward()
        assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("grid", [(56, 28, 14, 7), (80, 40, 20, 10), (96, 48, 24, 12)])
def test_bidirectional_fusion_shapes(grid):
    chans = (24, 40, 112, 320)
    fusion = BidirectionalFusion(chans, 32).eval()
    out = fusion([torch.randn(2, c, s, s) for c, s in zip(chans, grid)])
    assert [tuple(o.shape) for o in out] == [(2, 32, s, s) for s in grid]


def test_bidirectional_fusion_mixes_both_ways():
    chans = (8, 16, 32)
    fusion = BidirectionalFusion(chans, 16).eval()
    feats = [torch.randn(1, c, s, s) for c, s in zip(chans, (16, 8, 4))]
    base = fusion(feats)
    coarse = [f.clone() for f in feats]
    coarse[-1] += 1.0
    fine = [f.clone() for f in feats]
    fine[0] += 1.0
    assert not torch.allclose(fusion(coarse)[0], base[0])  # top-down reaches the finest
    assert not torch.allclose(fusion(fine)[-1], base[-1])  # bottom-up reaches the coarsest


@pytest.mark.parametrize("hw", [(7, 7), (12, 12), (10, 16)])
def test_quality_head_score_is_weighted_mean_of_map(hw):
    head = QualityHead(24).eval()
    for p in head.parameters():  # make cells differ visibly
        p.data.normal_(0, 0.5)
    x = torch.randn(3, 24, *hw)
    scores, maps = head(x)
    q, w = head.cells(x)
    assert scores.shape == (3,) and maps.shape == (3, *hw)
    assert torch.equal(maps, q)
    assert (w > 0).all() and (maps >= 0).all() and (maps <= 100).all()
    flat = maps.flatten(1)
    assert (scores >= flat.min(1).values - 1e-4).all()
    assert (scores <= flat.max(1).values + 1e-4).all()
    expected = (q * w).flatten(1).sum(1) / w.flatten(1).sum(1)
    assert torch.allclose(scores, expected, atol=1e-5)
