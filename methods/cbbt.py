"""CBBT as released: a one-token text prompt by a zeroth-order gradient, prompt only.

Guo et al., Findings of EMNLP 2023; guozix/cbbt: trainers/cooppara.py,
configs/trainers/CBBT/*.yaml (METHODS.md section 2, FIDELITY.md). The
trainer that runs in the release tunes the prompt alone: the adapter trainers
are commented out and absent from every commit, so the adapter variants
(``methods.zo_adapter``: ``cbbt-adapter``, ``cbbt-tip``) are reconstructions.

Protocol: one context token initialised from "a" (512 numbers on ViT-B), unit-
sphere directions, eps = max(1/d, 1e-3), one-sided, q = 256 on one 32-image
mini-batch (257 losses a step), the estimate clipped to norm 5, Adam lr 0.002
with weight decay 5e-4 on the context, one warm-up epoch at lr 1e-5, then a
cosine per epoch (``schedule = "cosine_epoch"``, an epoch being
max(1, train images // 32) steps, as the loop tells ``plan()``).

Mini-batches are cut from per-epoch permutations, the last partial one dropped
(``minibatches = "epoch"``, Dassl's loader), each image is a view as CBBT's
Dassl fork draws it, a bicubic RandomResizedCrop (scale 0.5-1) or a cutout of
0.4 of the side, either at random, then a flip (``augment``, ``views = "cbbt"``,
``sweep.run.views``), and the image tower runs in fp32 as the release does
(``precision``).

Example (a quadratic; the loop would tell plan() the steps per epoch):
    >>> import numpy as np
    >>> from methods.base import Evaluation, SearchSpace
    >>> method = CBBT(CBBTConfig(q=8, lr=0.05), SearchSpace(16), seed=0)
    >>> method.plan(40, steps_per_epoch=4)
    >>> [f"{method.rule.learning_rate(t, 40):.2g}" for t in (0, 3, 4, 39)]
    ['1e-05', '1e-05', '0.05', '0.0048']
    >>> target = np.full(16, 0.3)
    >>> for _ in range(40):
    ...     z = method.ask()
    ...     method.tell(z, Evaluation(losses=((z - target) ** 2).sum(axis=1)))
    >>> bool(((method.recommend() - target) ** 2).sum() < (target ** 2).sum())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from methods.zeroth_order import ZerothOrder, ZerothOrderConfig

__all__ = ["CBBT", "CBBTConfig"]


@dataclass(frozen=True, kw_only=True)
class CBBTConfig(ZerothOrderConfig):
    """CBBT's published prompt side (guozix/cbbt: configs/trainers/CBBT/*.yaml, cooppara.py)."""

    #: one context token (CBBT N_CTX 1): the search space is its offset (512 on ViT-B).
    n_text: int = 1
    #: initial context phrase (CBBT: "a").
    text_init: str | None = "a"
    #: CBBT searches the context directly (no subspace).
    intrinsic_dim_text: int | None = None
    #: CBBT's estimator: random directions on the unit sphere, one-sided, same batch.
    estimator: str = "sphere"
    #: directions per step (CBBT: 256, so 257 losses per step).
    q: int = 256
    #: radius; None: the estimator's default (sphere: CBBT's eps = max(1/d, 0.001)).
    mu: float | None = None
    #: images per step (CBBT: batch 32).
    batch_size: int | None = 32
    #: Adam (CBBT).
    update: str = "adam"
    #: prompt learning rate (CBBT: 0.002).
    lr: float = 0.002
    #: torch Adam weight decay, L2 on the gradient (CBBT: 5e-4).
    weight_decay: float = 5e-4
    #: Dassl's cosine, stepped once per epoch (CBBT).
    schedule: str = "cosine_epoch"
    #: CBBT's one warm-up epoch at warmup_lr (1e-5).
    warmup_epochs: int = 1
    #: clip_grad_norm on the estimate (CBBT: 5).
    clip_norm: float | None = 5.0
    #: CBBT trains in fp32 (train.py, PREC fp32): the image tower too, whatever the sweep's.
    precision: str | None = "fp32"
    #: CBBT trains on augmented views (configs/trainers/CBBT/*.yaml, its Dassl fork)...
    augment: bool = True
    #: ... its fork's: a bicubic RandomResizedCrop (scale 0.5-1) or a cutout, then a flip
    #: (``_build_transform_train_ma``); "crop_flip": promptsweep's earlier views (v3).
    views: str = "cbbt"


class CBBT(ZerothOrder):
    """CBBT's released trainer: the zeroth-order prompt alone (the module docstring)."""

    name: ClassVar[str] = "cbbt"
