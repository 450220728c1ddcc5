"""Model registry: one file per architecture, ``create_model(name)`` to build one."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from .base import QualityModel

log = logging.getLogger(__name__)

_REGISTRY: dict[str, Callable[..., QualityModel]] = {}
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# heads of an untrained model are initialised from this seed so untrained runs are repeatable
UNTRAINED_SEED = 0


def register_model(name: str):
    def deco(factory: Callable[..., QualityModel]):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory
    return deco


def list_models() -> list[str]:
    _import_architectures()
    return sorted(_REGISTRY)


def shipped_weights(name: str) -> Path:
    return SHIPPED_WEIGHTS_DIR / f"{name}.pt"


def create_model(name: str, weights: str | Path | None = "default", **kwargs) -> QualityModel:
    """Build model ``name`` in eval mode.

    ``weights``: ``"default"`` loads the weights shipped in ``engines/weights/NAME.pt`` when
    present (otherwise the model stays untrained and says so in ``model.trained``); a path
    loads that file strictly; ``None`` gives the untrained model (ImageNet backbone, seeded
    random heads).
    """
    from ..weights import load_weights

    _import_architectures()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    path = None
    if weights == "default":
        path = shipped_weights(name)
        if not path.exists():
            log.warning("no trained weights shipped for %s: scores are NOT meaningful", name)
            path = None
    elif weights is not None:
        path = Path(weights)
    if path is not None:
        # the file holds the whole backbone: reading the ImageNet weights first would be wasted
        # (and needs their package, which a GPU host or a slim image may not have)
        kwargs.setdefault("pretrained", False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        model = _REGISTRY[name](**kwargs)
    if path is not None:
        load_weights(model, path)
    return model.eval()


def _import_architectures() -> None:
    # importing registers; kept lazy so ``engines`` imports fast
    from . import bifusion, glint  # noqa: F401
