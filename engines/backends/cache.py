"""Where compiled artefacts (ONNX graphs, TensorRT engines) are kept, and how they are keyed."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models.base import QualityModel


def cache_dir(kind: str) -> Path:
    root = Path(os.environ.get("VQMON_CACHE_DIR") or Path.home() / ".cache" / "vqmon")
    path = root / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_fingerprint(model: QualityModel) -> str:
    """Hash of the model's actual parameters, so any change of weights misses the cache."""
    h = hashlib.sha256(model.name.encode())
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(fields: dict) -> str:
    """Stable short key for a dict of everything the artefact depends on."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def torch_version() -> str:
    import torch

    return torch.__version__
