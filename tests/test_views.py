"""The releases' training views: drawn in the trial (``sweep.run.views``), applied on the device
(``sweep.oracle.augment``), against Dassl's transforms run on PIL images as the releases run them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import functional as TF

import methods
from methods.base import VIEW_RECIPES
from sweep.oracle.augment import augment
from sweep.run.views import RECIPES

SIDE = 32


def _dassl_on_pil(pixels: np.ndarray, row: np.ndarray) -> np.ndarray:
    """What the release's transform makes of a (S, S, 3) uint8 image for one drawn view:
    ``RandomChoice([RandomResizedCrop(S, bicubic), Compose([Resize(S), CutoutPIL(p)])])``
    then ``RandomHorizontalFlip``, on PIL (Dassl's ``_build_transform_train_ma``), with the
    random numbers taken from the row. Returns (S, S, 3) floats in [0, 1]."""
    image = Image.fromarray(pixels)
    top, left, height, width, flip, cutout, cutout_y, cutout_x, *colour = row
    if cutout == 0:  # RandomResizedCrop on the row's box, to the nearest pixel
        h, w = round(height * SIDE), round(width * SIDE)
        t, l = min(round(top * SIDE), SIDE - h), min(round(left * SIDE), SIDE - w)
        image = TF.resized_crop(image, t, l, h, w, [SIDE, SIDE], InterpolationMode.BICUBIC)
    else:  # Resize (already S), then Dassl's CutoutPIL.__call__ with the row's draws
        img_draw = ImageDraw.Draw(image)
        h, w = image.size[0], image.size[1]
        h_cutout, w_cutout = int(cutout * h + 0.5), int(cutout * w + 0.5)
        y_c, x_c = int(cutout_y * h), int(cutout_x * w)  # np.random.randint(h), (w)
        y1, y2 = np.clip(y_c - h_cutout // 2, 0, h), np.clip(y_c + h_cutout // 2, 0, h)
        x1, x2 = np.clip(x_c - w_cutout // 2, 0, w), np.clip(x_c + w_cutout // 2, 0, w)
        fill_color = tuple(int(round(c * 255)) for c in colour)  # random.randint(0, 255)
        img_draw.rectangle([x1, y1, x2, y2], fill=fill_color)
    if flip:
        image = TF.hflip(image)
    return np.asarray(image, dtype=np.float64) / 255


def test_every_recipe_a_config_can_name_is_drawn():
    assert tuple(RECIPES) == VIEW_RECIPES
    with pytest.raises(methods.ConfigError, match="views must be one of"):
        methods.REGISTRY.make_config("cbbt", {"views": "autoaugment"})
    views = {name: methods.REGISTRY.make_config(name, {}).views for name in
             ("cbbt", "cbbt-adapter", "cbbt-tip", "zip", "blackvip-tokens", "zo")}
    assert views == {"cbbt": "cbbt", "cbbt-adapter": "cbbt", "cbbt-tip": "cbbt",
                     "zip": "dassl", "blackvip-tokens": "dassl", "zo": "crop_flip"}


def test_cbbt_views_on_the_device_are_the_releases_transform_on_pil():
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(24, SIDE, SIDE, 3), dtype=np.uint8)  # noise: every
    # difference of filter (bilinear, a = -0.75) or of clipping between passes shows
    views = RECIPES["cbbt"](np.random.default_rng(0), len(pixels))
    cut, flip = views[:, 5] > 0, views[:, 4] == 1
    assert cut.any() and (~cut).any() and flip.any() and (~flip).any()
    ours = augment(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, views)
    ours = ours.permute(0, 2, 3, 1).numpy()
    theirs = np.stack([_dassl_on_pil(p, v) for p, v in zip(pixels, views)])
    # PIL rounds to 8 bits after each pass (up to half a level each, the first carried through
    # the second's weights); otherwise the same numbers. Bicubic at a = -0.75, or one pass
    # without PIL's clipping between the two, differs here by 11-25 levels.
    assert np.abs(ours - theirs).max() <= 1.5 / 255
    assert np.abs(ours[cut] - theirs[cut]).max() < 1e-6  # cutouts: exact, square and place


def test_view_draws_follow_the_releases_distributions():
    n = 4000
    cbbt = RECIPES["cbbt"](np.random.default_rng(1), n)
    dassl = RECIPES["dassl"](np.random.default_rng(1), n)
    assert np.array_equal(cbbt, RECIPES["cbbt"](np.random.default_rng(1), n))
    cut = cbbt[:, 5] > 0
    assert 0.47 < cut.mean() < 0.53 and 0.47 < cbbt[:, 4].mean() < 0.53  # RandomChoice, flip
    assert not (dassl[:, 5] > 0).any() and 0.47 < dassl[:, 4].mean() < 0.53
    # cutout rows: the whole image, a square of 0.4, a uniform pixel, a uniform 8-bit colour
    whole = cbbt[cut]
    assert np.array_equal(whole[:, :4], np.tile([0.0, 0.0, 1.0, 1.0], (len(whole), 1)))
    assert (whole[:, 5] == 0.4).all()
    assert np.quantile(whole[:, 6:8], [0.25, 0.5, 0.75]) == pytest.approx([0.25, 0.5, 0.75],
                                                                          abs=0.03)
    levels = whole[:, 8:] * 255
    assert np.allclose(levels, np.round(levels)) and levels.min() == 0 and levels.max() == 255
    # crop rows: the boxes torchvision's own RandomResizedCrop draws, on a large square image
    image = torch.empty(1, 1000, 1000)
    for views, scale in ((cbbt[~cut], (0.5, 1.0)), (dassl, (0.08, 1.0))):
        torch.manual_seed(0)
        boxes = np.array([RandomResizedCrop.get_params(image, scale, (3 / 4, 4 / 3))
                          for _ in range(len(views))]) / 1000
        for ours, theirs in ((views[:, 2] * views[:, 3], boxes[:, 2] * boxes[:, 3]),
                             (views[:, 3] / views[:, 2], boxes[:, 3] / boxes[:, 2]),
                             (views[:, 0] + views[:, 2] / 2, boxes[:, 0] + boxes[:, 2] / 2)):
            assert np.quantile(ours, [0.1, 0.5, 0.9]) == pytest.approx(
                np.quantile(theirs, [0.1, 0.5, 0.9]), abs=0.03)


def test_a_cutout_outside_its_bounds_is_refused():
    from sweep.errors import ConfigError
    from sweep.oracle import check_views

    row = RECIPES["cbbt"](np.random.default_rng(0), 1)
    assert check_views(row, 1).shape == (1, 11)
    for column, value in ((5, 1.0), (6, -0.1), (9, 1.5)):
        bad = row.copy()
        bad[0, column] = value
        with pytest.raises(ConfigError, match="cutout"):
            check_views(bad, 1)
