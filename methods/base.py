"""The method interface: batched ask/tell over a search space; the caller owns the loop.

A method never sees a model. It proposes points z of its search space, and
is told what the objective returned for them. The loop (``sweep.run.iter_run``) is::

    method.plan(asks)                         # how many asks the budget allows
    while not method.stop():
        z = method.ask()                      # (ask_size, dim)
        evaluation = objective(z)             # losses (and features, gradients on request)
        method.tell(z, evaluation)
    best = method.recommend()                 # (dim,)

The start point is always z = 0: a parametrisation maps z to prompts as
p = p0 + f(z), so the initial prompt lives in the parametrisation, not here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from methods.errors import ConfigError

__all__ = ["VIEW_RECIPES", "Evaluation", "Method", "PromptConfig", "SearchSpace"]

#: The training views a config can name (``PromptConfig.views``; drawn by ``sweep.run.views``).
VIEW_RECIPES = ("crop_flip", "dassl", "cbbt", "craft")


@dataclass(frozen=True, eq=False)
class Evaluation:
    """What the objective returns for a batch of n candidates.

    Attributes:
        losses: (n,) mean cross-entropy (or any loss to minimise).
        accuracies: (n,) top-1 accuracy, when the objective knows it.
        text_features: (n, C, D) normalised class embeddings, only on request.
        image_features: (n | 1, m, D) normalised image features, only on request.
        labels: (m,) labels of the images behind the features.
        logit_scale: exp of the model's logit scale, with the features.
        gradients: (n, dim) true gradients, only for glass-box (white-box) methods.
        indices: (m,) which training images the features are of, in ``labels``' order
            (set by the objective, which drew the mini-batch; not the black box's answer).
    """

    losses: np.ndarray
    accuracies: np.ndarray | None = None
    text_features: np.ndarray | None = None
    image_features: np.ndarray | None = None
    labels: np.ndarray | None = None
    logit_scale: float | None = None
    gradients: np.ndarray | None = None
    indices: np.ndarray | None = None


@dataclass(frozen=True)
class SearchSpace:
    """The space a method searches: R^dim, optionally cut into blocks (one per prompt layer)."""

    dim: int
    #: contiguous blocks of coordinates, e.g. one per layer for deep prompts; None = one block.
    blocks: tuple[tuple[int, int], ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"a search space needs dim >= 1; got {self.dim!r}")
        if self.blocks is not None:
            ends = [b for block in self.blocks for b in block]
            if ends[0] != 0 or ends[-1] != self.dim or any(a > b for a, b in zip(ends, ends[1:])):
                raise ConfigError(f"blocks {self.blocks} must tile [0, {self.dim}) in order")

    @property
    def block_slices(self) -> list[slice]:
        return [slice(a, b) for a, b in (self.blocks or ((0, self.dim),))]


@dataclass(frozen=True, kw_only=True)
class PromptConfig:
    """Where a method's prompt goes and how its search space maps onto it.

    Every method's config extends this. The oracle reads the layout fields; the
    parametrisation (``methods.subspace``) reads the rest. With an intrinsic
    dimension of None the search space is the prompt itself (no projection).
    """

    #: text context tokens after the start token (shared by all classes).
    n_text: int = 8
    #: visual prompt tokens after the class token (ViT only; 0 for none).
    n_visual: int = 0
    #: one prompt per layer (VPT-deep) instead of one at the input.
    deep: bool = False
    #: phrase whose token embeddings are the initial context (its length must be n_text).
    text_init: str | None = None
    #: with n_text = 0: the class prompts are the data set's hand-written template (BlackVIP),
    #: not "{class}.".
    text_template: bool = False
    #: the image tower's precision, "fp32", "bf16" or "fp16", as the method's release runs
    #: (CBBT: fp32); None: the sweep's ``[model] precision``.
    precision: str | None = None
    #: dimension of the random text subspace per layer (None: search the context directly).
    intrinsic_dim_text: int | None = None
    #: dimension of the random visual subspace per layer (None: search the prompt directly).
    intrinsic_dim_visual: int | None = None
    #: sigma of the projection rule s = std_hat / (sqrt(d) * sigma) (BBT, BPT-VLM).
    projection_sigma: float = 1.0
    #: alpha of the deep rule s = alpha * std_hidden / (sqrt(d) * sigma) (BBTv2, BPT-VLM deep).
    projection_alpha: float = 1.0
    #: the entries of the dense text projection drawn N(0, projection_std^2), a fixed std
    #: (CraFT, SharpZO: ``nn.init.normal_(std)``, 0.2; 1 on DTD, EuroSAT, ImageNet); None:
    #: BBT's rule, token_embedding_std / (sqrt(d) projection_sigma).
    projection_std: float | None = None
    #: the text subspace's form: "dense" (p = p0 + A z, BBT's scale rule) or "lowrank" (ZIP:
    #: per token, U diag(s) V^T + shared, mapped to the width norm-preservingly; see
    #: methods.lowrank). With "lowrank", intrinsic_dim_text is ZIP's ID, not dim.
    text_subspace: str = "dense"
    #: the rank of the "lowrank" text subspace (ZIP: 5).
    subspace_rank: int = 5
    #: p0 of the text context drawn N(0, std^2) from the seed (ZIP, CoOp without an init:
    #: 0.02), added to the init; None: the init alone (zeros, or text_init's embeddings).
    text_init_std: float | None = None
    #: train on augmented views (``views``), drawn per training request from the seed, as
    #: CBBT, ZIP and BlackVIP do; validation, test and dev images are never augmented.
    augment: bool = False
    #: with ``augment``, which views (``sweep.run.views``): "crop_flip", RandomResizedCrop
    #: (scale 0.5-1), bilinear, and a horizontal flip (promptsweep's views before the
    #: releases' were read); "dassl", Dassl's RandomResizedCrop (scale 0.08-1), bicubic, and
    #: a flip (ZIP, BlackVIP); "cbbt", CBBT's fork: a bicubic RandomResizedCrop (scale 0.5-1)
    #: or a cutout of 0.4 of the side in a random colour, either at random, then a flip;
    #: "craft", CraFT's and SharpZO's ``train_transform``: a bicubic RandomResizedCrop
    #: (scale 0.5-1) and a flip.
    views: str = "crop_flip"
    #: with ``augment``, draw each training image's view once, from the seed, and show that
    #: view in every training request (the features of one augmented pass, cached for the
    #: run: CraFT's and SharpZO's ``pre_load_features`` over ``train_loader_F``), except in
    #: the requests a method asks fresh views for (``Method.fresh_views``); False: every
    #: request draws views of its own.
    fixed_views: bool = False

    @property
    def planned_from_budget(self) -> bool:
        """Whether the method's schedule is planned from its budget (``Method.plan``), so
        that a run for a smaller budget differs from the start of one for a larger (a
        cosine): a sweep with ``[budget] limits`` runs such a method once per level."""
        return False

    @property
    def projection_scale_sigma(self) -> float:
        """The sigma the projection rules divide (or multiply) by: ``projection_sigma``, or
        a method's search sigma where its release has one sigma for both (BPT-VLM)."""
        return self.projection_sigma

    def __post_init__(self) -> None:
        for name in ("n_text", "n_visual"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"{name} must be >= 0; got {value}")
        if self.n_text + self.n_visual == 0:
            raise ConfigError("a prompt needs n_text + n_visual > 0")
        if self.precision not in (None, "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16, fp16 or None; got {self.precision!r}")
        if self.text_template and self.n_text:
            raise ConfigError("text_template takes no context tokens (n_text = 0)")
        for name in ("intrinsic_dim_text", "intrinsic_dim_visual"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or None; got {value}")
        if self.views not in VIEW_RECIPES:
            raise ConfigError(f"views must be one of {', '.join(VIEW_RECIPES)}; got {self.views!r}")
        if self.text_subspace not in ("dense", "lowrank"):
            raise ConfigError(f"text_subspace must be 'dense' or 'lowrank'; got "
                              f"{self.text_subspace!r}")
        if self.text_subspace == "lowrank":
            if self.deep or self.intrinsic_dim_text is None:
                raise ConfigError("a 'lowrank' text subspace needs a shallow prompt and an "
                                  "intrinsic_dim_text")
            if self.subspace_rank < 1 or self.intrinsic_dim_text < self.n_text:
                raise ConfigError(f"a 'lowrank' text subspace needs subspace_rank >= 1 and "
                                  f"intrinsic_dim_text >= n_text ({self.n_text}); got "
                                  f"{self.subspace_rank}, {self.intrinsic_dim_text}")
        if self.projection_std is not None and not (
                self.projection_std > 0 and self.text_subspace == "dense"
                and not self.deep and self.intrinsic_dim_text is not None):
            raise ConfigError(f"projection_std must be > 0 or None, and needs a shallow dense "
                              f"text subspace (intrinsic_dim_text); got {self.projection_std}")
        if self.text_init_std is not None and not self.text_init_std >= 0:
            raise ConfigError(f"text_init_std must be >= 0 or None; got {self.text_init_std}")
        if not self.projection_sigma > 0 or not self.projection_alpha > 0:
            raise ConfigError(
                f"projection_sigma and projection_alpha must be > 0; got "
                f"{self.projection_sigma}, {self.projection_alpha}"
            )


class Method(ABC):
    """A batched ask/tell optimiser over a SearchSpace.

    Class attributes say what the loop must provide:
        black_box: False for methods that need true gradients (reported as such).
        needs_features: tell() wants text/image features (adapter methods).
        needs_gradient: tell() wants ``Evaluation.gradients`` (glass-box oracle only).
    """

    name: ClassVar[str] = ""
    black_box: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False
    needs_gradient: ClassVar[bool] = False

    def __init__(self, config: Any, space: SearchSpace, seed: int) -> None:
        self.config = config
        self.space = space
        self.seed = int(seed)

    @property
    def dim(self) -> int:
        return self.space.dim

    @property
    @abstractmethod
    def ask_size(self) -> int:
        """How many candidates the next ask() returns (the loop checks the budget with it)."""

    def plan(self, asks: int | None, steps_per_epoch: int | None = None) -> None:
        """Told once, before the first ask, how many asks the budget allows (None: unknown)
        and, for a method with a mini-batch, how many asks make one pass over the training
        set (``max(1, train images // minibatch)``, as Dassl drops the last partial batch).

        Methods with a schedule over the run (cosine learning rates, deep
        block cycles) use it; the default ignores it.
        """
        del asks, steps_per_epoch

    @property
    def minibatch(self) -> int | None:
        """Training images per request (None: the whole k-shot set)."""
        return None

    @property
    def fresh_views(self) -> bool:
        """Whether the next ask's training images show views drawn for it alone where the
        config fixes the run's views (``PromptConfig.fixed_views``): CraFT's head trains on a
        fresh augmented pass each generation. The default: no."""
        return False

    def dev_point(self) -> np.ndarray | None:
        """A point to score now on the method's own dev draw (disjoint from train, validation
        and test, and paid for from the budget), asked by the loop after every tell; its
        accuracy comes back through ``tell_dev``. BBT's dev selection; the default: none."""
        return None

    def tell_dev(self, z: np.ndarray, accuracy: float) -> None:
        """The dev accuracy of ``dev_point()``'s point ``z``."""
        raise ConfigError(f"{self.name} asks for no dev scores")

    @abstractmethod
    def ask(self) -> np.ndarray:
        """(ask_size, dim) candidates to evaluate next."""

    @abstractmethod
    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        """Feed back the evaluation of the points returned by the last ask()."""

    @abstractmethod
    def recommend(self) -> np.ndarray:
        """(dim,) the point to deploy now."""

    def stop(self) -> dict[str, Any]:
        """{} to go on, else the reasons to stop (the budget is the loop's business)."""
        return {}

    def predict(self, evaluation: Evaluation) -> np.ndarray:
        """(m, C) logits for the recommended prompt's features; adapter methods override it.

        The default is the plain CLIP logits, for methods whose only output is a prompt.
        """
        if evaluation.text_features is None or evaluation.image_features is None:
            raise ConfigError("predict() needs an evaluation with features")
        return evaluation.logit_scale * evaluation.image_features[0] @ evaluation.text_features[0].T

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot from which load_state_dict() restores the method exactly."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot taken by state_dict()."""

    def _check_tell(self, z: np.ndarray, evaluation: Evaluation) -> np.ndarray:
        """Validate a tell(): shapes agree, and losses are finite (the pool ranks NaN worst)."""
        z = np.asarray(z, dtype=np.float64)
        losses = np.asarray(evaluation.losses, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.dim or losses.shape != (z.shape[0],):
            raise ConfigError(
                f"{self.name}: tell() needs z of shape (n, {self.dim}) and n losses; "
                f"got z {z.shape} and losses {losses.shape}"
            )
        if not np.isfinite(losses).all():
            raise ConfigError(f"{self.name}: tell() got non-finite losses; the caller must rank them")
        return losses

    def _match_pending(self, pending: np.ndarray | None, z: np.ndarray) -> np.ndarray:
        """The told points as float64; they must be those of the pending ask() (None: no ask)."""
        if pending is None:
            raise ConfigError(f"{self.name}: tell() without a pending ask()")
        z = np.asarray(z, dtype=np.float64)
        if not np.array_equal(z, pending):
            raise ConfigError(f"{self.name}: tell() must receive the points of the last ask()")
        return z
