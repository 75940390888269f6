"""The other evolution strategies of BPT-VLM, from pypop7, driven in ask/tell form.

BPT-VLM (../shared/reference/METHODS.md section 1; ECNU-ICALK/BPT-VLM:
BBT_VL_Shallow.py, algorithm/LM_CMA_ES.py, MMES.py, LMMAES.py) also runs
three large-scale evolution strategies from pypop7 over the shallow subspace
[z_L || z_V]: LM-CMA-ES (Loshchilov, GECCO 2014), MMES (He et al., IEEE TEVC
2021) and LM-MA-ES (Loshchilov, Glasmachers and Beyer, IEEE TEVC 2019), each
with ``n_individuals`` 30, ``sigma`` 1, ``x`` = 0 and ``is_restart`` False.

pypop7 only offers a blocking ``optimize(fitness_function)`` loop. The
algorithms are not written again here: each method replays the library's own
``optimize()`` loop one generation per ask/tell, calling the library's
``initialize``, ``iterate``, ``_evaluate_fitness``, ``_update_distribution``
and ``restart_reinitialize`` on the library's own state arrays:

* ask(): ``iterate(...)`` runs with a fitness function that only records the
  points and returns NaN. This is faithful because within one generation the
  sampling of these three algorithms does not depend on fitness values
  (pypop7 0.0.82, optimizers/es/): LMCMAES.iterate draws z from
  ``rng_optimization`` and maps it through the stored low-rank factors
  (``_a_z``) with mirrored signs; MMES.iterate draws the whole mirrored
  population before its evaluation loop; LMMAES.iterate draws z and applies
  the stored transformation ``tm``. The bookkeeping that the recording calls
  touched (evaluation count, best-so-far, early-stopping counters) is then
  restored, as if nothing had been evaluated.
* tell(): the real losses are fed through the library's ``_evaluate_fitness``
  (which repairs the evaluation count and the best-so-far exactly as in
  ``optimize``) and written into the library's fitness array ``y``; then the
  rest of the library's loop body runs: ``_update_distribution``,
  ``_n_generations += 1`` and ``restart_reinitialize`` (a no-op with
  ``is_restart`` False, as published), in the library's order.
* MMES's ``initialize`` evaluates the initial mean (one query). The first
  generation's sampling does not depend on that value, so the first ask()
  returns the mean followed by the first generation (``n_individuals`` + 1
  points, replayed in the library's order), saving a round trip of one.

The limits inside pypop7 are disabled (``max_function_evaluations``,
``max_runtime`` and ``fitness_threshold`` infinite): the caller's budget
bounds the run. The published runs stopped at ``max_runtime`` 20,800 s and
not at the query budget, and their ``fitness_threshold`` 1e-10 would end a
generation half-sampled. Randomness is pypop7's own numpy Generator, seeded
by ``seed_rng`` = the method's seed (published: 0), so no global state is
touched. stop() reports the two conditions on which pypop7's ES base class
would restart (sigma below ``sigma_threshold``; no improvement of the best
fitness by ``fitness_diff`` over ``stagnation`` generations), since restarts
are off, and a non-finite step size.
"""

from __future__ import annotations

import importlib
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from methods.base import Evaluation, Method, SearchSpace
from methods.errors import ConfigError
from methods.es_subspace import BPTVLMPromptConfig

__all__ = [
    "BPTVLMLMCMAES",
    "BPTVLMLMMAES",
    "BPTVLMMMES",
    "PypopES",
    "PypopESConfig",
]

#: the Optimizer attributes that _evaluate_fitness updates (restored after recording)
_BOOKKEEPING = (
    "n_function_evaluations",
    "best_so_far_x",
    "best_so_far_y",
    "_counter_early_stopping",
    "_base_early_stopping",
    "time_function_evaluations",
    "start_function_evaluations",
)


