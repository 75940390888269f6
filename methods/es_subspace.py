"""CMA-ES in the intrinsic subspace, on pycma: BPT-VLM (shallow and deep) and BBT.

z lives in the low-dimensional subspace of ``methods.subspace`` and the
search starts at z = 0 (the prompt p0). One generation is one ask() of
``popsize`` candidates; the caller evaluates them (one candidate = one query
on the whole k-shot training set) and tells the losses back.

Sources (../shared/reference/METHODS.md sections 1 and 3):

* BPT-VLM (Yu et al., IJCAI 2023; ECNU-ICALK/BPT-VLM: algorithm/CMA_ES.py):
  ``cma.CMAEvolutionStrategy(0^d, sigma 1, popsize 30, seed 42)``, bounds only
  if ``bound > 0``, pycma's default stop rules; deep: one CMA-ES per prompt
  layer, optimised block-coordinate (BBT_VL_Deep.py), each layer's candidates
  evaluated with the other layers at their best prompt so far
  (model/Deep_Prompt_CLIP.py ``use_best_prompt``).
* BBT (Sun et al., ICML 2022; txsun1997/Black-Box-Tuning: bbt.py): CMA-ES from
  0, popsize 20, sigma 1, unbounded (the second projection era), text only; its
  class and dev-set selection are in ``methods.bbt``.

Differences from the published code, on purpose:

* No ``maxiter``/``maxfevals``: the published ``maxiter = budget / popsize``
  (deep: ``budget // (popsize * layers)``) is replaced by the caller's budget,
  which the loop checks against ``ask_size`` before every ask. pycma's other
  default stop rules stay and ``stop()`` reports them.
* The random stream. pycma samples from numpy's *global* RandomState, and its
  ``seed`` option calls ``np.random.seed`` (with 0 meaning "seed from the
  clock"). A process running several trials, or any other code drawing from
  ``np.random``, would then interleave with the method's draws and destroy
  reproducibility. Each method instance therefore owns a copy of the global
  state (``_GlobalRNG``), seeded exactly as ``np.random.seed(seed)`` would
  (so seed 42 reproduces the published pycma stream), and swaps it in around
  every pycma call and out again afterwards. pycma's own seeding is disabled
  (``seed=nan``) and its Gaussian sampler is given ``_global_randn``, a
  module-level function, because pycma's default ``np.random.randn`` is a
  bound method that pickles as a *detached copy* of the global RandomState:
  an unpickled pycma object would silently stop following the swapped-in
  state. The swap is not thread-safe (no method is shared between threads).
* recommend() is the best point evaluated so far by training loss (BPT-VLM
  deploys the best-train-loss prompt), not pycma's mean.
"""

from __future__ import annotations

import pickle
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from methods.base import Evaluation, Method, PromptConfig, SearchSpace
from methods.errors import ConfigError

if TYPE_CHECKING:
    import cma

__all__ = [
    "BPTVLM",
    "BPTVLMConfig",
    "BPTVLMDeep",
    "BPTVLMDeepConfig",
    "BPTVLMPromptConfig",
    "CMAESConfig",
    "SubspaceCMAES",
]


@dataclass(frozen=True, kw_only=True)
class CMAESConfig(PromptConfig):
    """pycma CMA-ES over the subspace (the shared part of BPT-VLM and BBT)."""

    #: candidates per generation, lambda (BPT-VLM 30; pycma's default would be 4 + 3 ln d).
    popsize: int = 30
    #: initial step size sigma0 of the search distribution N(0, sigma0^2 C).
    sigma0: float = 1.0
    #: box [-bound, bound] on every coordinate of z (pycma's default BoundTransform);
    #: 0 for none (BPT-VLM: 0).
    bound: float = 0.0

    @property
    def search_sigma(self) -> float:
        return self.sigma0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.popsize, int) or self.popsize < 2:
            raise ConfigError(f"popsize must be an int >= 2; got {self.popsize!r}")
        if not (np.isfinite(self.sigma0) and self.sigma0 > 0):
            raise ConfigError(f"sigma0 must be finite and > 0; got {self.sigma0!r}")
        if not (np.isfinite(self.bound) and self.bound >= 0):
            raise ConfigError(f"bound must be finite and >= 0 (0: unbounded); got {self.bound!r}")


