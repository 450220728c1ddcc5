"""vqmon scoring core: backbone, quality models, preprocessing and inference backends."""
from .models import create_model, list_models
from .types import Prediction, RegionMap

__all__ = ["create_model", "list_models", "Prediction", "RegionMap"]
