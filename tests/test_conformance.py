"""Conformance of every registered method, and of the example plugin, through the method kit
(``sweep.testing.kit``: the checks a user runs on a method of their own); and the kit fails
methods that break the contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import methods
from sweep.testing import kit

NAMES = methods.REGISTRY.names()

#: The quadratic's optimum lies about 1 from the start, so a CMA-ES step of 1 in
#: 60 dimensions (a norm of ~7.7) spends ~90 generations shrinking before it makes
#: progress; the ES step is set to the problem's scale, as a user would.
SCALE = {name: {"sigma0": 0.1} for name in ("bbt", "bpt-vlm", "bpt-vlm-deep")}
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "random_search"


@pytest.mark.parametrize("name", NAMES)
def test_ask_shape_and_tell(name):
    kit.check_ask_tell(name, SCALE.get(name))


@pytest.mark.parametrize("name", NAMES)
def test_identical_seeds_give_identical_runs(name):
    kit.check_reproducible(name, SCALE.get(name))


@pytest.mark.parametrize("name", NAMES)
def test_budget_never_exceeded_in_any_unit(name):
    kit.check_budget(name, SCALE.get(name))


@pytest.mark.parametrize("name", NAMES)
def test_clear_improvement_over_the_start(name):
    kit.check_improves(name, SCALE.get(name))


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_continues_identically(name):
    kit.check_checkpoint(name, SCALE.get(name))


@pytest.mark.parametrize("name", NAMES)
def test_default_search_space_builds(name):
    kit.check_space(name)


def test_the_example_plugin_keeps_the_contract_and_stays_out_of_the_registry():
    plugin = kit.load(str(EXAMPLE / "random_search.py"))
    kit.check_method("random-search")
    assert plugin.methods == ("random-search",) and "random-search" not in methods.REGISTRY


BROKEN = """
import numpy as np
from methods import MethodEntry
from random_search import RandomSearch, RandomSearchConfig


class Unseeded(RandomSearch):
    def __init__(self, config, space, seed):
        super().__init__(config, space, seed)
        self.rng = np.random.default_rng()  # from the clock, not the seed


class ForgetsItsGenerator(RandomSearch):
    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if k != "rng"}

    def load_state_dict(self, state):
        super().load_state_dict({**state, "rng": np.random.default_rng(0).bit_generator.state})


METHODS = [MethodEntry("broken-unseeded", RandomSearchConfig, Unseeded),
           MethodEntry("broken-checkpoint", RandomSearchConfig, ForgetsItsGenerator)]
"""


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> None:
    """The broken methods, a plugin file of their own (loaded once: one module per name)."""
    kit.load(str(EXAMPLE / "random_search.py"))
    folder = tmp_path_factory.mktemp("broken")
    (folder / "broken_methods.py").write_text(BROKEN)
    kit.load("broken_methods.py", folder)


@pytest.mark.parametrize("name, check, says", [
    ("broken-unseeded", kit.check_reproducible, "the same seed gave two different runs"),
    ("broken-checkpoint", kit.check_checkpoint, "load_state_dict(state_dict()) does not go on"),
])
def test_the_kit_fails_a_method_that_breaks_the_contract(broken, name, check, says):
    kit.check_ask_tell(name)  # what does not break passes
    with pytest.raises(AssertionError, match=re.escape(says)):
        check(name)


def test_registry_rejects_collisions_and_unknown_names():
    entry = methods.REGISTRY.entry(NAMES[0])
    with pytest.raises(methods.ConfigError, match="already registered"):
        methods.REGISTRY.register(NAMES[0], entry.config_cls, entry.method_cls)
    with pytest.raises(methods.ConfigError, match="valid names"):
        methods.REGISTRY.entry("no-such-method")


def test_config_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(methods.ConfigError, match="did you mean 'popsize'"):
        methods.REGISTRY.make_config("bpt-vlm", {"popsiz": 10})
    with pytest.raises(methods.ConfigError, match="'popsize' must be"):
        methods.REGISTRY.make_config("bpt-vlm", {"popsize": "thirty"})
