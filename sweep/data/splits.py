"""Image classification data: splits, data sets and seeded few-shot sampling.

A data set is three splits (train, validation, test) of images with integer
labels and its class names. An image is either a file path (real benchmarks,
loaded lazily) or a small uint8 array held in memory (the embedded digits).

Few-shot sampling follows CoOp: K shots per class from the train split, a
validation set of min(K, 4) per class from the validation split (or, for data
sets without one, from the rest of the train split, disjoint from the shots),
and the full test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sweep.errors import ConfigError, DataError

__all__ = ["Dataset", "FewShot", "Split", "SHOTS", "few_shot"]

#: The shot counts of the CoOp protocol.
SHOTS = (1, 2, 4, 8, 16)

ImageRef = str | Path | np.ndarray


@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``images[i]`` (a path or a uint8 array) has label ``labels[i]``."""

    images: Sequence[ImageRef]
    labels: np.ndarray  # (n,) int64

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels, dtype=np.int64)
        if labels.ndim != 1 or len(labels) != len(self.images):
            raise DataError(
                f"a split needs one label per image; got {len(self.images)} images "
                f"and labels of shape {labels.shape}"
            )
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Split:
        indices = np.asarray(indices, dtype=np.int64)
        return Split([self.images[i] for i in indices], self.labels[indices])

    def load(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image; an unreadable file raises DataError naming it."""
        ref = self.images[i]
        if isinstance(ref, np.ndarray):
            return Image.fromarray(ref).convert("RGB")
        try:
            with Image.open(ref) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {ref}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set. ``val`` is None when the data set has no validation split."""

    name: str
    classnames: tuple[str, ...]
    train: Split
    val: Split | None
    test: Split
    #: The hand-written zero-shot template; ``{}`` is replaced by the class name.
    template: str = "a photo of a {}."

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


@dataclass(frozen=True, eq=False)
class FewShot:
    """A few-shot task drawn from a data set: what an oracle is built on."""

    dataset: str
    classnames: tuple[str, ...]
    template: str
    shots: int
    seed: int
    train: Split
    val: Split
    test: Split
    #: a method's own selection draw (BBT's dev set): min(K, 4) a class from the training
    #: pool, disjoint from train and validation; None where the pool has too few images.
    dev: Split | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


def _per_class(labels: np.ndarray, k: int, num_classes: int, rng: np.random.Generator,
               split_name: str, dataset: str, exclude: np.ndarray | None = None) -> np.ndarray:
    chosen = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        if exclude is not None:
            pool = np.setdiff1d(pool, exclude, assume_unique=True)
        if len(pool) < k:
            raise DataError(
                f"{dataset}: class {c} has {len(pool)} images in the {split_name} split; "
                f"{k} are needed"
            )
        chosen.append(np.sort(rng.choice(pool, size=k, replace=False)))
    return np.concatenate(chosen)


def few_shot(dataset: Dataset, shots: int, seed: int) -> FewShot:
    """Draw K shots per class for training and min(K, 4) per class for validation.

    The draw depends only on (dataset, shots, seed). Train and validation never
    share an image: they come from different splits, or from disjoint parts of
    the train split when the data set has no validation split.
    """
    if shots not in SHOTS:
        raise ConfigError(f"shots must be one of {SHOTS}; got {shots!r}")
    rng = np.random.default_rng([seed, shots])
    n_cls = dataset.num_classes
    train_idx = _per_class(dataset.train.labels, shots, n_cls, rng, "train", dataset.name)
    n_val = min(shots, 4)
    taken = train_idx
    if dataset.val is not None:
        val_idx = _per_class(dataset.val.labels, n_val, n_cls, rng, "validation", dataset.name)
        val = dataset.val.subset(val_idx)
    else:
        val_idx = _per_class(dataset.train.labels, n_val, n_cls, rng, "train (for validation)",
                             dataset.name, exclude=train_idx)
        val = dataset.train.subset(val_idx)
        taken = np.concatenate([train_idx, val_idx])
    # Its own stream, after the others: train and validation are drawn as before it existed.
    try:
        dev_idx = _per_class(dataset.train.labels, n_val, n_cls, np.random.default_rng(
            [seed, shots, 0x646576]), "train (for a dev set)", dataset.name, exclude=taken)
        dev = dataset.train.subset(dev_idx)
    except DataError:
        dev = None  # too few images for one: a method that asks for it is refused (the oracle)
    return FewShot(
        dataset=dataset.name,
        classnames=dataset.classnames,
        template=dataset.template,
        shots=shots,
        seed=seed,
        train=dataset.train.subset(train_idx),
        val=val,
        test=dataset.test,
        dev=dev,
    )
