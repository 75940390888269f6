"""Augmented training views on the device: RandomResizedCrop and horizontal flip of decoded pixels.

A view is a crop box, as fractions of the image's side, and a flip (the rows
of ``check_views``), drawn in the trial (``sweep.run.objective.draw_views``)
and sent with the request, so a view is the same whichever actor serves it.
The crops are taken from the node's decoded images (``sweep.data.PixelCache``:
the model's own preprocessing, resized and centre-cropped to its input side S)
and resized back to S, all images of a request in one ``grid_sample``: this
samples where torchvision's bilinear ``resized_crop`` samples (a crop of h
pixels resized to S is read at h (k + 1/2) / S - 1/2), except on the crop's
outermost half pixel, where it reads the neighbouring pixels instead of
repeating the edge. The difference from the releases, which crop the
original image before resizing it: a crop sees only the centre square that
the decoded cache keeps (for a 4:3 photo, the middle 3/4 of its width), and at
scale 0.5 it is upsampled from about 0.7 S pixels a side rather than taken
from the full-resolution original.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["augment"]


def augment(images: torch.Tensor, views: np.ndarray) -> torch.Tensor:
    """(m, 3, S, S) model inputs and (m, 5) views -> the (m, 3, S, S) augmented views.

    Bilinear crops and flips are linear per channel, so cropping the normalised
    inputs equals normalising the cropped pixels.
    """
    v = torch.as_tensor(views, dtype=torch.float32, device=images.device)
    top, left, height, width, flip = v.unbind(dim=1)
    sign = 1.0 - 2.0 * flip  # -1 mirrors the output's x axis
    zero = torch.zeros_like(top)
    # Output grid in [-1, 1] (align_corners=False) -> the crop box in the input's coordinates.
    theta = torch.stack([torch.stack([sign * width, zero, 2 * left + width - 1], dim=1),
                         torch.stack([zero, height, 2 * top + height - 1], dim=1)], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)