@dataclass(frozen=True, kw_only=True)
class BPTVLMPromptConfig(PromptConfig):
    """BPT-VLM's shallow prompt, shared by its pycma and pypop7 (``methods.es_pypop``) runs."""

    #: text context tokens (BPT-VLM 8).
    n_text: int = 8
    #: visual prompt tokens after [CLS] (BPT-VLM 5).
    n_visual: int = 5
    #: intrinsic dimension of the text subspace, d_L (BPT-VLM 500).
    intrinsic_dim_text: int | None = 500
    #: intrinsic dimension of the visual subspace, d_V (BPT-VLM 500).
    intrinsic_dim_visual: int | None = 500
    #: one sigma, as released (Shallow_Prompt_CLIP.py, CMA_ES.py): the search's initial step
    #: size also sets the projections (text std ~ 1/sigma, visual ~ sigma), so the swept
    #: sigma is the published hyperparameter. False: the projections take projection_sigma.
    one_sigma: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.one_sigma and self.projection_sigma != 1.0:
            raise ConfigError("with one_sigma (BPT-VLM's one sigma) the projections follow the "
                              "search's sigma; set one_sigma = false to give projection_sigma")

    @property
    def projection_scale_sigma(self) -> float:
        # search_sigma: the optimiser's own (CMAESConfig.sigma0, PypopESConfig.sigma)
        return self.search_sigma if self.one_sigma else self.projection_sigma


# BPTVLMPromptConfig first: a dataclass takes each default from the last base in reverse MRO
# order, so this order lets its prompt defaults win over those CMAESConfig inherits.
@dataclass(frozen=True, kw_only=True)
class BPTVLMConfig(BPTVLMPromptConfig, CMAESConfig):
    """BPT-VLM shallow (configs/shallow_prompt.yaml): 8 text + 5 visual tokens, d 500 + 500."""


@dataclass(frozen=True, kw_only=True)
class BPTVLMDeepConfig(BPTVLMConfig):
    """BPT-VLM deep (configs/deep_prompt.yaml): one prompt and one CMA-ES per layer."""

    #: one prompt per layer (VPT-deep); must stay True for this method.
    deep: bool = True
    #: stop after the last complete round over all blocks, as published (maxiter =
    #: budget // (popsize * layers)), leaving the remainder of the budget unspent;
    #: False spends it on the first blocks of a last, partial round.
    complete_rounds_only: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.deep:
            raise ConfigError("bpt-vlm-deep needs deep=True; use bpt-vlm for shallow prompts")


def _global_randn(*shape: int) -> np.ndarray:
    """pycma's ``randn`` option: draws from the global RandomState *at call time*.

    A module-level function pickles by name, so an unpickled pycma object keeps
    sampling from whatever global state is swapped in (see the module docstring).
    """
    return np.random.randn(*shape)


class _GlobalRNG:
    """A private copy of numpy's global RandomState, swapped in around pycma calls."""

    def __init__(self, seed: int) -> None:
        if not 0 <= seed < 2**32:
            raise ConfigError(f"pycma methods need a seed in [0, 2**32); got {seed}")
        # identical to the state np.random.seed(seed) leaves behind
        self.state: Any = np.random.RandomState(seed).get_state()

    @contextmanager
    def active(self) -> Iterator[None]:
        outer = np.random.get_state()
        np.random.set_state(self.state)
        try:
            yield
        finally:
            self.state = np.random.get_state()
            np.random.set_state(outer)


def _new_cma(dim: int, config: CMAESConfig) -> cma.CMAEvolutionStrategy:
    """One pycma CMA-ES from 0 (call it with the instance's global state active)."""
    import cma  # deferred: methods/ stays cheap to import

    opts: dict[str, Any] = {
        "popsize": config.popsize,
        "seed": np.nan,  # the instance's _GlobalRNG replaces pycma's np.random.seed
        "randn": _global_randn,
        "maxiter": np.inf,  # the budget is enforced by the caller's loop
        "maxfevals": np.inf,
        "verbose": -9,
        "verb_log": 0,  # no outcmaes/ files
        "verb_disp": 0,
    }
    if config.bound > 0:
        opts["bounds"] = [-config.bound, config.bound]
    return cma.CMAEvolutionStrategy(np.zeros(dim), config.sigma0, inopts=opts)


def _reasons(es: cma.CMAEvolutionStrategy) -> dict[str, Any]:
    return {str(k): v for k, v in dict(es.stop()).items()}


class _BestSoFar:
    """The best point evaluated so far and its loss (z = 0, loss inf, before any)."""

    def __init__(self, dim: int) -> None:
        self.z = np.zeros(dim)
        self.loss = np.inf

    def update(self, z: np.ndarray, losses: np.ndarray) -> None:
        i = int(np.argmin(losses))
        if losses[i] < self.loss:
            self.z, self.loss = z[i].copy(), float(losses[i])


