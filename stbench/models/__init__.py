"""Forecasting backbones; importing this package registers them in ``stbench.registry.MODELS``."""
from stbench.models import (  # noqa: F401  (imports register the models)
    agcrn,
    base,
    dlinear,
    fouriergnn,
    gwnet,
    mlp,
    mtgnn,
    staeformer,
    stgcn,
    stid,
    stnorm,
    tsfe,
)
