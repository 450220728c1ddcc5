"""QualityEngine: frames in, predictions out (preprocessing + model + backend)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from .backends import BackendOptions, create_backend
from .models import create_model
from .images import to_rgb_uint8
from .preprocess import DeviceBatcher, prepare_batch
from .types import Prediction, Preprocess, RegionMap

log = logging.getLogger(__name__)


class QualityEngine:
    """Score uint8 frames of any size with one model on one backend.

    ``info`` says which model and backend run, whether the weights are trained, and why this
    backend was chosen (for ``auto``).

    ``preprocess``: ``"auto"`` packs uint8 frames into a pinned buffer and resizes/normalises
    on the GPU when the backend runs on CUDA (``preprocess.DeviceBatcher``), else resizes on
    the CPU (``preprocess.prepare_batch``); ``"host"`` or ``"device"`` force one of them.

    ``backend``: a name with its settings as keywords (validated by its options class in
    ``engines.backends``), or options already validated (the monitor's configuration).
    """

    def __init__(self, model: str = "bifusion", backend: str | BackendOptions = "auto",
                 weights: str | Path | None = "default", max_batch: int | None = None,
                 preprocess: Preprocess = "auto", **backend_settings):
        if preprocess not in get_args(Preprocess):
            raise ValueError(f"preprocess must be {', '.join(get_args(Preprocess))}, not {preprocess!r}")
        self.model = create_model(model, weights=weights)
        # the view the weights were trained on (engines.views); idempotent on frames that
        # already are the view (the monitor's workers send them so)
        self.view = self.model.input_view
        self.input_size = self.view.side
        self.backend = create_backend(backend, self.model, max_batch=max_batch, **backend_settings)
        device = torch.device(self.backend.device)
        if preprocess == "device" or (preprocess == "auto" and device.type == "cuda"):
            self._prepare = DeviceBatcher(device, self.input_size)
            where = f"device {self._prepare.describe()}"
        else:
            self._prepare = lambda frames: prepare_batch(frames, self.input_size)
            where = "host (cpu resize, float32 batch)"
        self.info = {
            "model": model,
            "backend": self.backend.name,
            "backend_detail": self.backend.describe(),
            "trained": self.model.trained,
            "weights": self.model.weights_info.get("sha256", "untrained")[:12],
            "input_size": self.input_size,
            "input_view": self.view.mode,
            "preprocess": where,
        }

    @property
    def max_batch(self) -> int:
        return self.backend.max_batch

    @property
    def parallel(self) -> int:
        """Batches :meth:`score` may run at once, from as many threads (the backend's choice)."""
        return self.backend.parallel

    def score(self, frames: Sequence[np.ndarray], draws: int = 1,
              frame_sizes: Sequence[tuple[int, int]] | None = None) -> list[Prediction]:
        """Score frames (uint8/uint16, gray/RGB/RGBA, any size); one Prediction each.

        ``frame_sizes``: ``(height, width)`` of the original frames when ``frames`` are pictures
        of them at another size (the model's view, as the monitor's workers and ``vqmon score``
        send video frames): each region map then covers its original frame, whose cells scale
        proportionally. Default: the frames as given.

        ``draws`` > 1 averages that many views of each frame (the centre view, then seeded
        random fragment or crop positions): scores and maps alike, since map cell (i, j) is
        frame cell (i, j) in every draw. The monitor uses one draw per sample and averages over
        time; still images are worth more draws (``vqmon score --draws``).
        """
        d = max(1, draws) if self.view.mode != "resize" else 1
        rgbs = [to_rgb_uint8(f) for f in frames]
        x = self._prepare([self.view(rgb, draw=k or None) for rgb in rgbs for k in range(d)])
        scores, maps = self.backend.infer(x)
        scores = scores.reshape(len(rgbs), d).mean(1)
        maps = self.view.cell_map(maps.reshape(len(rgbs), d, *maps.shape[1:]).mean(1))
        sizes = frame_sizes if frame_sizes is not None else [f.shape[:2] for f in rgbs]
        return [Prediction(float(s), RegionMap(m.astype(np.float32), int(h), int(w)))
                for s, m, (h, w) in zip(scores, maps, sizes)]
