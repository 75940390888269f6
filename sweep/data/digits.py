"""The embedded data set: scikit-learn's handwritten digits, split in two halves.

``sklearn.datasets.load_digits`` holds 1,797 grey 8x8 images of the digits 0-9
(pixel values 0..16). It ships with scikit-learn, so the embedded default needs
no download. The images are divided, per class, into two disjoint halves:

- the PRETRAINING half, on which ``python -m sweep.pretrain_tiny`` trains the
  embedded tiny CLIP (see :func:`load_pretraining_digits`);
- the DOWNSTREAM half, the few-shot task that prompts are tuned on
  (see :func:`load_digits_task`), itself split into train / val / test
  (about 35% / 15% / 50% of each class).

Every split is fixed: images are ordered within their class by a hash of their
index in ``load_digits``, so the split depends on no random number generator
(whose streams may change between numpy versions) and on no few-shot seed.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from sweep.data.splits import Dataset, Split

__all__ = [
    "DIGIT_CLASSNAMES",
    "DIGITS_TEMPLATE",
    "digits_split_indices",
    "load_digits_task",
    "load_pretraining_digits",
]

#: Class ``i`` is the digit ``i``.
DIGIT_CLASSNAMES: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)
#: The hand-written zero-shot template of the downstream task. The tiny model is
#: pretrained on other caption templates (sweep.pretrain_tiny), which leaves room
#: for prompt tuning.
DIGITS_TEMPLATE = "a photo of the number {}."

# Fixed constants of the split; changing any of them changes the task and
# invalidates the shipped weights and every recorded result.
_SPLIT_KEY = b"promptsweep-digits-v1"
_DOWNSTREAM_FRACTIONS = (0.35, 0.15)  # train, val; test is the rest (about 50%)


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as read-only uint8 (n, 8, 8) images in 0..255 and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 0..16 -> 0..255; rounding keeps 16 at exactly 255 and 0 at 0.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    # The arrays are cached and shared by every Split: make them immutable.
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _hash_order(indices: np.ndarray) -> np.ndarray:
    """``indices`` sorted by a keyed hash of each index: a fixed pseudo-random order."""
    keys = [hashlib.blake2b(str(int(i)).encode(), key=_SPLIT_KEY, digest_size=8).digest()
            for i in indices]
    order = sorted(range(len(indices)), key=lambda j: keys[j])
    return indices[np.asarray(order, dtype=np.int64)]


@functools.lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    _, labels = _raw_digits()
    parts: dict[str, list[np.ndarray]] = {"pretrain": [], "train": [], "val": [], "test": []}
    for c in range(len(DIGIT_CLASSNAMES)):
        members = _hash_order(np.flatnonzero(labels == c))
        n_pre = len(members) // 2
        parts["pretrain"].append(members[:n_pre])
        downstream = members[n_pre:]
        n_train = round(_DOWNSTREAM_FRACTIONS[0] * len(downstream))
        n_val = round(_DOWNSTREAM_FRACTIONS[1] * len(downstream))
        parts["train"].append(downstream[:n_train])
        parts["val"].append(downstream[n_train:n_train + n_val])
        parts["test"].append(downstream[n_train + n_val:])
    out = {}
    for name, chunks in parts.items():
        # Sorted: the splits list images in load_digits order, classes interleaved.
        idx = np.sort(np.concatenate(chunks))
        idx.setflags(write=False)
        out[name] = idx
    return out


def digits_split_indices() -> dict[str, np.ndarray]:
    """Indices into ``sklearn.datasets.load_digits()`` of every split.

    Returns:
        ``{"pretrain": ..., "train": ..., "val": ..., "test": ...}``: sorted,
        pairwise disjoint int64 arrays that together cover all 1,797 images.
        ``pretrain`` is the pretraining half; the other three are the
        downstream half.
    """
    return dict(_split_indices())


def _split(indices: np.ndarray) -> Split:
    images, labels = _raw_digits()
    return Split([images[i] for i in indices], labels[indices])


def load_digits_task() -> Dataset:
    """The downstream few-shot task: the half of the digits the tiny CLIP never saw.

    Returns:
        A Dataset named ``digits`` with 10 classes (``DIGIT_CLASSNAMES``), the
        hand-written template ``DIGITS_TEMPLATE``, and fixed train / val / test splits
        of 8x8 uint8 images (30-32 / 13-14 / 44-46 images per class; 314 / 137 / 450
        in all).
    """
    idx = _split_indices()
    return Dataset(
        name="digits",
        classnames=DIGIT_CLASSNAMES,
        train=_split(idx["train"]),
        val=_split(idx["val"]),
        test=_split(idx["test"]),
        template=DIGITS_TEMPLATE,
    )


def load_pretraining_digits() -> tuple[np.ndarray, np.ndarray]:
    """The pretraining half of the digits, disjoint from :func:`load_digits_task`.

    Returns:
        ``(images, labels)``: a new uint8 array (n, 8, 8) with values 0..255 and
        an int64 array (n,) of digit labels.
    """
    images, labels = _raw_digits()
    idx = _split_indices()["pretrain"]
    return images[idx].copy(), labels[idx].copy()
