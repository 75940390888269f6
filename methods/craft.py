"""CraFT: CMA-ES over a text subspace and a head trained locally on the black box's logits.

Wang, Liang, He, Wang, Tan, "Connecting the Dots: Collaborative Fine-tuning for Black-Box
Vision-Language Models", ICML 2024 (arXiv 2402.04050); mrflogs/CraFT@1a4c251:
main_craft.py, main_craft_imagenet.py, craft_configs/*.yaml (METHODS.md sections 6, 6a).

One generation, as the release runs it (``run``):

1. ``es.ask()``: 40 points z; each is scored on the cached features of one augmented pass
   over the training set: fitness = CE(raw) + w KL(softmax(refined) || softmax(raw)),
   raw = the prompt's per-image logits, refined = raw + head(raw) (``methods.logit_head``).
2. ``es.tell``; the deployed point is the mean of a fresh ``es.ask()``
   (``methods.fresh_mean_cma``).
3. The head's pass: the deployed prompt's logits on a fresh augmented pass, in shuffled
   batches of 256 (Oxford Pets 64), Adam lr 1e-3 on CE(refined) + w_t KL(softmax(raw) ||
   softmax(refined)), with w_t = w while the candidates scored are at most budget / n
   (n 4; 1 on DTD, EuroSAT, Food101, ImageNet, Oxford Pets), 0 after.

Here step 1 is one or more requests of the population's points with features, step 3 one
request of the deployed point with features on fresh views (``fresh_views``); the
per-image logits are formed locally from the features (scale x cosine, as the oracle forms
them), a few candidates at a time. Every request is counted: a generation costs popsize + 1
candidate evaluations, where the release counts 40 (``steps += popsize``) and leaves the
head's pass unpaid; at 8,000 that is 195 generations instead of 200.

Memory. A request's reply is k candidates' text features (k C D floats) and the images'
features (m D), k chosen after each reply so that it holds at most ``max_request_floats``
(128 MB of float32 by default: the object store of a local Ray is 512 MB), at least one
candidate. The first population of a run goes whole, in one request: its reply is what
tells the sizes. The logits are formed for at most ``max_request_floats`` at once.

Deviations, each an option: the budget is planned in the loop's units and ends a run
before a generation it cannot pay; the logits use the model's own logit scale (CraFT
hard-codes 100, which is CLIP's: ``logit_scale = 100.0``); the head's batches are drawn
from the method's seed. Selection in the release: test accuracy every generation, the last
printed; here the sweep selects on validation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from methods.base import Evaluation, Method, SearchSpace
from methods.errors import ConfigError
from methods.fresh_mean_cma import DEPLOYS, CraFTSubspaceConfig, FreshMeanCMA
from methods.logit_head import LogitHead, candidate_logits, kl_batchmean
from methods.zo_adapter import GrowingAdamW

__all__ = ["CraFT", "CraFTConfig"]

_HEAD_STREAM = 0x48454144  # "HEAD": the head's weights and batches, apart from CMA-ES's


@dataclass(frozen=True, kw_only=True)
class CraFTConfig(CraFTSubspaceConfig):
    """CraFT's defaults (main_craft.py; craft_configs/*.yaml, the values most data sets share)."""

    #: CMA-ES sigma0 (``sigma: 1``; 0.02 on DTD, EuroSAT, FGVCAircraft, Oxford Pets).
    sigma0: float = 1.0
    #: w, the KL weight in the fitness and the head's loss (``weight: 0.1``; 0.001 on DTD,
    #: 0.01 on EuroSAT, 1 on Food101, 0 on ImageNet).
    weight: float = 0.1
    #: the head's KL term is on while the candidates scored are at most this fraction of the
    #: budget (``budget // n``, ``n: 4``; 1 on DTD, EuroSAT, Food101, ImageNet, Oxford Pets).
    kl_fraction: float = 0.25
    #: the head's hidden width (256; main_craft_imagenet.py: 512).
    head_hidden: int = 256
    #: the head's Adam learning rate (``lr: 0.001``).
    head_lr: float = 1e-3
    #: the head's batch (``batch_size: 256``; Oxford Pets 64).
    head_batch: int = 256
    #: the deployed point: "fresh_mean", the mean of a fresh population (main_craft.py);
    #: "best", pycma's best (main_craft_imagenet.py).
    deploy: str = "fresh_mean"
    #: the logits' scale; None: the model's own (CraFT hard-codes 100, CLIP's).
    logit_scale: float | None = None
    #: the most floats a request's reply (and the logits formed at once) may hold.
    max_request_floats: int = 1 << 25

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.deploy not in DEPLOYS:
            raise ConfigError(f"deploy must be one of {DEPLOYS}; got {self.deploy!r}")
        if not self.weight >= 0 or not 0 <= self.kl_fraction <= 1:
            raise ConfigError(f"weight must be >= 0 and kl_fraction in [0, 1]; got "
                              f"{self.weight}, {self.kl_fraction}")
        if min(self.head_hidden, self.head_batch, self.max_request_floats) < 1 \
                or not self.head_lr > 0:
            raise ConfigError("head_hidden, head_batch and max_request_floats must be >= 1 "
                              "and head_lr > 0")
        if self.logit_scale is not None and not self.logit_scale > 0:
            raise ConfigError(f"logit_scale must be > 0 or None; got {self.logit_scale}")


