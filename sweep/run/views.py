"""Training views, drawn in the trial: each recipe's parameters, for the oracle to apply.

A trial draws its views from a stream of its own seed (``PromptObjective``) and
sends them with each training request as rows of numbers
(``sweep.oracle.requests``: ``VIEW_COLUMNS``, ``DASSL_VIEW_COLUMNS``), so a view
is the same whichever actor serves it; the oracle applies them on its device
(``sweep.oracle.augment``). Drawn on numpy: the trial never loads torch. Boxes
and centres are fractions of the side, so that a view does not depend on the
oracle's image size. The recipes (``PromptConfig.views``):

* ``crop_flip``: RandomResizedCrop (scale 0.5-1, ratio 3/4-4/3) and a horizontal
  flip, resized bilinearly: promptsweep's views before the releases' were read.
* ``dassl``: Dassl's ``_build_transform_train`` for ``random_resized_crop`` and
  ``random_flip`` at its default scale (``RRCROP_SCALE`` 0.08-1), bicubic, as
  ZIP's and BlackVIP's configs set it (``configs/trainers/*/vit_b16.yaml``).
* ``cbbt``: CBBT's Dassl fork, ``_build_transform_train_ma``: ``RandomChoice``
  (each half the time) between a bicubic RandomResizedCrop (scale 0.5-1) and a
  Resize followed by ``CutoutPIL(0.4)``, a square of 0.4 of the side centred on a
  random pixel and painted in one random RGB colour; then a flip.
* ``craft``: CraFT's and SharpZO's ``train_transform`` (mrflogs/CraFT: main_craft.py,
  yifanycc/sharpzo: main_sharpzo.py): a bicubic RandomResizedCrop (scale 0.5-1) and a
  flip, in Dassl's columns without a cutout.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sweep.oracle import DASSL_VIEW_COLUMNS, VIEW_COLUMNS

__all__ = ["RECIPES", "draw_dassl_views", "draw_views"]

#: RandomResizedCrop's default aspect ratios (torchvision, and every release here).
RATIO = (3 / 4, 4 / 3)


def _crop_box(rng: np.random.Generator, scale: tuple[float, float],
              ratio: tuple[float, float]) -> tuple[float, float, float, float]:
    """torchvision's ``RandomResizedCrop.get_params`` on the unit square, unrounded: 10 tries
    at an area fraction from ``scale`` and a log-uniform aspect ratio from ``ratio``, else
    (as for an image whose own ratio is in range) all of it. Written again on numpy, since
    the trial never loads torch. Returns (top, left, height, width)."""
    log_ratio = np.log(ratio)
    for _ in range(10):
        area = rng.uniform(*scale)
        aspect = np.exp(rng.uniform(*log_ratio))
        width, height = np.sqrt(area * aspect), np.sqrt(area / aspect)
        if width <= 1 and height <= 1:
            return rng.uniform(0, 1 - height), rng.uniform(0, 1 - width), height, width
    return 0.0, 0.0, 1.0, 1.0


def draw_views(rng: np.random.Generator, images: int, scale: tuple[float, float] = (0.5, 1.0),
               ratio: tuple[float, float] = RATIO) -> np.ndarray:
    """``crop_flip``: a RandomResizedCrop box and a flip (``RandomHorizontalFlip``, p = 0.5)
    for each of ``images`` square images; (images, 5) rows of ``VIEW_COLUMNS``."""
    out = np.empty((images, len(VIEW_COLUMNS)))
    for i in range(images):
        out[i, :4] = _crop_box(rng, scale, ratio)
        out[i, 4] = float(rng.random() < 0.5)
    return out


def draw_dassl_views(rng: np.random.Generator, images: int, scale: tuple[float, float],
                     cutout: float | None = None) -> np.ndarray:
    """Dassl's views: a bicubic RandomResizedCrop at ``scale`` or, with ``cutout``, half the
    time instead the whole image with a cutout of that fraction of the side
    (``RandomChoice``, CBBT's fork); then a flip. (images, 11) rows of ``DASSL_VIEW_COLUMNS``.

    The cutout follows ``CutoutPIL``: its centre is a uniform pixel (``np.random.randint``
    of the side: here a uniform fraction, floored to a pixel by the oracle) and its colour
    three uniform levels of 0-255 (``random.randint(0, 255)``), sent as fractions of 255.
    """
    out = np.zeros((images, len(DASSL_VIEW_COLUMNS)))
    for i in range(images):
        if cutout is None or rng.random() < 0.5:
            out[i, :4] = _crop_box(rng, scale, RATIO)
        else:  # Resize to the side the image already has, then the cutout
            out[i, :4] = 0.0, 0.0, 1.0, 1.0
            out[i, 5:8] = cutout, rng.random(), rng.random()
            out[i, 8:] = rng.integers(0, 256, size=3) / 255
        out[i, 4] = float(rng.random() < 0.5)
    return out


#: Each recipe's draw: (stream, images) -> the rows the oracle applies.
RECIPES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "crop_flip": draw_views,
    "dassl": lambda rng, images: draw_dassl_views(rng, images, scale=(0.08, 1.0)),
    "cbbt": lambda rng, images: draw_dassl_views(rng, images, scale=(0.5, 1.0), cutout=0.4),
    "craft": lambda rng, images: draw_dassl_views(rng, images, scale=(0.5, 1.0)),
}
