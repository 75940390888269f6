"""What CraFT and SharpZO share: their prompt and subspace, and pycma CMA-ES deployed at the
mean of a fresh population.

Both releases (mrflogs/CraFT: main_craft.py ``update_context_prompt``; yifanycc/sharpzo:
main_sharpzo.py, the same function) deploy, after each ``tell``, the mean of A z over a
*fresh* ``es.ask()``: a population drawn only to be averaged, never scored. Since A is
linear, that is A applied to the mean of the fresh points, which is the deployed point
here. CraFT's ImageNet script deploys pycma's best point instead (main_craft_imagenet.py,
``es.result.xbest``): ``deploy = "best"``.

The fresh draw advances pycma's random stream as the releases' does. pycma keeps the
drawn points in its archive of sent solutions; it truncates that archive itself, so it
stays bounded (about 30 generations of points). Randomness and pickling follow
``methods.es_subspace``: the instance's own copy of numpy's global state, swapped in
around every pycma call.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from methods.errors import ConfigError
from methods.es_subspace import CMAESConfig, _GlobalRNG, _new_cma, _reasons

__all__ = ["DEPLOYS", "CraFTSubspaceConfig", "FreshMeanCMA"]

#: what is deployed after a tell: the mean of a fresh population, or pycma's best point.
DEPLOYS = ("fresh_mean", "best")


@dataclass(frozen=True, kw_only=True)
class CraFTSubspaceConfig(CMAESConfig):
    """CraFT's prompt, subspace, views and CMA-ES, which SharpZO's release reuses (main_craft.py,
    craft_configs/*.yaml; main_sharpzo.py, dataset_configs/*.yaml: the values most data sets
    share)."""

    #: 4 context tokens (``n_ctx = 4``)...
    n_text: int = 4
    #: ... from "a photo of a" (``ctx_init``).
    text_init: str | None = "a photo of a"
    #: the subspace, p = p0 + A z (``intrinsic_dim: 512``).
    intrinsic_dim_text: int | None = 512
    #: A ~ N(0, std^2) (``std: 0.2``; 1 on DTD, EuroSAT, ImageNet).
    projection_std: float | None = 0.2
    #: CMA-ES population (``popsize: 40``).
    popsize: int = 40
    #: CMA-ES box (``bound: 5``; 0, none, on FGVCAircraft, Food101, ImageNet).
    bound: float = 5.0
    #: augmented training views (``train_transform``)...
    augment: bool = True
    #: ... a bicubic RandomResizedCrop (scale 0.5-1) and a flip...
    views: str = "craft"
    #: ... one pass of them, cached for the run (``pre_load_features`` over
    #: ``train_loader_F``); CraFT's head alone sees a fresh pass each generation.
    fixed_views: bool = True


class FreshMeanCMA:
    """CMA-ES from z = 0 whose deployed point is the mean of a fresh ask() after each tell.

    Args:
        dim: dimension of z.
        config: popsize, sigma0 and bound of the CMA-ES.
        seed: seeds the instance's global-RNG state (as ``np.random.seed(seed)`` would).
        deploy: "fresh_mean" (the releases) or "best" (CraFT on ImageNet).

    Example::

        >>> cma_es = FreshMeanCMA(4, CMAESConfig(popsize=6, sigma0=0.5), seed=0)
        >>> population = cma_es.ask()                       # (6, 4)
        >>> cma_es.tell(population, (population ** 2).sum(axis=1))
        >>> cma_es.deployed.shape, cma_es.generations
        ((4,), 1)
    """

    def __init__(self, dim: int, config: CMAESConfig, seed: int, deploy: str = "fresh_mean") -> None:
        if deploy not in DEPLOYS:
            raise ConfigError(f"deploy must be one of {DEPLOYS}; got {deploy!r}")
        self.deploy = deploy
        self._rng = _GlobalRNG(seed)
        with self._rng.active():
            self._es = _new_cma(dim, config)
        #: the point deployed now: 0 (the prompt p0) before the first tell.
        self.deployed = np.zeros(dim)
        #: generations told.
        self.generations = 0

    @property
    def popsize(self) -> int:
        return int(self._es.popsize)

    def ask(self) -> np.ndarray:
        """(popsize, dim) a new population to score."""
        with self._rng.active():
            return np.array(self._es.ask(), dtype=np.float64)

    def tell(self, population: np.ndarray, losses: np.ndarray) -> None:
        """Tell the losses of ``population`` (the points of an ask()), then deploy anew."""
        with self._rng.active():
            self._es.tell(list(np.asarray(population, dtype=np.float64)),
                          np.asarray(losses, dtype=np.float64).tolist())
            if self.deploy == "best":
                self.deployed = np.array(self._es.result.xbest, dtype=np.float64)
            else:
                self.deployed = np.array(self._es.ask(), dtype=np.float64).mean(axis=0)
        self.generations += 1

    def stop(self) -> dict[str, Any]:
        """pycma's stop reasons ({} to go on)."""
        with self._rng.active():
            return _reasons(self._es)

    def state_dict(self) -> dict[str, Any]:
        return {"es": pickle.dumps(self._es), "global_rng": self._rng.state,
                "deployed": self.deployed.copy(), "generations": self.generations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        es = pickle.loads(state["es"])
        if es.N != len(self.deployed):
            raise ConfigError(f"CMA-ES state of dimension {es.N}; this one has {len(self.deployed)}")
        self._es, self._rng.state = es, state["global_rng"]
        self.deployed = np.array(state["deployed"], dtype=np.float64)
        self.generations = int(state["generations"])