class CraFT(Method):
    """CraFT: CMA-ES whose fitness sees a local head on the logits (the module docstring).

    Example (a toy with 3 classes whose text features z moves)::

        >>> rng = np.random.default_rng(0)
        >>> anchors = rng.normal(size=(3, 8))
        >>> labels = np.arange(30) % 3
        >>> img = anchors[labels] + rng.normal(size=(30, 8))
        >>> img /= np.linalg.norm(img, axis=1, keepdims=True)
        >>> def evaluate(z):
        ...     txt = anchors[None] + z[:, None, :8] - z[:, None, 8:]
        ...     txt /= np.linalg.norm(txt, axis=-1, keepdims=True)
        ...     return Evaluation(losses=(z ** 2).sum(1), text_features=txt,
        ...                       image_features=img[None], labels=labels, logit_scale=10.0)
        >>> method = CraFT(CraFTConfig(popsize=8, sigma0=0.3), SearchSpace(16), seed=0)
        >>> for _ in range(6):            # 3 generations: 8 points, then the deployed one
        ...     z = method.ask()
        ...     method.tell(z, evaluate(z))
        >>> method.generations, method.predict(evaluate(method.recommend()[None])).shape
        (3, (30, 3))
    """

    name: ClassVar[str] = "craft"
    needs_features: ClassVar[bool] = True

    def __init__(self, config: CraFTConfig, space: SearchSpace, seed: int) -> None:
        if not isinstance(config, CraFTConfig):
            raise ConfigError(f"{self.name}: needs a CraFTConfig; got {type(config).__name__}")
        super().__init__(config, space, seed)
        self.cma = FreshMeanCMA(self.dim, config, self.seed, config.deploy)
        self.rng = np.random.default_rng([self.seed, _HEAD_STREAM])
        self.head: LogitHead | None = None  # built at the first tell (C is unknown before)
        # Adam by hand (weight decay 0: AdamW is Adam): torch.optim imports torch._dynamo,
        # 1.6 s in every trial process.
        self.optimizer = GrowingAdamW(config.head_lr, 0.0)
        self.population: np.ndarray | None = None  # this generation's points, until told
        self.fitness: list[float] = []  # of the population's points told so far
        self.chunk = self.cma.popsize  # candidates a population request holds
        self.deploying = False  # the next ask is the deployed point, for the head's pass
        self.pending: np.ndarray | None = None
        self.scored = 0  # population candidates told (the release's ``steps``)
        self.spent = 0  # candidates told, the deployed ones too
        self.planned: int | None = None  # candidates the budget allows (None: unknown)

    # ---------------------------------------------------------------- ask / tell
    @property
    def generations(self) -> int:
        return self.cma.generations

    @property
    def ask_size(self) -> int:
        if self.deploying:
            return 1
        return min(self.chunk, self.cma.popsize - len(self.fitness))  # [] between generations

    @property
    def fresh_views(self) -> bool:
        return self.deploying

    @property
    def head_weight(self) -> float:
        """The KL weight of the head's loss now: ``weight`` while the candidates scored are at
        most ``kl_fraction`` of the planned budget (always, without a plan), then 0."""
        c = self.config
        on = self.planned is None or self.scored <= c.kl_fraction * self.planned
        return c.weight if on else 0.0

    def plan(self, asks: int | None, steps_per_epoch: int | None = None) -> None:
        del steps_per_epoch
        self.planned = None if asks is None else self.spent + asks * self.ask_size

    def ask(self) -> np.ndarray:
        if self.pending is None:
            if self.deploying:
                self.pending = self.cma.deployed[None].copy()
            else:
                if self.population is None:
                    self.population = self.cma.ask()
                start = len(self.fitness)
                self.pending = self.population[start:start + self.ask_size].copy()
        return self.pending.copy()

    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        self._check_tell(z, evaluation)
        z = self._match_pending(self.pending, z)
        image, text, labels, scale = self._features(evaluation, len(z))
        self._build_head(text.shape[1])
        if self.deploying:
            self._train_head(image, text, labels, scale)
            self.deploying = False
        else:
            self.fitness.extend(self._fitness(image, text, labels, scale))
            self._size_requests(image, text)
            if len(self.fitness) == self.cma.popsize:
                self.cma.tell(self.population, np.array(self.fitness))
                self.scored += self.cma.popsize
                self.population, self.fitness, self.deploying = None, [], True
        self.spent += len(z)
        self.pending = None

    def recommend(self) -> np.ndarray:
        return self.cma.deployed.copy()

    def stop(self) -> dict[str, Any]:
        if self.planned is not None and self.population is None and not self.deploying \
                and self.planned - self.spent < self.cma.popsize + 1:
            return {"generation_budget": f"{self.planned - self.spent} candidate evaluations "
                                         f"left; a generation costs {self.cma.popsize + 1}"}
        return {} if self.deploying or self.population is not None else self.cma.stop()

    def predict(self, evaluation: Evaluation) -> np.ndarray:
        """(m, C) the first point's logits through the head (the deployed model)."""
        image, text, _, scale = self._features(evaluation, len(evaluation.text_features))
        _, logits = next(candidate_logits(image[:1], text[:1], scale, 1))
        with torch.no_grad():
            refined = logits[0] if self.head is None else self.head(logits[0])
        return refined.double().numpy()

    # ---------------------------------------------------------------- the head
    def _features(self, ev: Evaluation, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        if ev.text_features is None or ev.image_features is None or ev.labels is None \
                or ev.logit_scale is None:
            raise ConfigError(f"{self.name}: needs the features of every point "
                              "(needs_features: evaluate with features=True)")
        text, image = np.asarray(ev.text_features), np.asarray(ev.image_features)
        if text.ndim != 3 or text.shape[0] != n or image.ndim != 3 or image.shape[0] not in (1, n):
            raise ConfigError(f"{self.name}: features of {n} points must be text (n, C, D) and "
                              f"image (1 or n, m, D); got {text.shape}, {image.shape}")
        scale = ev.logit_scale if self.config.logit_scale is None else self.config.logit_scale
        return image, text, np.asarray(ev.labels, dtype=np.int64), float(scale)

    def _build_head(self, classes: int) -> None:
        if self.head is None:
            generator = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
            self.head = LogitHead(classes, self.config.head_hidden, generator)

    def _fitness(self, image: np.ndarray, text: np.ndarray, labels: np.ndarray,
                 scale: float) -> list[float]:
        """CE(raw) + w KL(softmax(refined) || softmax(raw)) of each point, over all images."""
        y, out = torch.as_tensor(labels), []
        with torch.no_grad():
            for _, raw in candidate_logits(image, text, scale, self.config.max_request_floats):
                k, m, classes = raw.shape
                ce = F.cross_entropy(raw.reshape(k * m, classes).double(), y.repeat(k),
                                     reduction="none").view(k, m).mean(dim=1)
                if self.config.weight:
                    ce = ce + self.config.weight * kl_batchmean(raw, self.head(raw)).double()
                out.extend(ce.tolist())
        return out

    def _train_head(self, image: np.ndarray, text: np.ndarray, labels: np.ndarray,
                    scale: float) -> None:
        """One pass of Adam over the deployed prompt's logits, in shuffled batches."""
        c = self.config
        _, raw = next(candidate_logits(image[:1], text[:1], scale, 1))
        raw, y, weight = raw[0], torch.as_tensor(labels), self.head_weight
        order = torch.as_tensor(self.rng.permutation(len(y)))
        for start in range(0, len(y), c.head_batch):
            batch = order[start:start + c.head_batch]
            refined = self.head(raw[batch])
            loss = F.cross_entropy(refined, y[batch])
            if weight:
                loss = loss + weight * kl_batchmean(refined, raw[batch])
            params = dict(self.head.named_parameters())
            for p, g in zip(params.values(), torch.autograd.grad(loss, list(params.values()))):
                p.grad = g
            self.optimizer.step(params)

    def _size_requests(self, image: np.ndarray, text: np.ndarray) -> None:
        """Candidates per population request so that a reply holds at most the bound."""
        images = image.shape[1] * image.shape[2]  # shared, or one set per candidate (visual)
        per = text.shape[1] * text.shape[2] + (images if image.shape[0] > 1 else 0)
        shared = images if image.shape[0] == 1 else 0
        fits = (self.config.max_request_floats - shared) // per
        self.chunk = int(min(self.cma.popsize, max(1, fits)))

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "cma": self.cma.state_dict(),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "head": None if self.head is None else copy.deepcopy(self.head.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state),
            "population": None if self.population is None else self.population.copy(),
            "fitness": list(self.fitness), "chunk": self.chunk, "deploying": self.deploying,
            "pending": None if self.pending is None else self.pending.copy(),
            "scored": self.scored, "spent": self.spent, "planned": self.planned,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cma.load_state_dict(state["cma"])
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.head = None
        if state["head"] is not None:
            classes = state["head"]["fc1.weight"].shape[1]
            self.head = LogitHead(classes, self.config.head_hidden, torch.Generator())
            self.head.load_state_dict(state["head"])
        self.optimizer.state = copy.deepcopy(state["optimizer"])
        for name in ("population", "pending"):
            setattr(self, name, None if state[name] is None else np.array(state[name]))
        self.fitness, self.chunk = list(state["fitness"]), int(state["chunk"])
        self.deploying, self.scored = bool(state["deploying"]), int(state["scored"])
        self.spent, self.planned = int(state["spent"]), state["planned"]
