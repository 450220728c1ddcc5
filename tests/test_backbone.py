"""The ImageNet weights load right: Lite0 recognises real photographs."""
import pytest
import skimage.data
import torch

from engines.backbone import EfficientNetLite0, load_pretrained_backbone, normalize
from engines.preprocess import resize_uint8


@pytest.fixture(scope="module")
def backbone():
    return load_pretrained_backbone()


def _top5(model, img):
    x = normalize(resize_uint8(img, 224).unsqueeze(0))
    with torch.inference_mode():
        probs = model(x).softmax(-1)[0]
    return probs.topk(5)


@pytest.mark.parametrize("name,classes", [("chelsea", {281, 282, 283, 284, 285}), ("coffee", {967, 968})])
def test_imagenet_classification(backbone, name, classes):
    top = _top5(backbone, getattr(skimage.data, name)())
    assert int(top.indices[0]) in classes, f"{name}: top-1 {int(top.indices[0])}"
    assert float(top.values[0]) > 0.5


def test_random_init_does_not_classify():
    # guards the test above: without the pretrained weights the cat is not found
    torch.manual_seed(0)
    top = _top5(EfficientNetLite0().eval(), skimage.data.chelsea())
    assert float(top.values[0]) < 0.5


@pytest.mark.parametrize("size", [(224, 224), (250, 333), (97, 161)])
def test_feature_taps(backbone, size):
    feats = backbone.forward_features(torch.zeros(1, 3, *size), with_head=True)
    for info in EfficientNetLite0.FEATURES:
        f = feats[info.name]
        assert f.shape[1] == info.channels
        # TF "same" padding: ceil(size / stride) at every stride
        assert f.shape[2:] == tuple(-(-s // info.stride) for s in size)
    assert feats["head"].shape[1] == 1280


def test_exported_fp16_weights_stand_in_for_the_package(backbone, tmp_path, monkeypatch):
    """``VQMON_LITE0_WEIGHTS`` (for hosts without the package): the fp16 export, classifier left
    out, gives the package's features to within fp16 rounding; a caller that needs the classifier, or
    a wrong path, gets a clear error."""
    from engines.backbone import WEIGHTS_ENV, export_imagenet_weights

    path = tmp_path / "lite0.pt"
    assert export_imagenet_weights(path) < 8_000_000
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    exported = load_pretrained_backbone(drop_classifier=True)
    x = normalize(resize_uint8(skimage.data.astronaut(), 224).unsqueeze(0))
    with torch.inference_mode():
        want = backbone.forward_features(x, with_head=True)["head"]
        got = exported.forward_features(x, with_head=True)["head"]
    assert float((got - want).norm() / want.norm()) < 0.01  # relative L2 error
    with pytest.raises(RuntimeError, match="missing.*_fc"):
        load_pretrained_backbone()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match=WEIGHTS_ENV):
        load_pretrained_backbone(drop_classifier=True)
