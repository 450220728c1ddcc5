"""The contract every quality model keeps."""
from __future__ import annotations

import torch
from torch import nn

from ..preprocess import DEFAULT_INPUT_SIZE
from ..views import InputView


class QualityModel(nn.Module):
    """A no-reference quality model.

    ``forward(x)`` takes ImageNet-normalised RGB ``(B,3,S,S)`` and returns
    ``(scores, maps)``: ``scores`` ``(B,)`` and ``maps`` ``(B, S/map_stride, S/map_stride)``,
    both on the 0-100 scale, higher is better. The score is a weighted mean of the map
    cells, so the map is the score's own breakdown over the frame.
    """

    name: str = ""
    map_stride: int = 32
    input_size: int = DEFAULT_INPUT_SIZE

    def __init__(self) -> None:
        super().__init__()
        # set by engines.weights when trained weights are loaded
        self.trained = False
        self.weights_info: dict = {}
        self.input_view: InputView = InputView(mode="resize", size=self.input_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError
