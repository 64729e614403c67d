"""Datasets and the device-resident loader.

* ``load_dataset(name, n_train, n_val, n_test, seed)``: CIFAR-10, CIFAR-100, ImageNet-100 at
  32 or 64 px, or a synthetic set, as uint8 train / validation / test tensors
  (``DatasetSplits``).
* ``DATASETS`` / ``dataset_info(name)``: each dataset's classes, image size and split sizes,
  known without loading it.
* ``DeviceLoader``: shuffled, augmented, normalized batches made on the training device.
* ``data_root()`` / ``cache_dir()``: the folders named by ``DNBOOK_DATA`` (offline copies) and
  ``DNBOOK_CACHE`` (downloads and packed files, default ``~/.cache/dnbook``).

Data not on the machine raises ``DataNotFoundError``, whose message says how to get it.
"""

from dnbook.data.loader import DeviceLoader
from dnbook.data.paths import DataNotFoundError, cache_dir, data_root
from dnbook.data.registry import DATASET_NAMES, DATASETS, DatasetInfo, dataset_info
from dnbook.data.splits import DatasetSplits, balanced_subset, load_dataset

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DatasetInfo",
    "DataNotFoundError",
    "DatasetSplits",
    "DeviceLoader",
    "balanced_subset",
    "cache_dir",
    "data_root",
    "dataset_info",
    "load_dataset",
]
