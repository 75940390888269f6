"""The data sets a sweep can name: one table from name to loader, the only list of names.

``digits`` ships with the package (scikit-learn's handwritten digits, no
root), and so do its image-side shifts (``digits-inverted``, ``-noise``,
``-mirror``, ``-rotated``, ``-lowcontrast``: ``sweep.data.shifts``);
``folder`` reads a class-per-folder root; the 11 CoOp benchmarks read
CoOp's layout under one data root. The specification checks names and data
roots against this table, the driver's preflight reads what it lists, and
the oracle actors load data sets through ``load_dataset``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from sweep.data.coop import COOP_DATASETS, load_coop
from sweep.data.digits import load_digits_task
from sweep.data.folders import load_class_folders
from sweep.data.shifts import SHIFTED_DIGITS, load_shifted_digits
from sweep.data.splits import Dataset
from sweep.errors import ConfigError

__all__ = ["DATASETS", "SPLIT_SIZES", "DatasetEntry", "load_dataset"]

#: Classes, train, validation (None: drawn from train), test images: the CoOp papers' tables.
SPLIT_SIZES: dict[str, tuple[int, int, int | None, int]] = {
    "ImageNet": (1000, 1_281_167, None, 50_000), "Caltech101": (100, 4128, 1649, 2465),
    "OxfordPets": (37, 2944, 736, 3669), "StanfordCars": (196, 6509, 1635, 8041),
    "Flowers102": (102, 4093, 1633, 2463), "Food101": (101, 50_500, 20_200, 30_300),
    "FGVCAircraft": (100, 3334, 3333, 3333), "SUN397": (397, 15_880, 3970, 19_850),
    "DTD": (47, 2820, 1128, 1692), "EuroSAT": (10, 13_500, 5400, 8100),
    "UCF101": (101, 7639, 1898, 3783), "digits": (10, 314, 137, 450),
    **dict.fromkeys(SHIFTED_DIGITS, (10, 314, 137, 450)),
}


@dataclass(frozen=True)
class DatasetEntry:
    """How to load one named data set."""

    name: str
    #: root (None for a data set that ships with the package) -> the data set.
    load: Callable[[Path | None], Dataset]
    #: the folder under the data root that must exist; None: the data set ships with the
    #: package and takes no root.
    folder: str | None

    @property
    def needs_root(self) -> bool:
        return self.folder is not None


def _digits(root: Path | None) -> Dataset:
    del root  # embedded: no root
    return load_digits_task()


def _shifted(name: str, root: Path | None) -> Dataset:
    del root  # embedded: no root
    return load_shifted_digits(name)


#: Every data set name, in the order messages list them: the embedded digits, a
#: class-per-folder root, then CoOp's 11 by name.
DATASETS: Mapping[str, DatasetEntry] = MappingProxyType({
    "digits": DatasetEntry("digits", _digits, None),
    **{name: DatasetEntry(name, functools.partial(_shifted, name), None) for name in SHIFTED_DIGITS},
    "folder": DatasetEntry("folder", load_class_folders, "train"),
    **{name: DatasetEntry(name, functools.partial(load_coop, name), COOP_DATASETS[name].folder)
       for name in sorted(COOP_DATASETS)},
})


def load_dataset(name: str, root: str | Path | None = None) -> Dataset:
    """Load the data set ``name`` (a key of ``DATASETS``) from ``root``.

    Raises:
        ConfigError: ``name`` is unknown, or it needs a root and none is given.
        DataError: the root is missing, empty or not in the data set's layout.
    """
    entry = DATASETS.get(name)
    if entry is None:
        raise ConfigError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    if not entry.needs_root:
        return entry.load(None)
    if root is None:
        raise ConfigError(f"data set {name!r} needs a data root (data_root)")
    return entry.load(Path(root))