class _PycmaMethod(Method):
    """What the pycma methods share besides CMA-ES itself.

    The config check, the instance's global-RNG state, the best point so far
    (``recommend()``) and the pending ask (``ask()`` is idempotent until told).
    Subclasses ask and tell their CMA-ES in ``_propose`` and ``_tell_es``, both
    run with the global state swapped in, and name what ``state_dict`` pickles
    in ``_es_state`` / ``_load_es``.
    """

    #: the config class this method needs (subclasses included).
    config_type: ClassVar[type[CMAESConfig]] = CMAESConfig
    #: the instance's copy of numpy's global state; set by the subclass, before its CMA-ES.
    _rng: _GlobalRNG

    def __init__(self, config: CMAESConfig, space: SearchSpace, seed: int) -> None:
        if not isinstance(config, self.config_type):
            raise ConfigError(
                f"{self.name}: needs a {self.config_type.__name__}; got {type(config).__name__}")
        super().__init__(config, space, seed)
        self._best = _BestSoFar(self.dim)
        self.pending: np.ndarray | None = None  # the last ask(), until told

    @abstractmethod
    def _propose(self) -> np.ndarray:
        """(ask_size, dim) the next candidates (global state active)."""

    @abstractmethod
    def _tell_es(self, z: np.ndarray, losses: np.ndarray) -> None:
        """Tell the CMA-ES the losses of the pending points z (global state active)."""

    @abstractmethod
    def _es_state(self) -> Any:
        """The pycma object(s) to pickle."""

    @abstractmethod
    def _load_es(self, es: Any) -> None:
        """Check and install what ``_es_state`` pickled."""

    def ask(self) -> np.ndarray:
        if self.pending is None:
            with self._rng.active():
                self.pending = self._propose()
        return self.pending.copy()

    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        losses = self._check_tell(z, evaluation)
        z = self._match_pending(self.pending, z)
        with self._rng.active():
            self._tell_es(z, losses)
        self._best.update(z, losses)
        self.pending = None

    def recommend(self) -> np.ndarray:
        return self._best.z.copy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "es": pickle.dumps(self._es_state()),  # pycma's own way to save a run
            "global_rng": self._rng.state,
            "pending": None if self.pending is None else self.pending.copy(),
            "best_z": self._best.z.copy(),
            "best_loss": self._best.loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_es(pickle.loads(state["es"]))
        self._rng.state = state["global_rng"]
        self.pending = None if state["pending"] is None else np.array(state["pending"])
        self._best.z, self._best.loss = np.array(state["best_z"]), float(state["best_loss"])


class SubspaceCMAES(_PycmaMethod):
    """CMA-ES (pycma) over R^dim from z = 0: the ES wrapper behind BPT-VLM and BBT.

    Example (a quadratic in 20 dimensions)::

        >>> import numpy as np
        >>> from methods.base import Evaluation, SearchSpace
        >>> from methods.es_subspace import BPTVLM, BPTVLMConfig
        >>> target = np.full(20, 0.5)
        >>> method = BPTVLM(BPTVLMConfig(popsize=10), SearchSpace(dim=20), seed=0)
        >>> for _ in range(60):
        ...     z = method.ask()                                  # (10, 20)
        ...     losses = 0.5 * ((z - target) ** 2).sum(axis=1)
        ...     method.tell(z, Evaluation(losses=losses))
        >>> bool(0.5 * ((method.recommend() - target) ** 2).sum() < 0.1 * 0.5 * (target**2).sum())
        True
    """

    name: ClassVar[str] = "cma-es"

    def __init__(self, config: CMAESConfig, space: SearchSpace, seed: int) -> None:
        super().__init__(config, space, seed)
        self._rng = _GlobalRNG(self.seed)
        with self._rng.active():
            self._es = _new_cma(self.dim, config)

    @property
    def ask_size(self) -> int:
        return int(self._es.popsize)

    def _propose(self) -> np.ndarray:
        return np.array(self._es.ask(), dtype=np.float64)

    def _tell_es(self, z: np.ndarray, losses: np.ndarray) -> None:
        # pycma finds each point's genotype by content, so copies are fine
        self._es.tell(list(z), losses.tolist())

    def stop(self) -> dict[str, Any]:
        with self._rng.active():
            return _reasons(self._es)

    def _es_state(self) -> Any:
        return self._es

    def _load_es(self, es: Any) -> None:
        if es.N != self.dim:
            raise ConfigError(f"{self.name}: state of dimension {es.N}, method of {self.dim}")
        self._es = es


class BPTVLM(SubspaceCMAES):
    """BPT-VLM shallow: CMA-ES over [z_L || z_V] (see ``SubspaceCMAES`` for an example)."""

    name: ClassVar[str] = "bpt-vlm"


