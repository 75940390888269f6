"""Augmented training views on the device, from decoded pixels in [0, 1].

A view is a row of numbers drawn in the trial (``sweep.run.views``) and sent
with the request (``check_views``), so a view is the same whichever actor
serves it. Two forms:

* ``VIEW_COLUMNS`` (``crop_flip``): a crop box, as fractions of the image's
  side, and a flip; all images of a request in one bilinear ``grid_sample``.
  This samples where torchvision's bilinear ``resized_crop`` samples (a crop of
  h pixels resized to S is read at h (k + 1/2) / S - 1/2), except on the crop's
  outermost half pixel, where it reads the neighbouring pixels instead of
  repeating the edge.
* ``DASSL_VIEW_COLUMNS`` (``dassl``, ``cbbt``): the box rounded to the nearest
  pixel, resized bicubically as the releases' PIL images are, then a cutout
  (``CutoutPIL``) and the flip, one image at a time with torchvision's functions
  (the crops differ in size: they do not stack).

The crops are taken from the node's decoded images (``sweep.data.PixelCache``:
the model's own preprocessing, resized and centre-cropped to its input side S)
and resized back to S. The difference from the releases, which crop the
original image before resizing it: a crop sees only the centre square that
the decoded cache keeps (for a 4:3 photo, the middle 3/4 of its width), and at
scale 0.5 it is upsampled from about 0.7 S pixels a side rather than taken
from the full-resolution original; CBBT's cutout branch resizes the whole
original to S x S (squeezing its aspect), here the centre square.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from sweep.oracle.requests import VIEW_COLUMNS

__all__ = ["augment"]


def augment(images: torch.Tensor, views: np.ndarray) -> torch.Tensor:
    """(m, 3, S, S) pixels in [0, 1] and (m, 5) or (m, 11) views -> the (m, 3, S, S) views."""
    if views.shape[1] == len(VIEW_COLUMNS):
        return _crop_flip(images.float(), views)
    return torch.stack([_dassl_view(image, row) for image, row in zip(images.float(), views)])


def _crop_flip(images: torch.Tensor, views: np.ndarray) -> torch.Tensor:
    v = torch.as_tensor(views, dtype=torch.float32, device=images.device)
    top, left, height, width, flip = v.unbind(dim=1)
    sign = 1.0 - 2.0 * flip  # -1 mirrors the output's x axis
    zero = torch.zeros_like(top)
    # Output grid in [-1, 1] (align_corners=False) -> the crop box in the input's coordinates.
    theta = torch.stack([torch.stack([sign * width, zero, 2 * left + width - 1], dim=1),
                         torch.stack([zero, height, 2 * top + height - 1], dim=1)], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def _dassl_view(image: torch.Tensor, row: np.ndarray) -> torch.Tensor:
    """One image (3, S, S) and its row of ``DASSL_VIEW_COLUMNS``: bicubic crop, cutout, flip."""
    side = image.shape[-1]
    top, left, height, width, flip, cutout, cutout_y, cutout_x, *colour = row.tolist()
    h, w = max(1, round(height * side)), max(1, round(width * side))
    if (h, w) != (side, side):
        t, l = min(round(top * side), side - h), min(round(left * side), side - w)
        crop = image[:, t:t + h, l:l + w]
        # PIL (the releases' images) resizes one axis at a time, the width first, and clips
        # to its 8-bit range in between; torch's antialiased bicubic is PIL's filter (a = -0.5)
        crop = TF.resize(crop, [h, side], InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
        image = TF.resize(crop, [side, side], InterpolationMode.BICUBIC,
                          antialias=True).clamp(0, 1)
    if cutout > 0:  # CutoutPIL: ImageDraw.rectangle, both corners included, clipped to the image
        half = int(cutout * side + 0.5) // 2
        y, x = min(int(cutout_y * side), side - 1), min(int(cutout_x * side), side - 1)
        y0, x0 = max(y - half, 0), max(x - half, 0)
        y1, x1 = min(y + half, side - 1), min(x + half, side - 1)
        fill = torch.tensor(colour, dtype=image.dtype, device=image.device)[:, None, None]
        image = TF.erase(image, y0, x0, y1 - y0 + 1, x1 - x0 + 1, fill)
    return TF.horizontal_flip(image) if flip else image