@dataclass(frozen=True, kw_only=True)
class PypopESConfig(BPTVLMPromptConfig):
    """A pypop7 evolution strategy over BPT-VLM's shallow subspace (BBT_VL_Shallow.py)."""

    #: offspring per generation, lambda (pypop7 ``n_individuals``; BPT-VLM 30).
    n_individuals: int = 30
    #: initial global step size (pypop7 ``sigma``; BPT-VLM 1).
    sigma: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.deep:
            raise ConfigError("the pypop7 evolution strategies of BPT-VLM are shallow only")
        # pypop7 takes n_individuals // 2 parents, and LM-CMA-ES and LM-MA-ES need at least
        # two of them (with one, they fail while setting up their weights).
        if not isinstance(self.n_individuals, int) or self.n_individuals < 4:
            raise ConfigError(f"n_individuals must be an int >= 4; got {self.n_individuals!r}")
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigError(f"sigma must be finite and > 0; got {self.sigma!r}")

    @property
    def search_sigma(self) -> float:
        return self.sigma


class _Recorder:
    """A pypop7 fitness function that records the points it is given and returns NaN."""

    def __init__(self) -> None:
        self.points: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> float:
        self.points.append(np.array(x, dtype=np.float64))
        return float("nan")


class _Replay:
    """A pypop7 fitness function that returns the told losses in order."""

    def __init__(self, losses: np.ndarray) -> None:
        self._losses = iter(losses.tolist())

    def __call__(self, x: np.ndarray) -> float:
        del x
        return next(self._losses)


