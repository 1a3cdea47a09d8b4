"""Dataset indexers, one file per source (``base`` holds what they share), and the registry.

Each indexer registers itself with ``@register_dataset(name, title)`` (``base.DATASETS``): importing this
package imports every indexer module in it, so ``DATASETS`` is the one, complete list of datasets. A new
dataset is its indexer file here and its ``conf/data/<name>.yaml``; its own ``data.<key>``s are its indexer's
parameters (their schema is generated from the signature, src/experiments/schemas.py).
"""

import importlib
import pkgutil

from src.data.indexes.base import DATASETS, Dataset, dataset_title, register_dataset

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

DATASET_TITLES = {name: dataset.title for name, dataset in sorted(DATASETS.items())}
EMBEDDED = next(
    name for name, dataset in DATASETS.items() if not dataset.real
)  # generated here: no videos of its own
REAL_DATASETS = tuple(name for name in sorted(DATASETS) if DATASETS[name].real)

__all__ = [
    "DATASETS",
    "DATASET_TITLES",
    "EMBEDDED",
    "REAL_DATASETS",
    "Dataset",
    "dataset_title",
    "register_dataset",
]
