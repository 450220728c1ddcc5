"""Model registry: one file per architecture, ``create_model(name)`` to build one.

``MODELS`` is the one list of model names (the command lines and the configuration check read
it without importing torch). Adding a model: a new file here with a factory, and one line in
``MODELS``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..registry import resolve

if TYPE_CHECKING:
    from .base import QualityModel

log = logging.getLogger(__name__)

# name -> its factory (keyword arguments go to the model class)
MODELS = {
    "bifusion": "engines.models.bifusion:bifusion",
    "glint": "engines.models.glint:glint",
}
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# heads of an untrained model are initialised from this seed so untrained runs are repeatable
UNTRAINED_SEED = 0


def list_models() -> list[str]:
    return sorted(MODELS)


def shipped_weights(name: str) -> Path:
    return SHIPPED_WEIGHTS_DIR / f"{name}.pt"


def create_model(name: str, weights: str | Path | None = "default", **kwargs) -> QualityModel:
    """Build model ``name`` in eval mode.

    ``weights``: ``"default"`` loads the weights shipped in ``engines/weights/NAME.pt`` when
    present (otherwise the model stays untrained and says so in ``model.trained``); a path
    loads that file strictly; ``None`` or ``"none"`` (the command lines' spelling) gives the
    untrained model (ImageNet backbone, seeded random heads).
    """
    import torch

    from ..weights import load_weights

    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    factory = resolve(MODELS[name])
    path = None
    if weights == "default":
        path = shipped_weights(name)
        if not path.exists():
            log.warning("no trained weights shipped for %s: scores are NOT meaningful", name)
            path = None
    elif weights is not None and weights != "none":
        path = Path(weights)
    if path is not None:
        # the file holds the whole backbone: reading the ImageNet weights first would be wasted
        # (and needs their package, which a GPU host or a slim image may not have)
        kwargs.setdefault("pretrained", False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        model = factory(**kwargs)
    if path is not None:
        load_weights(model, path)
    return model.eval()