class PypopES(Method):
    """Base class: one pypop7 ES, one generation per ask/tell (see the module docstring).

    Subclasses name the pypop7 class and mirror the body of its ``optimize()``
    loop in hooks: ``_initialize``, ``_iterate``, ``_update`` and, when
    ``initialize`` evaluates points, ``_write_init``. The library state travels
    in ``self._st`` (the local variables of ``optimize``).

    Example (each of the three on a quadratic in 20 dimensions)::

        >>> import numpy as np
        >>> from methods.base import Evaluation, SearchSpace
        >>> from methods.es_pypop import BPTVLMLMCMAES, BPTVLMLMMAES, BPTVLMMMES, PypopESConfig
        >>> target = np.full(20, 0.5)
        >>> for cls in (BPTVLMLMCMAES, BPTVLMMMES, BPTVLMLMMAES):
        ...     method = cls(PypopESConfig(n_individuals=10), SearchSpace(dim=20), seed=0)
        ...     for _ in range(60):
        ...         z = method.ask()                              # (10, 20); MMES: (11, 20) first
        ...         method.tell(z, Evaluation(losses=0.5 * ((z - target) ** 2).sum(axis=1)))
        ...     loss = 0.5 * ((method.recommend() - target) ** 2).sum()
        ...     print(method.name, bool(loss < 0.1 * 0.5 * (target**2).sum()))
        bpt-vlm-lmcmaes True
        bpt-vlm-mmes True
        bpt-vlm-lmmaes True
    """

    name: ClassVar[str] = ""
    #: "module:Class" of the pypop7 optimizer.
    pypop_class: ClassVar[str] = ""

    def __init__(self, config: PypopESConfig, space: SearchSpace, seed: int) -> None:
        if not isinstance(config, PypopESConfig):
            raise ConfigError(f"{self.name}: needs a PypopESConfig; got {type(config).__name__}")
        super().__init__(config, space, seed)
        if self.seed < 0:
            raise ConfigError(f"{self.name}: the seed must be >= 0; got {self.seed}")
        if self.dim < 2:
            raise ConfigError(f"{self.name}: needs dim >= 2; got {self.dim}")
        module, cls_name = self.pypop_class.split(":")
        # pypop7 (and the scipy it pulls in, ~3 s) is imported only when a method is built
        cls = getattr(importlib.import_module(module), cls_name)
        problem = {"fitness_function": None, "ndim_problem": self.dim}
        options = {
            "mean": np.zeros(self.dim),
            "sigma": float(config.sigma),
            "n_individuals": config.n_individuals,
            "seed_rng": self.seed,
            "is_restart": False,  # as published (BBT_VL_Shallow.py opt_cfg)
            "max_function_evaluations": np.inf,  # the caller's loop owns the budget
            "max_runtime": np.inf,  # the published runs stopped here (20,800 s), not at the budget
            "fitness_threshold": -np.inf,  # would end a generation half-sampled
            "verbose": 0,
            "saving_fitness": 0,
        }
        self._opt = cls(problem, options)
        self._opt.start_time = time.time()  # set by optimize(); read by _check_terminations
        self._st: dict[str, Any] = {}
        self._best_trace = [np.inf]  # running best per generation (ES.restart_reinitialize)
        self.pending: np.ndarray | None = None  # the last ask(), until told
        # points that initialize() evaluates (MMES: its mean); they join the first ask
        self._init_points = self._record(self._initialize)

    # -- the library's loop, one generation at a time ---------------------------------

    def _initialize(self) -> None:
        raise NotImplementedError

    def _iterate(self) -> None:
        raise NotImplementedError

    def _write_init(self, losses: np.ndarray) -> None:
        """Put the losses of the points initialize() evaluates where the library expects them."""
        del losses

    def _update(self) -> None:
        raise NotImplementedError

    def _record(self, step: Callable[[], None]) -> list[np.ndarray]:
        """Run ``step`` with a recording fitness function; leave the bookkeeping untouched."""
        opt = self._opt
        saved = {k: getattr(opt, k) for k in _BOOKKEEPING}
        recorder = _Recorder()
        opt.fitness_function = recorder
        try:
            step()
        finally:
            opt.fitness_function = None
            for k, v in saved.items():
                setattr(opt, k, v)
        return recorder.points

    # -- Method --------------------------------------------------------------------------

    @property
    def ask_size(self) -> int:
        if self.pending is not None:
            return int(self.pending.shape[0])
        return len(self._init_points) + int(self._opt.n_individuals)

    def ask(self) -> np.ndarray:
        if self.pending is None:
            points = self._record(self._iterate)
            self.pending = np.stack(self._init_points + points)
        return self.pending.copy()

    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        losses = self._check_tell(z, evaluation)
        self._match_pending(self.pending, z)
        opt = self._opt
        opt.fitness_function = _Replay(losses)
        try:  # the library's own bookkeeping: counts, best-so-far, early-stopping counters
            told = np.array([opt._evaluate_fitness(x) for x in self.pending])
        finally:
            opt.fitness_function = None
        n_init = len(self._init_points)
        if n_init:
            self._write_init(told[:n_init])
            self._init_points = []
        self._st["y"][:] = told[n_init:]
        self._update()
        self._best_trace.append(min(float(told[n_init:].min()), self._best_trace[-1]))
        self.pending = None

    def recommend(self) -> np.ndarray:
        if self._opt.best_so_far_x is None:
            return np.zeros(self.dim)
        return np.array(self._opt.best_so_far_x, dtype=np.float64)

    def stop(self) -> dict[str, Any]:
        opt, reasons = self._opt, {}
        sigma = float(np.max(opt.sigma))
        if not np.isfinite(sigma):
            reasons["sigma_not_finite"] = sigma
        elif sigma < opt.sigma_threshold:
            reasons["sigma_threshold"] = sigma
        trace = self._best_trace
        if len(trace) >= opt.stagnation and trace[-opt.stagnation] - trace[-1] < opt.fitness_diff:
            reasons["stagnation"] = opt.stagnation
        return reasons

    def state_dict(self) -> dict[str, Any]:
        # one pickle, so that arrays shared between the optimizer and its loop state stay shared
        return {
            "pypop": pickle.dumps((self._opt, self._st)),
            "init_points": [p.copy() for p in self._init_points],
            "best_trace": list(self._best_trace),
            "pending": None if self.pending is None else self.pending.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        opt, st = pickle.loads(state["pypop"])
        if type(opt) is not type(self._opt) or opt.ndim_problem != self.dim:
            raise ConfigError(f"{self.name}: the state belongs to another optimizer or dimension")
        self._opt, self._st = opt, st
        self._init_points = [np.array(p) for p in state["init_points"]]
        self._best_trace = list(state["best_trace"])
        self.pending = None if state["pending"] is None else np.array(state["pending"])


class BPTVLMLMCMAES(PypopES):
    """LM-CMA-ES (pypop7 ``LMCMAES``) over BPT-VLM's shallow subspace (see ``PypopES`` for an
    example)."""

    name: ClassVar[str] = "bpt-vlm-lmcmaes"
    pypop_class: ClassVar[str] = "pypop7.optimizers.es.lmcmaes:LMCMAES"

    def _initialize(self) -> None:
        keys = ("mean", "x", "p_c", "s", "vm", "pm", "b", "d", "y")
        self._st = dict(zip(keys, self._opt.initialize()))

    def _iterate(self) -> None:
        st = self._st
        st["y_bak"] = np.copy(st["y"])
        st["x"], st["y"] = self._opt.iterate(st["mean"], st["x"], st["pm"], st["vm"], st["y"],
                                             st["b"], None)

    def _update(self) -> None:
        opt, st = self._opt, self._st
        (st["mean"], st["p_c"], st["s"], st["vm"], st["pm"], st["b"], st["d"]) = (
            opt._update_distribution(st["mean"], st["x"], st["p_c"], st["s"], st["vm"], st["pm"],
                                     st["b"], st["d"], st["y"], st["y_bak"]))
        opt._n_generations += 1
        keys = ("mean", "x", "p_c", "s", "vm", "pm", "b", "d", "y")
        self._st.update(zip(keys, opt.restart_reinitialize(*(st[k] for k in keys))))


class BPTVLMMMES(PypopES):
    """MMES (pypop7 ``MMES``) over BPT-VLM's shallow subspace.

    MMES's ``initialize`` evaluates the initial mean. Sampling the first
    generation does not depend on that value, so the first ask() returns the
    mean followed by the first generation (``n_individuals`` + 1 points, told in
    the library's order: mean first); every later ask() returns
    ``n_individuals`` points.

    Example (the first ask, then the next; ``PypopES`` runs all three on a quadratic)::

        >>> from methods.base import Evaluation, SearchSpace
        >>> from methods.es_pypop import BPTVLMMMES, PypopESConfig
        >>> method = BPTVLMMMES(PypopESConfig(n_individuals=10), SearchSpace(dim=20), seed=0)
        >>> z = method.ask()
        >>> z.shape, bool((z[0] == 0).all())                      # the mean 0, then 10 points
        ((11, 20), True)
        >>> method.tell(z, Evaluation(losses=(z**2).sum(axis=1)))
        >>> method.ask_size, method.ask().shape
        (10, (10, 20))
    """

    name: ClassVar[str] = "bpt-vlm-mmes"
    pypop_class: ClassVar[str] = "pypop7.optimizers.es.mmes:MMES"

    _KEYS = ("x", "mean", "p", "w", "q", "t", "v", "y")

    def _initialize(self) -> None:
        self._st = dict(zip(self._KEYS, self._opt.initialize(None)))

    def _write_init(self, losses: np.ndarray) -> None:
        # initialize() sets y = np.tile(f(mean), (n_individuals,)), and optimize() copies it
        # to y_bak before the first iterate(); ask() made that copy before f(mean) was known
        self._st["y_bak"][:] = losses[0]

    def _iterate(self) -> None:
        st = self._st
        st["y_bak"] = np.copy(st["y"])
        st["x"], st["y"] = self._opt.iterate(st["x"], st["mean"], st["q"], st["v"], st["y"], None)

    def _update(self) -> None:
        opt, st = self._opt, self._st
        (st["mean"], st["p"], st["w"], st["q"], st["t"], st["v"]) = opt._update_distribution(
            st["x"], st["mean"], st["p"], st["w"], st["q"], st["t"], st["v"], st["y"], st["y_bak"])
        opt._n_generations += 1
        self._st.update(zip(self._KEYS, opt.restart_reinitialize(
            None, *(st[k] for k in self._KEYS), [])))


class BPTVLMLMMAES(PypopES):
    """LM-MA-ES (pypop7 ``LMMAES``) over BPT-VLM's shallow subspace (see ``PypopES`` for an
    example)."""

    name: ClassVar[str] = "bpt-vlm-lmmaes"
    pypop_class: ClassVar[str] = "pypop7.optimizers.es.lmmaes:LMMAES"

    _KEYS = ("z", "d", "mean", "s", "tm", "y")

    def _initialize(self) -> None:
        self._st = dict(zip(self._KEYS, self._opt.initialize()))

    def _iterate(self) -> None:
        st = self._st
        st["z"], st["d"], st["y"] = self._opt.iterate(st["z"], st["d"], st["mean"], st["tm"],
                                                      st["y"], None)

    def _update(self) -> None:
        opt, st = self._opt, self._st
        opt._n_generations += 1  # LMMAES.optimize counts the generation before the update
        st["mean"], st["s"], st["tm"] = opt._update_distribution(
            st["z"], st["d"], st["mean"], st["s"], st["tm"], st["y"])
        self._st.update(zip(self._KEYS, opt.restart_reinitialize(*(st[k] for k in self._KEYS))))
