"""The keeper of a pool's oracle actors: one small Ray actor that replaces an actor gone for good.

Ray restarts a dead oracle actor up to ``max_restarts`` times; after that the
actor is dead for good and every request to it fails. The trials hold
pickled copies of the pool, so a replacement must be found by all of them
and must outlive the trial that asked for it: the keeper owns it and hands
out the current actor of each slot with its generation (0 for the first,
+1 for each replacement). Replacing is idempotent per generation, so
trials that find the same dead actor at once start one new actor between
them.

This module imports nothing heavy, and it sits outside ``sweep/oracle/``
on purpose: a Ray actor's process imports its class's module with every
package above it, and the oracle package loads torch (0.5 GB of memory), so the
keeper's process stays small only here. The recipe of an oracle actor
(class, Ray options, arguments) stays pickled until a replacement needs it.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["ActorKeeper"]


class ActorKeeper:
    """Current actor and generation of each slot of a pool (the body of a Ray actor).

    Args:
        recipe: ``ray.cloudpickle.dumps((cls, options, args))`` of an oracle actor.
        actors: the first actors, one per slot (started by the pool's creator).
    """

    def __init__(self, recipe: bytes, actors: list[Any]) -> None:
        self._recipe = recipe
        self.actors = list(actors)
        self.generations = [0] * len(self.actors)

    def current(self) -> tuple[list[Any], list[int]]:
        """Every slot's actor and generation."""
        return self.actors, self.generations

    def replace(self, slot: int, generation: int) -> tuple[Any, int, bool]:
        """Start a fresh actor in ``slot`` unless generation ``generation`` was replaced already.

        Returns the slot's actor, its generation, and whether this call replaced it.
        """
        if generation != self.generations[slot]:
            return self.actors[slot], self.generations[slot], False
        import ray

        cls, options, args = pickle.loads(self._recipe)
        self.actors[slot] = ray.remote(cls).options(**options).remote(*args)
        self.generations[slot] += 1
        return self.actors[slot], self.generations[slot], True
