"""The interface every inference backend implements (one file per backend)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from ..models.base import QualityModel


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (missing package, no GPU…); the message says why."""


class Backend(ABC):
    """Runs a QualityModel on normalised batches ``(B,3,S,S)``.

    ``infer`` returns ``(scores (B,), maps (B,h,w))`` as float32 numpy arrays on the 0-100
    scale. Batches up to ``max_batch`` are accepted; larger ones are split.
    """

    name: str = ""
    device: torch.device = torch.device("cpu")  # where inputs must be; GPU backends set their own

    def __init__(self, model: QualityModel, max_batch: int = 8):
        self.model = model.eval()
        self.max_batch = max_batch
        self.input_size = model.input_size

    @abstractmethod
    def _infer(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One batch of at most ``max_batch``."""

    def infer(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        scores, maps = [], []
        for start in range(0, x.shape[0], self.max_batch):
            s, m = self._infer(x[start:start + self.max_batch])
            scores.append(s)
            maps.append(m)
        return np.concatenate(scores), np.concatenate(maps)

    def describe(self) -> str:
        return self.name
