"""Contract of the two quality models (untrained: ImageNet backbone + seeded heads)."""
from __future__ import annotations

import pytest
import torch

from engines import create_model, list_models
from engines.models.base import QualityModel

NAMES = ["bifusion", "glint"]


@pytest.fixture(scope="module", params=NAMES)
def model(request) -> QualityModel:
    return create_model(request.param, weights=None)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def test_registered():
    assert set(NAMES) <= set(list_models())


def test_class_attributes_and_size(model):
    assert model.name in NAMES
    assert model.map_stride == 32 and model.input_size == 384
    assert isinstance(model, QualityModel) and not model.training and not model.trained
    params = sum(p.numel() for p in model.parameters())
    assert params < 10_000_000
    fp16_bytes = sum(v.numel() * (2 if v.is_floating_point() else v.element_size())
                     for v in model.state_dict().values())
    assert fp16_bytes < 25_000_000


@pytest.mark.parametrize("size", [224, 256, 384])
def test_output_shapes_and_range(model, size):
    with torch.no_grad():
        scores, maps = model(_images(2, size))
    cells = size // 32
    assert scores.shape == (2,) and maps.shape == (2, cells, cells)
    assert torch.isfinite(scores).all() and torch.isfinite(maps).all()
    assert ((scores >= 0) & (scores <= 100)).all()
    assert ((maps >= 0) & (maps <= 100)).all()
    # the score is a weighted mean of the cells
    flat = maps.flatten(1)
    assert (scores >= flat.min(1).values - 1e-4).all()
    assert (scores <= flat.max(1).values + 1e-4).all()


def test_deterministic_and_batch_consistent(model):
    x = _images(3, 224, seed=1)
    with torch.no_grad():
        s1, m1 = model(x)
        s2, m2 = model(x)
        s_alone, m_alone = model(x[1:2])
    assert torch.equal(s1, s2) and torch.equal(m1, m2)
    assert torch.allclose(s_alone, s1[1:2], atol=1e-4, rtol=0)
    assert torch.allclose(m_alone, m1[1:2], atol=1e-4, rtol=0)


def test_two_builds_are_identical(model):
    other = create_model(model.name, weights=None)
    x = _images(1, 224, seed=2)
    with torch.no_grad():
        assert torch.equal(model(x)[0], other(x)[0])


def test_gradients_reach_every_trained_part(model):
    x = _images(1, 224, seed=3)
    model.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad():
            scores, maps = model(x)
            (scores.sum() + maps.mean() + model.aux_loss).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        unused = ("backbone._conv_head", "backbone._bn1", "distortion.embed_head")
        if model.name == "glint":
            unused = ()
        for name, grad in grads.items():
            if name.startswith(unused):
                continue
            assert grad is not None, f"no gradient for {name}"
        head_grad = sum(g.abs().sum() for n, g in grads.items() if n.startswith("head."))
        assert head_grad > 0
        assert grads["backbone._conv_stem.weight"].abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)


def test_embeddings(model):
    x = _images(2, 224, seed=4)
    with torch.no_grad():
        if model.name == "bifusion":
            emb = model.distortion_embedding(x)
            assert emb.shape == (2, 128)
            model(x)
            assert model.aux_loss.dim() == 0 and model.aux_loss >= 0
        else:
            emb = model.semantic_embedding(x)
            assert emb.shape == (2, 1280)
            assert (emb >= 0).all()  # pooled ReLU6 features
    assert torch.isfinite(emb).all()
    assert not torch.allclose(emb[0], emb[1])


@pytest.mark.slow
def test_onnx_export_matches_torch(tmp_path):
    """torch.onnx.export (dynamo, opset 18, dynamic batch) of one model runs in ONNX Runtime."""
    import onnxruntime as ort  # a dependency of vqmon (pyproject.toml): never a reason to skip
    model = create_model("glint", weights=None)
    x = _images(2, 224, seed=5)
    path = tmp_path / "glint.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18,
                      input_names=["image"], output_names=["score", "map"],
                      dynamic_shapes=({0: batch},))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for images in (x, x[:1]):
        score, qmap = sess.run(None, {"image": images.numpy()})
        with torch.no_grad():
            ref_score, ref_map = model(images)
        assert abs(score - ref_score.numpy()).max() < 1e-3
        assert abs(qmap - ref_map.numpy()).max() < 1e-3
