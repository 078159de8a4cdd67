"""Labelled crystals: :class:`CrystalDataset` (from structures, a DataFrame, JSON lines, CSV
or a CGCNN folder), the bundled data, the readers and the graph cache.

The modules, by job: :mod:`~crystalzoo.data.dataset`, :mod:`~crystalzoo.data.readers`,
:mod:`~crystalzoo.data.targets` (names, transforms, labels, split sizes),
:mod:`~crystalzoo.data.cache` and :mod:`~crystalzoo.data.bundled`.

Example::

    >>> from crystalzoo.data import CrystalDataset, bundled_dataset
    >>> ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=10, progress=False)
    >>> len(ds)
    10
"""

from .bundled import BUNDLED, BUNDLED_PREFIX, BUNDLED_UNITS, bundled_dataset, example_structures
from .cache import default_cache_dir
from .dataset import CrystalDataset, dataset_path, read_dataset
from .readers import MAX_JSONL_LINE
from .targets import MAX_LABEL, check_split_size

__all__ = ["BUNDLED", "BUNDLED_PREFIX", "BUNDLED_UNITS", "MAX_JSONL_LINE", "MAX_LABEL", "CrystalDataset",
           "bundled_dataset", "check_split_size", "dataset_path", "default_cache_dir", "example_structures",
           "read_dataset"]
