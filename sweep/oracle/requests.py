"""What a request to an oracle is: where its prompts go (``PromptLayout``) and the checks of its
arrays; and where the embedded model's files are (its config is read by the cost model).

Torch-free, so that a trial's process, which only sends requests to the pool,
never loads torch or open_clip for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.errors import ConfigError, ModelError
from sweep.spec import EMBEDDED_MODEL, PRECISIONS

__all__ = ["DASSL_VIEW_COLUMNS", "EMBEDDED_CONFIG", "EMBEDDED_WEIGHTS", "VIEW_COLUMNS", "PromptLayout",
           "TaskKey", "check_subset", "check_views", "count_candidates"]

_EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "embedded"
#: The embedded model's open_clip config and weights (written by ``python -m sweep.pretrain_tiny``).
EMBEDDED_CONFIG = _EMBEDDED_DIR / f"{EMBEDDED_MODEL}.json"
EMBEDDED_WEIGHTS = _EMBEDDED_DIR / f"{EMBEDDED_MODEL}.pt"


@dataclass(frozen=True)
class TaskKey:
    """Which few-shot task an oracle serves; the actors build it from this alone."""

    dataset: str
    data_root: str | None
    shots: int
    seed: int


@dataclass(frozen=True, kw_only=True)
class PromptLayout:
    """Where the tuned prompt goes. Context tokens are shared by all classes."""

    #: number of text context tokens inserted after the start token.
    n_text: int = 8
    #: number of visual prompt tokens inserted after the class token (ViT only).
    n_visual: int = 0
    #: one prompt per layer (VPT-deep) instead of one at the input.
    deep: bool = False
    #: phrase whose token embeddings initialise the context (its length must be n_text).
    text_init: str | None = None
    #: with n_text = 0: the class prompts are the data set's hand-written template
    #: (BlackVIP's text side), not "{class}.".
    template: bool = False
    #: the image tower's precision for this method ("fp32", "bf16", "fp16"); None: the
    #: model's (``[model] precision``). CBBT's release runs fp32.
    precision: str | None = None

    def __post_init__(self) -> None:
        for name in ("n_text", "n_visual"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 64:
                raise ConfigError(f"prompt layout: {name} must be an integer in [0, 64]; got {value!r}")
        if self.text_init is not None and self.n_text == 0:
            raise ConfigError("prompt layout: text_init needs n_text > 0")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"prompt layout: precision must be one of {', '.join(PRECISIONS)} "
                              f"or None; got {self.precision!r}")
        if self.template and self.n_text:
            raise ConfigError("prompt layout: the data set's template takes no context (n_text = 0)")


def count_candidates(layout: PromptLayout, text_shape: tuple[int, ...], visual_shape: tuple[int, ...],
                     text, visual) -> int:
    """Check prompt arrays against the layout and return the number of candidates n.

    Raises:
        ModelError: a prompt is missing, unexpected, or of the wrong shape.
    """
    n = None
    for name, value, shape, size in (("text", text, text_shape, layout.n_text),
                                      ("visual", visual, visual_shape, layout.n_visual)):
        if size == 0:
            if value is not None and np.size(value) > 0:
                raise ModelError(f"{name} prompts were given but the layout has n_{name} = 0")
            continue
        if value is None:
            raise ModelError(f"the layout has {size} {name} tokens: {name} prompts are required")
        got = tuple(value.shape)
        if len(got) != len(shape) + 1 or got[1:] != shape:
            raise ModelError(f"{name} prompts must have shape (n, {', '.join(map(str, shape))}); got {got}")
        if n is not None and got[0] != n:
            raise ModelError(f"text and visual prompts disagree on the number of candidates: {n} vs {got[0]}")
        n = got[0]
    if n is None:
        raise ModelError("the layout has no prompt tokens: nothing to evaluate")
    if n == 0:
        raise ModelError("a request needs at least one candidate")
    return n


def check_subset(subset, train_size: int) -> np.ndarray | None:
    """A mini-batch's training indices as int64 (None: the whole training set).

    Raises:
        ConfigError: not a non-empty 1-d array of indices in [0, train_size).
    """
    if subset is None:
        return None
    idx = np.asarray(subset, dtype=np.int64)
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= train_size:
        raise ConfigError(f"subset must be a non-empty 1-d array of training indices in "
                          f"[0, {train_size}); got shape {idx.shape}")
    return idx


#: A view's row, in fractions of the image's side: a crop box and a flip (1: mirrored, 0: not),
#: cropped and resized bilinearly (promptsweep's earlier views).
VIEW_COLUMNS = ("top", "left", "height", "width", "flip")
#: Dassl's views: the crop resized bicubically as PIL does, and a cutout: where ``cutout`` > 0,
#: a square of that fraction of the side centred at (``cutout_y``, ``cutout_x``) in [0, 1),
#: painted in one colour (``red``, ``green``, ``blue`` in [0, 1]) after the crop, before the flip.
DASSL_VIEW_COLUMNS = VIEW_COLUMNS + ("cutout", "cutout_y", "cutout_x", "red", "green", "blue")


def check_views(views, images: int) -> np.ndarray | None:
    """A training request's augmented views as float64 (m, 5) or (m, 11), one row per image
    (None: the images as they are): rows of ``VIEW_COLUMNS`` or ``DASSL_VIEW_COLUMNS``, each
    crop box inside the unit square.

    Raises:
        ConfigError: not one row per image of the request, or a box or cutout outside the image.
    """
    if views is None:
        return None
    v = np.asarray(views, dtype=np.float64)
    widths = (len(VIEW_COLUMNS), len(DASSL_VIEW_COLUMNS))
    if v.ndim != 2 or v.shape[0] != images or v.shape[1] not in widths:
        raise ConfigError(f"views must have one row per image, of {widths[0]} columns "
                          f"({', '.join(VIEW_COLUMNS)}) or {widths[1]} (and "
                          f"{', '.join(DASSL_VIEW_COLUMNS[widths[0]:])}): shape ({images}, "
                          f"{widths[0]} or {widths[1]}); got {v.shape}")
    top, left, height, width, flip = v.T[:5]
    eps = 1e-9
    if not (np.isfinite(v).all() and (height > 0).all() and (width > 0).all()
            and (top >= -eps).all() and (left >= -eps).all() and (top + height <= 1 + eps).all()
            and (left + width <= 1 + eps).all() and np.isin(flip, (0.0, 1.0)).all()):
        raise ConfigError("views: each crop box must lie in the image (fractions of its side in "
                          "[0, 1], height and width > 0) and each flip be 0 or 1")
    cutout, colour = v[:, 5:8], v[:, 8:]
    if not ((cutout >= 0).all() and (cutout < 1).all() and (colour >= 0).all()
            and (colour <= 1).all()):
        raise ConfigError("views: each cutout's size and centre must lie in [0, 1) and its "
                          "colour in [0, 1]")
    return v
