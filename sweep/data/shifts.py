"""Image-side shifts of the held-out digits: tasks of the embedded suite where the images,
not only the template, leave room for tuning (issue 15).

Each is the ``digits`` task (the same splits, labels and template) with every
image transformed once, deterministically:

* ``digits-inverted``: 255 - x (white digits on black become black on white),
  which the tiny model never saw.
* ``digits-noise``: Gaussian noise of std 60 (of 255) added and clipped to
  0..255; each image's noise is drawn from a generator keyed by its index in
  scikit-learn's digits, so every process and every draw order gives the
  same pixels.
* ``digits-mirror``: each image mirrored left to right.
* ``digits-rotated``: each image turned a quarter turn anticlockwise.
* ``digits-lowcontrast``: the pixels squeezed into 90..153 (90 + x / 4): the
  digits grey on grey.

The suite's tasks (``sweeps/embedded-suite.toml``) are those of these whose
zero-shot, CoOp and untuned starts leave tuning room (docs/embedded.md's table).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from sweep.data.digits import digits_split_indices, load_digits_task
from sweep.data.splits import Dataset, Split

__all__ = ["SHIFTED_DIGITS", "load_shifted_digits"]

#: The std of ``digits-noise``'s Gaussian noise, in pixel levels of 255.
NOISE_STD = 60.0
_NOISE_KEY = 0x4E4F4953  # "NOIS"


def _inverted(image: np.ndarray, index: int) -> np.ndarray:
    del index
    return 255 - image


def _noisy(image: np.ndarray, index: int) -> np.ndarray:
    rng = np.random.default_rng([_NOISE_KEY, index])
    noisy = image.astype(np.float64) + rng.normal(0.0, NOISE_STD, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _mirrored(image: np.ndarray, index: int) -> np.ndarray:
    del index
    return np.ascontiguousarray(image[:, ::-1])


def _rotated(image: np.ndarray, index: int) -> np.ndarray:
    del index
    return np.ascontiguousarray(np.rot90(image))


def _low_contrast(image: np.ndarray, index: int) -> np.ndarray:
    del index
    return (90 + image // 4).astype(np.uint8)


#: name -> the transform of one image (and its index in scikit-learn's digits).
SHIFTED_DIGITS = {"digits-inverted": _inverted, "digits-noise": _noisy,
                  "digits-mirror": _mirrored, "digits-rotated": _rotated,
                  "digits-lowcontrast": _low_contrast}


@functools.lru_cache(maxsize=len(SHIFTED_DIGITS))
def load_shifted_digits(name: str) -> Dataset:
    """The ``digits`` task with every image shifted by ``SHIFTED_DIGITS[name]``."""
    shift = SHIFTED_DIGITS[name]
    task, indices = load_digits_task(), digits_split_indices()

    def split(part: Split, which: str) -> Split:
        images = []
        for image, index in zip(part.images, indices[which]):
            out = shift(np.asarray(image), int(index))
            out.setflags(write=False)  # shared by every Split of the cached data set
            images.append(out)
        return Split(images, part.labels)

    return dataclasses.replace(task, name=name, train=split(task.train, "train"),
                               val=split(task.val, "val"), test=split(task.test, "test"))
