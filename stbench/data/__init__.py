"""Datasets: the canonical STData format, the registry of built-in and preparable datasets."""
from stbench.data import datasets  # noqa: F401  (registers every dataset on import)
from stbench.data.catalog import data_dir, load_dataset, prepare_dataset
from stbench.data.core import STData

__all__ = ["STData", "data_dir", "load_dataset", "prepare_dataset"]
