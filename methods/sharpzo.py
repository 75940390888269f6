"""SharpZO: a sharpness-aware CMA-ES stage, then two-sided random-direction steps (MeZO).

Yang et al., NeurIPS 2025 (arXiv 2506.20990); yifanycc/sharpzo@13b491f: main_sharpzo.py,
utils.py (``compute_eps``), run_all_final_exps.sh, dataset_configs/*.yaml (METHODS.md 6b).
Built on CraFT's code: the same prompt (4 tokens from "a photo of a", p = p0 + A z,
A ~ N(0, std^2)), the same cached features of one augmented pass, and the loss CE of the
scaled cosine logits over all training images.

Stage 1, per generation (``step < change_point``):

1. coordinate probes at the deployed point (the mean of the last fresh population): the
   central difference of every coordinate, 2 x dim losses (``zo_step_cge``, h =
   ``zo_eps_cge``), a ``coordinate`` estimator with q = dim (``methods.estimators``);
2. the SAM ascent eps = r g / |g| (``compute_eps``), the population's points scored at
   z + eps, and pycma told the losses at z; the deployed point is the mean of a fresh
   population (``methods.fresh_mean_cma``).

Stage 2: the last deployed point, then per step a two-sided Gaussian estimate (q = 1, radius
``zo_eps_rge``: an ``antithetic`` estimator) and z <- z - lr g, a constant rate (the
release builds a cosine schedule but steps no optimiser, so its rate never moves).

A generation costs 2 dim + popsize candidate evaluations (1,064 at dim 512), a stage-2
step 2, each on the whole training set; all are counted. The release enforces no budget.

Where this differs from the release, each an option:

* The stage split. The release switches after ``change_point`` = 100 generations (106,400
  evaluations; 8,000 allow about 7). Here stage 1 takes ``stage1_fraction`` of the planned
  budget, as many whole generations as fit (at least one); the default 0.21 is the
  release's own share, 106,400 of the 506,200 evaluations its EuroSAT command spends
  (100 generations of 1,064, then 199,900 steps of 2): read off its script, no data.
  A sweep tunes it on validation. ``change_point`` gives a number of generations instead.
* The gradient sum. ``ZOTrainer.grad_tmp`` is never reset, so each stage-2 step moves by
  the running sum of every estimate since the last probe gradient; the evident intent
  (MeZO) is the step's own estimate: ``gradient_sum = "reset"``. ``"running"`` keeps the
  release's sum, started at the last probe gradient (the release's also broadcasts the
  40 x 512 probe gradient into the parameter, which then draws 40 directions a step
  whose mean moves the prompt; that broadcast is not copied).
* The first probe. The release's population matrix starts at U(0, 1), so the first probes
  sit at its mean, about 0.5 in every coordinate, away from the CMA-ES mean 0; here at 0,
  the deployed prompt p0 (``initial_probe = "uniform"``: the release's).
* pycma's stop rules. The release never asks ``es.stop()``; here a stop ends stage 1.

Kept as released: the SAM radius. ``compute_eps`` normalises the 40 x 512 probe gradient,
whose 40 rows are equal, and averages the rows, so |eps| = rho / sqrt(40): 0.016 at rho 0.1
(``sam_radius = "release"``); ``"rho"`` gives the paper's |eps| = rho. Selection in the
release: test accuracy every 5 (stage 1) or 100 (stage 2) steps, the last printed; here
the sweep selects on validation.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from methods.base import Evaluation, Method, SearchSpace
from methods.errors import ConfigError
from methods.estimators import Antithetic, CoordinateBlock, EstimatorConfig
from methods.fresh_mean_cma import CraFTSubspaceConfig, FreshMeanCMA

__all__ = ["SharpZO", "SharpZOConfig"]

#: generations of stage 1 when no budget is known (run_all_final_exps.sh: change_point 100).
RELEASE_CHANGE_POINT = 100


@dataclass(frozen=True, kw_only=True)
class SharpZOConfig(CraFTSubspaceConfig):
    """SharpZO's defaults (run_all_final_exps.sh; dataset_configs/*.yaml: CraFT's prompt)."""

    #: CMA-ES sigma0 (``--sigma 0.4``).
    sigma0: float = 0.4
    #: the SAM radius (``--rho 0.1``).
    rho: float = 0.1
    #: "release": |eps| = rho / sqrt(popsize), as compute_eps computes it; "rho": |eps| = rho.
    sam_radius: str = "release"
    #: the probes' central-difference step h (``--zo_eps_cge 1e-3``).
    probe_mu: float = 1e-3
    #: where the first probes sit: "mean", the CMA-ES mean 0; "uniform", the mean of a U(0, 1)
    #: population matrix, as the release's ``input_param`` starts.
    initial_probe: str = "mean"
    #: stage 1's share of the planned budget (the release's command: 106,400 of 506,200).
    stage1_fraction: float = 0.21
    #: stage 1's generations instead (the release: 100); None: ``stage1_fraction``.
    change_point: int | None = None
    #: stage 2's step size (``--zo_lr 1e-3``).
    lr: float = 1e-3
    #: stage 2's radius (``--zo_eps_rge 1e-3``).
    mu: float = 1e-3
    #: stage 2's directions per step (``--num_pertub 1``): 2q evaluations.
    q: int = 1
    #: "reset": each step by its own estimate (MeZO, the evident intent); "running": by the
    #: sum of every estimate since the last probe gradient (the release's ``grad_tmp``).
    gradient_sum: str = "reset"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, allowed in (("sam_radius", ("release", "rho")),
                              ("initial_probe", ("mean", "uniform")),
                              ("gradient_sum", ("reset", "running"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")
        if not 0 <= self.stage1_fraction <= 1:
            raise ConfigError(f"stage1_fraction must be in [0, 1]; got {self.stage1_fraction}")
        if self.change_point is not None and self.change_point < 0:
            raise ConfigError(f"change_point must be >= 0 or None; got {self.change_point}")
        for name in ("rho", "probe_mu", "lr", "mu"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be finite and > 0; got {getattr(self, name)}")
        if self.q < 1:
            raise ConfigError(f"q must be >= 1; got {self.q}")


class SharpZO(Method):
    """SharpZO: sharpness-aware CMA-ES, then MeZO steps (the module docstring).

    Example (a quadratic in 8 dimensions; a generation costs 2 x 8 + 10 evaluations)::

        >>> target = np.full(8, 0.5)
        >>> method = SharpZO(SharpZOConfig(popsize=10, lr=0.05), SearchSpace(8), seed=0)
        >>> method.plan(asks=20)                        # 20 asks of 16 probes: 320 in all
        >>> sizes = []
        >>> for _ in range(40):
        ...     z = method.ask()
        ...     sizes.append(len(z))
        ...     method.tell(z, Evaluation(losses=((z - target) ** 2).sum(axis=1)))
        >>> sizes[:6], method.stage                     # 2 generations (52 <= 0.21 x 320)
        ([16, 10, 16, 10, 2, 2], 2)
        >>> bool(((method.recommend() - target) ** 2).sum() < (target ** 2).sum())
        True
    """

    name: ClassVar[str] = "sharpzo"

    def __init__(self, config: SharpZOConfig, space: SearchSpace, seed: int) -> None:
        if not isinstance(config, SharpZOConfig):
            raise ConfigError(f"{self.name}: needs a SharpZOConfig; got {type(config).__name__}")
        super().__init__(config, space, seed)
        self.cma = FreshMeanCMA(self.dim, config, self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.probes = CoordinateBlock(EstimatorConfig(q=self.dim, mu=config.probe_mu), self.dim)
        self.steps = Antithetic(EstimatorConfig(q=config.q, mu=config.mu), self.dim)
        self.stage = 1
        self.probing = True  # stage 1: the next ask is the probes (else the population)
        self.base = (self.rng.random((self.cma.popsize, self.dim)).mean(axis=0)
                     if config.initial_probe == "uniform" else np.zeros(self.dim))
        self.eps = np.zeros(self.dim)  # the SAM ascent of this generation
        self.probe_gradient = np.zeros(self.dim)  # the last probes' estimate
        self.population: np.ndarray | None = None
        self.x = np.zeros(self.dim)  # stage 2's point
        self.gradient_sum = np.zeros(self.dim)  # "running": the release's grad_tmp
        self.stage1_generations = config.change_point if config.change_point is not None \
            else RELEASE_CHANGE_POINT
        self.pending: np.ndarray | None = None

    @property
    def generation_cost(self) -> int:
        """Candidate evaluations of one stage-1 generation: 2 dim probes and the population."""
        return self.probes.queries_per_step + self.cma.popsize

    @property
    def ask_size(self) -> int:
        if self.stage == 2:
            return self.steps.queries_per_step
        return self.probes.queries_per_step if self.probing else self.cma.popsize

    def plan(self, asks: int | None, steps_per_epoch: int | None = None) -> None:
        """Stage 1's generations: ``change_point``, else as many whole generations as
        ``stage1_fraction`` of the planned budget pays for (at least one)."""
        del steps_per_epoch
        if self.config.change_point is None and asks is not None and self.stage == 1:
            budget = asks * self.ask_size  # candidate evaluations: every request is the whole set
            share = int(self.config.stage1_fraction * budget) // self.generation_cost
            self.stage1_generations = max(1, share)

    def ask(self) -> np.ndarray:
        if self.pending is None:
            if self.stage == 2:
                self.pending = self.steps.perturb(self.x.copy(), self.rng)
            elif self.probing:
                self.pending = self.probes.perturb(self.base.copy(), self.rng)
            else:
                self.population = self.cma.ask()
                self.pending = self.population + self.eps
        return self.pending.copy()

    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        losses = self._check_tell(z, evaluation)
        z = self._match_pending(self.pending, z)
        if self.stage == 2:
            g = self.steps.combine(self.x.copy(), z, losses)
            if self.config.gradient_sum == "running":
                self.gradient_sum = self.gradient_sum + g
                g = self.gradient_sum
            self.x = self.x - self.config.lr * g
        elif self.probing:
            self.probe_gradient = self.probes.combine(self.base.copy(), z, losses)
            radius = self.config.rho
            if self.config.sam_radius == "release":
                radius /= math.sqrt(self.cma.popsize)
            norm = float(np.linalg.norm(self.probe_gradient))
            self.eps = radius * self.probe_gradient / (norm + 1e-12)
            self.probing = False
        else:
            self.cma.tell(self.population, losses)
            self.population, self.probing = None, True
            self.base = self.cma.deployed.copy()
            if self.cma.generations >= self.stage1_generations or self.cma.stop():
                self._start_stage2()
        self.pending = None

    def _start_stage2(self) -> None:
        """From the last deployed point (the release averages its population matrix)."""
        self.stage, self.x = 2, self.cma.deployed.copy()
        self.gradient_sum = self.probe_gradient.copy()

    def recommend(self) -> np.ndarray:
        return self.x.copy() if self.stage == 2 else self.cma.deployed.copy()

    def stop(self) -> dict[str, Any]:
        if not np.isfinite(self.x).all():
            return {"non_finite": "stage 2's point became non-finite"}
        return {}

    def state_dict(self) -> dict[str, Any]:
        arrays = {name: None if getattr(self, name) is None else getattr(self, name).copy()
                  for name in ("base", "eps", "probe_gradient", "population", "x",
                               "gradient_sum", "pending")}
        return {**arrays, "cma": self.cma.state_dict(),
                "rng": copy.deepcopy(self.rng.bit_generator.state), "stage": self.stage,
                "probing": self.probing, "stage1_generations": self.stage1_generations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cma.load_state_dict(state["cma"])
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        for name in ("base", "eps", "probe_gradient", "population", "x", "gradient_sum",
                     "pending"):
            setattr(self, name, None if state[name] is None else np.array(state[name]))
        self.stage, self.probing = int(state["stage"]), bool(state["probing"])
        self.stage1_generations = int(state["stage1_generations"])
