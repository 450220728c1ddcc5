"""vqmon scoring core: backbone, quality models, preprocessing and inference backends."""
from .types import Prediction, RegionMap

__all__ = ["create_model", "list_models", "Prediction", "RegionMap"]


def __getattr__(name: str):
    # the model registry imports torch: only on first use, so that light users of the package
    # (the monitor's decoder workers read engines.views) stay light
    if name in ("create_model", "list_models"):
        from . import models
        return getattr(models, name)
    raise AttributeError(f"module 'engines' has no attribute {name!r}")
