"""Forecasting backbones; importing this package registers them in ``stbench.registry.MODELS``."""
from stbench.models import base, gwnet, mlp, mtgnn  # noqa: F401  (imports register the models)
