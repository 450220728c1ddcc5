"""The interface every inference backend implements, and the settings every backend takes.

One file per backend holds its options class (a ``BackendOptions`` whose ``backend`` is the
backend's name, the tag of the configuration's union) and its ``Backend``. Those files import
torch and GPU packages only inside functions: the configuration reads the options classes in
processes (the decoder workers) that must not load torch.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

    from ..models.base import QualityModel


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (missing package, no GPU…); the message says why."""


class BackendOptions(BaseModel):
    """One backend's own settings; unknown keys are refused, naming them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: str  # each backend narrows it to Literal["its name"]

    def __str__(self) -> str:  # messages name the backend, not all its settings
        return self.backend

    def create(self, model: QualityModel, max_batch: int | None) -> Backend:
        """The backend these options configure, running ``model``."""
        raise NotImplementedError

    def for_many_callers(self) -> BackendOptions:
        """These options where several threads score at once (the monitor's scorer): settings
        left open take their values for that case."""
        return self


class Backend(ABC):
    """Runs a QualityModel on normalised batches ``(B,3,S,S)``.

    ``infer`` returns ``(scores (B,), maps (B,h,w))`` as float32 numpy arrays on the 0-100
    scale. Batches up to ``max_batch`` are accepted; larger ones are split.
    """

    name: ClassVar[str] = ""
    device: str | torch.device = "cpu"  # where inputs must be; GPU backends set their own
    default_batch: ClassVar[int] = 8    # ``max_batch`` when the configuration leaves it open
    parallel: int = 1  # batches it may score at once, each called from its own scorer thread

    def __init__(self, model: QualityModel, max_batch: int | None = None):
        self.model = model.eval()
        self.max_batch = max_batch or self.default_batch
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