class BPTVLMDeep(_PycmaMethod):
    """BPT-VLM deep: one CMA-ES per block of ``space.blocks``, block-coordinate.

    Generation g works on one block b (b = g mod L for L blocks, skipping blocks
    whose CMA-ES has met a stop rule): its CMA-ES proposes ``popsize`` values of
    that block, and every other block is held at its value in the best point
    evaluated so far (zeros before any), as the published code evaluates layer
    i with the other layers at their best prompts. After tell() the next block
    is taken. All blocks' CMA-ES share the instance's global-RNG state, as the
    published ``deep_cma`` shares numpy's global stream.

    Budget: every ask costs ``popsize`` candidate evaluations, so a budget of B
    allows G = B // popsize generations and block b gets ceil((G - b) / L) of
    them: floor(G / L) complete rounds, plus one more generation for each of
    the first G mod L blocks. The published loop runs only the complete rounds
    (maxiter = B // (popsize * L)) and leaves the remainder unspent; set
    ``complete_rounds_only`` to do the same (it needs ``plan()``, which the loop
    calls before the first ask). E.g. the Caltech101 budget 3,600 with
    popsize 30 and 12 layers: 120 generations, 10 per layer either way.

    Example (a quadratic in 4 blocks of 5)::

        >>> import numpy as np
        >>> from methods.base import Evaluation, SearchSpace
        >>> from methods.es_subspace import BPTVLMDeep, BPTVLMDeepConfig
        >>> space = SearchSpace(dim=20, blocks=((0, 5), (5, 10), (10, 15), (15, 20)))
        >>> target = np.full(20, 0.5)
        >>> method = BPTVLMDeep(BPTVLMDeepConfig(popsize=10), space, seed=0)
        >>> blocks = []
        >>> for _ in range(60):
        ...     blocks.append(method.current_block)
        ...     z = method.ask()                                  # (10, 20), that block varies
        ...     method.tell(z, Evaluation(losses=0.5 * ((z - target) ** 2).sum(axis=1)))
        >>> blocks[:6]                                            # block-coordinate, cyclic
        [0, 1, 2, 3, 0, 1]
        >>> bool(0.5 * ((method.recommend() - target) ** 2).sum() < 0.1 * 0.5 * (target**2).sum())
        True
    """

    name: ClassVar[str] = "bpt-vlm-deep"
    config_type: ClassVar[type[CMAESConfig]] = BPTVLMDeepConfig

    def __init__(self, config: BPTVLMDeepConfig, space: SearchSpace, seed: int) -> None:
        super().__init__(config, space, seed)
        self._slices = space.block_slices
        if any(s.stop - s.start < 1 for s in self._slices):
            raise ConfigError(f"{self.name}: every block needs at least one coordinate")
        self._rng = _GlobalRNG(self.seed)
        with self._rng.active():
            self._ess = [_new_cma(s.stop - s.start, config) for s in self._slices]
        self._block = 0
        self._asks_done = 0
        self._max_asks: int | None = None

    @property
    def current_block(self) -> int:
        """Index of the block the next ask() varies."""
        return self._block

    @property
    def ask_size(self) -> int:
        return int(self._ess[self._block].popsize)

    def plan(self, asks: int | None, steps_per_epoch: int | None = None) -> None:
        del steps_per_epoch
        n_blocks = len(self._ess)
        if self.config.complete_rounds_only and asks is not None:
            self._max_asks = self._asks_done + (asks // n_blocks) * n_blocks

    def _propose(self) -> np.ndarray:
        block = np.array(self._ess[self._block].ask(), dtype=np.float64)
        z = np.tile(self._best.z, (block.shape[0], 1))
        z[:, self._slices[self._block]] = block
        return z

    def _tell_es(self, z: np.ndarray, losses: np.ndarray) -> None:
        self._ess[self._block].tell(list(z[:, self._slices[self._block]]), losses.tolist())

    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        super().tell(z, evaluation)
        self._asks_done += 1
        self._block = self._next_block()

    def _next_block(self) -> int:
        """The next block in cyclic order whose CMA-ES has not stopped (or the next one)."""
        n = len(self._ess)
        for step in range(1, n + 1):
            b = (self._block + step) % n
            if not self._stop_reasons(b):
                return b
        return (self._block + 1) % n

    def _stop_reasons(self, b: int) -> dict[str, Any]:
        with self._rng.active():
            return _reasons(self._ess[b])

    def stop(self) -> dict[str, Any]:
        if self._max_asks is not None and self._asks_done >= self._max_asks:
            return {"complete_rounds": self._asks_done // len(self._ess)}
        per_block = [self._stop_reasons(b) for b in range(len(self._ess))]
        if all(per_block):  # one stopped block is skipped; all stopped ends the run
            return {f"block{b}:{k}": v for b, r in enumerate(per_block) for k, v in r.items()}
        return {}

    def _es_state(self) -> Any:
        return self._ess

    def _load_es(self, ess: Any) -> None:
        if [es.N for es in ess] != [s.stop - s.start for s in self._slices]:
            raise ConfigError(f"{self.name}: state blocks do not match the search space's")
        self._ess = ess

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(block=self._block, asks_done=self._asks_done, max_asks=self._max_asks)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._block, self._asks_done = int(state["block"]), int(state["asks_done"])
        self._max_asks = state["max_asks"]
