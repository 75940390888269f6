"""Data: image splits, seeded few-shot draws, and the data sets a sweep can name.

``DATASETS`` is the single table of data set names (the embedded digits, a
class-per-folder root, CoOp's 11 benchmarks); ``load_dataset`` loads one and
``few_shot`` draws a task from it as CoOp does. The digits' functions serve
the embedded model's pretraining (``sweep.pretrain_tiny``).
"""

from sweep.data.catalog import DATASETS, SPLIT_SIZES, DatasetEntry, load_dataset
from sweep.data.coop import COOP_DATASETS, CoopLayout, load_coop
from sweep.data.digits import (
    DIGIT_CLASSNAMES,
    DIGITS_TEMPLATE,
    digits_split_indices,
    load_digits_task,
    load_pretraining_digits,
)
from sweep.data.folders import IMAGE_EXTENSIONS, load_class_folders
from sweep.data.pixels import (
    CACHE_ENV,
    DEFAULT_CACHE,
    PixelCache,
    Preprocessing,
    node_cache_folder,
)
from sweep.data.splits import SHOTS, Dataset, FewShot, Split, few_shot

__all__ = [
    "SPLIT_SIZES",
    "CACHE_ENV",
    "COOP_DATASETS",
    "DATASETS",
    "DEFAULT_CACHE",
    "DIGITS_TEMPLATE",
    "DIGIT_CLASSNAMES",
    "IMAGE_EXTENSIONS",
    "SHOTS",
    "CoopLayout",
    "Dataset",
    "DatasetEntry",
    "FewShot",
    "PixelCache",
    "Preprocessing",
    "Split",
    "digits_split_indices",
    "few_shot",
    "load_class_folders",
    "load_coop",
    "load_dataset",
    "load_digits_task",
    "load_pretraining_digits",
    "node_cache_folder",
]
