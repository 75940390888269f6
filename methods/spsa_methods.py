"""The SPSA methods: ZIP (clipped SPSA) and BlackVIP's SPSA-GC on visual tokens.

Both are registered configurations of the zeroth-order method
(``methods.zeroth_order``): an SPSA estimator with Spall's gains, BlackVIP's
settings (``BlackVIPSPSAConfig``) that ZIP reuses.

Example (ZIP and BlackVIP on a quadratic in 20 dimensions)::

    >>> import numpy as np
    >>> from methods.base import Evaluation, SearchSpace
    >>> target = np.full(20, 0.5)
    >>> for method in (ZIP(ZIPConfig(lr=0.05), SearchSpace(20), seed=0),
    ...                BlackVIP(BlackVIPConfig(), SearchSpace(20), seed=0)):
    ...     for _ in range(200):
    ...         z = method.ask()
    ...         method.tell(z, Evaluation(losses=0.1 * ((z - target) ** 2).sum(axis=1)))
    ...     error = ((method.recommend() - target) ** 2).sum()
    ...     print(method.name, bool(error < 0.5 * (target**2).sum()))
    zip True
    blackvip-tokens True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from methods.zeroth_order import ZerothOrder, ZerothOrderConfig

__all__ = ["BlackVIP", "BlackVIPConfig", "BlackVIPSPSAConfig", "ZIP", "ZIPConfig"]


@dataclass(frozen=True, kw_only=True)
class BlackVIPSPSAConfig(ZerothOrderConfig):
    """BlackVIP's SPSA and gains (changdaeoh/BlackVIP), which ZIP reuses (LOG-postech/ZIP)."""

    #: SPSA draws per step (BlackVIP, ZIP: 5, so 10 points per step).
    q: int = 5
    #: SPSA radius c of c_k = c / k^gamma (BlackVIP, ZIP: 0.01).
    mu: float | None = 0.01
    #: BlackVIP's segmented-uniform perturbations |D_j| ~ U[0.5, 1) (ZIP reuses its code).
    spsa_distribution: str | None = "segmented"
    #: images per step (BlackVIP: batch 128; ZIP: one call is one forward of <= 128 images).
    batch_size: int | None = 128
    #: plain step x <- x - a_k g, the optimiser adds no momentum (BlackVIP, ZIP).
    update: str = "spsa"
    #: gain a of a_k = a / (k + o)^alpha (BlackVIP, ZIP: 0.01).
    lr: float = 0.01
    #: alpha of a_k (BlackVIP, ZIP: 0.4).
    spsa_alpha: float = 0.4
    #: offset o of a_k (BlackVIP, ZIP: 1, so a_1 = a / 2^alpha).
    spsa_offset: float = 1.0
    #: BlackVIP and ZIP train on augmented views (their configs' TRANSFORMS)...
    augment: bool = True
    #: ... Dassl's: RandomResizedCrop at its default scale 0.08-1, bicubic (their INTERPOLATION),
    #: and a flip; "crop_flip": promptsweep's earlier views (scale 0.5-1, bilinear; ZIP v3,
    #: BlackVIP v2).
    views: str = "dassl"


@dataclass(frozen=True, kw_only=True)
class ZIPConfig(BlackVIPSPSAConfig):
    """ZIP's published defaults (Park et al., ICLR 2025; LOG-postech/ZIP: trainers/zip.py)."""

    #: ZIP's 8 text context tokens.
    n_text: int = 8
    #: ZIP's intrinsic dimension ID (500): rows of ID // 8 = 62 values per token.
    intrinsic_dim_text: int | None = 500
    #: ZIP's low-rank map, 417 variables at rank 5 ("dense": v1's Gaussian A z of
    #: intrinsic_dim_text variables, BBT's scale, which moves a token 40-70x less).
    text_subspace: str = "lowrank"
    #: ZIP's rank 5.
    subspace_rank: int = 5
    #: ZIP's context starts from N(0, 0.02^2), not zero.
    text_init_std: float | None = 0.02
    #: ZIP reuses BlackVIP's SPSA (two-sided), without the gradient correction.
    estimator: str = "spsa"
    #: radius decay gamma (ZIP: 0.1).
    gamma: float | None = 0.1
    #: ZIP's clipping g <- g min(1, sqrt(dim) / |g|).
    clip_sqrt_dim: bool = True


class ZIP(ZerothOrder):
    """ZIP: clipped SPSA on a text prompt in a low-dimensional subspace (Park et al., ICLR 2025).

    ZIP's parametrisation (version 2): delta_i = F_i(row_i(U diag(s) V^T + 1
    shared^T)), rank 5, ID 500, so 417 variables from ZIP's initialisation
    (``methods.subspace``, "lowrank"); the context starts from N(0, 0.02^2).
    One deviation: ZIP's F_i is a Fastfood transform, here a dense Gaussian
    of the same norm-preserving scale. Version 1 searched a dense Gaussian
    subspace of 417 dimensions at BBT's scale (``text_subspace = "dense"``,
    ``intrinsic_dim_text = 417``, ``text_init_std = None``). Budget: ZIP counts
    calls (one forward of one batch of <= 128 images); 5,000 calls = 500 steps
    of 10 points. Example: the module docstring.
    """

    name: ClassVar[str] = "zip"


@dataclass(frozen=True, kw_only=True)
class BlackVIPConfig(BlackVIPSPSAConfig):
    """BlackVIP's published defaults (Oh et al., CVPR 2023; changdaeoh/BlackVIP)."""

    #: no text context: BlackVIP's text side is a fixed prompt,
    n_text: int = 0
    #: the data set's hand-written template (BlackVIP: trainers/blackvip.py).
    text_template: bool = True
    #: 5 visual prompt tokens stand in for BlackVIP's pixel-space prompt generator.
    n_visual: int = 5
    #: the visual tokens are searched directly (no subspace).
    intrinsic_dim_visual: int | None = None
    #: SPSA with BlackVIP's gradient correction (the estimator carries m_k).
    estimator: str = "spsa_gc"
    #: radius decay gamma (BlackVIP: 0.2).
    gamma: float | None = 0.2
    #: gradient-correction beta (BlackVIP: 0.9).
    momentum: float = 0.9
    #: the image tower in fp32 (version 3; before: the sweep's, bf16 on a GPU). The visual
    #: prompt goes through the image tower, where bf16's rounding (2^-8) is of the order of
    #: SPSA's steps (docs/oracle.md, "Precision"). BlackVIP's release runs its forwards under
    #: fp16 autocast (trainers/blackvip.py, "for fast training"), on a pixel prompt:
    #: ``precision = "fp16"`` is that, None the sweep's ``[model] precision``.
    precision: str | None = "fp32"


class BlackVIP(ZerothOrder):
    """BlackVIP's optimiser, SPSA-GC, on 5 visual prompt tokens (Oh et al., CVPR 2023):
    registered as ``blackvip-tokens``, since it is not BlackVIP's method.

    BlackVIP tunes a pixel-space prompt generator (a frozen MAE encoder and a
    9,920-parameter decoder, METHODS.md section 4); this project has no pixel
    prompts, so the same optimiser tunes 5 visual prompt tokens directly (a
    subspace is one setting away: ``intrinsic_dim_visual``). The text side is
    the data set's hand-written template, as in BlackVIP (``text_template``;
    the earlier ``blackvip`` used "{class}."). BlackVIP counts no queries;
    here a step costs 2q = 10 points. Example: the module docstring.
    """

    name: ClassVar[str] = "blackvip-tokens"
