"""Property: no method ever exceeds its budget, and the tables carry the oracle's own counts.

Hypothesis draws a registered method, a budget unit, the images per call of
the ``calls`` unit, a seed, the method's own sizes (population, number of
perturbations, mini-batch) and a budget limit placed relative to the cost of
one ask (below it, an exact multiple, one short of or just past a multiple, or
a raw small integer), and runs the method through the one loop on an analytic
objective that counts queries exactly like the oracle and refuses over-budget
requests. For every run:

1. the objective's count in the budget's unit never exceeds the limit;
2. the run ends for the budget (with less left than the next ask costs) or
   for the method's own reason, never with an exception;
3. the last checkpoint, the run's result and the trials/curves rows all carry
   the objective's own counts in all four units, and no checkpoint exceeds the
   limit (checkpoint counts never decrease);
4. the asks, each priced independently from its size and mini-batch, add up to
   exactly what the objective counted (nothing counted twice or lost), and
   every ask has the size the loop checked against the budget.
"""

from __future__ import annotations

import dataclasses
import math

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import methods
from methods.base import SearchSpace
from sweep.budget import UNITS, BudgetSpec
from sweep.run import run_method
from sweep.testing import QuadraticObjective, SyntheticClipObjective
from sweep.results import Provenance, TrialRecord

NAMES = methods.REGISTRY.names()

#: As in test_conformance: the CMA-ES step at the quadratic's scale.
SCALE = {name: {"sigma0": 0.1} for name in ("bbt", "bpt-vlm", "bpt-vlm-deep")}

#: The most asks a drawn budget allows: past the 8 checkpoints (the geometric schedule), and
#: still milliseconds per example.
MAX_ASKS = 12


def _fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(methods.REGISTRY.entry(name).config_cls)}


@st.composite
def setups(draw):
    """A method name, its config overrides, its search space, a seed and the budget's unit."""
    name = draw(st.sampled_from(NAMES))
    fields = _fields(name)
    overrides = dict(SCALE.get(name, {}))
    if "popsize" in fields:  # bbt, bpt-vlm, bpt-vlm-deep
        overrides["popsize"] = draw(st.integers(2, 30), label="popsize")
    if "n_individuals" in fields:  # the pypop7 strategies
        overrides["n_individuals"] = draw(st.integers(4, 30), label="n_individuals")
    if "q" in fields:  # the zeroth-order methods (default estimators: no q <= d constraint)
        overrides["q"] = draw(st.integers(1, 16), label="q")
    if "batch_size" in fields:  # images per request (None: the whole training set)
        overrides["batch_size"] = draw(st.none() | st.integers(1, 200), label="minibatch")
    config = methods.REGISTRY.make_config(name, overrides)
    dim = draw(st.integers(20, 40), label="dim")
    blocks = None
    if getattr(config, "deep", False):
        n_blocks = draw(st.integers(2, 4), label="blocks")
        edges = [round(i * dim / n_blocks) for i in range(n_blocks + 1)]
        blocks = tuple(zip(edges, edges[1:]))
    space = SearchSpace(dim=dim, blocks=blocks)
    seed = draw(st.integers(0, 2**31 - 1), label="seed")
    unit = draw(st.sampled_from(UNITS), label="unit")
    calls_batch = draw(st.integers(1, 200), label="calls_batch_size")
    return name, config, space, seed, unit, calls_batch


def _price(n: int, minibatch: int | None, images: int, classes: int, batch_size: int) -> dict:
    """What n candidates on a request of ``minibatch`` images cost, from the unit definitions."""
    m = images if minibatch is None else min(minibatch, images)
    return {"candidate_evals": n, "calls": n * math.ceil(m / batch_size),
            "images": n * m, "text_sequences": n * classes}


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(setup=setups(), data=st.data())
def test_no_method_exceeds_its_budget_and_tables_carry_the_oracles_counts(setup, data):
    name, config, space, seed, unit, calls_batch = setup
    method = methods.REGISTRY.create(name, config, space, seed)
    cls = SyntheticClipObjective if method.needs_features else QuadraticObjective

    # The limit, relative to the cost of the first ask in the budget's unit.
    probe = cls(space.dim, budget=BudgetSpec(unit=unit, batch_size=calls_batch), seed=7)
    per_ask = probe.cost(method.ask_size, method.minibatch)[unit] if method.ask_size else 1
    asks = data.draw(st.integers(0, MAX_ASKS), label="asks")
    kind = data.draw(st.sampled_from(["exact", "one_short", "one_over", "between", "raw"]),
                     label="limit_kind")
    if kind == "exact":
        limit = asks * per_ask
    elif kind == "one_short":
        limit = max(0, asks * per_ask - 1)
    elif kind == "one_over":
        limit = asks * per_ask + 1
    elif kind == "between":  # anywhere in [asks, asks + 1) asks' cost (below one ask when asks = 0)
        limit = asks * per_ask + data.draw(st.integers(0, max(0, per_ask - 1)), label="extra")
    else:
        limit = data.draw(st.integers(0, 64), label="raw_limit")
    budget = BudgetSpec(unit=unit, limit=limit, batch_size=calls_batch)
    objective = cls(space.dim, budget=budget, seed=7)

    # Price every ask as it happens, from its size and mini-batch alone.
    asked: list[tuple[int, int, int | None]] = []  # (ask_size checked, rows, minibatch)
    original_ask = method.ask

    def counted_ask():
        checked, minibatch = method.ask_size, method.minibatch
        z = original_ask()
        asked.append((checked, z.shape[0], minibatch))
        return z

    method.ask = counted_ask  # instance attribute: the loop calls this one
    # A method's own dev scores (BBT's) are paid for from the budget too: price those served.
    devs: list[int] = []
    original_dev = objective.dev

    def counted_dev(z):
        out = original_dev(z)
        devs.append(z.shape[0])
        return out

    objective.dev = counted_dev

    # (2) no exception: run_method raising fails the example with its traceback.
    result = run_method(method, objective)
    used = objective.used
    event(f"method={name}")
    event(f"unit={unit}")
    event(f"stop={'+'.join(sorted(result.stop_reasons))}")

    # (1) never over the limit.
    assert used[unit] <= limit, f"{name}: {used[unit]} {unit} used of a limit of {limit}"

    # (2) stopped for the budget (having spent what it could) or for its own reason.
    assert result.stop_reasons, f"{name}: the run ended without a reason"
    if "budget" in result.stop_reasons:
        next_cost = objective.cost(method.ask_size, method.minibatch)[unit]
        assert limit - used[unit] < next_cost, (
            f"{name}: stopped for the budget with {limit - used[unit]} {unit} left and the "
            f"next ask costing {next_cost}")

    # (3) the records carry the objective's own counts, in every unit.
    assert result.checkpoints, f"{name}: no checkpoint recorded"
    assert result.used.as_dict() == used.as_dict()
    assert result.checkpoints[-1].queries.as_dict() == used.as_dict(), (
        f"{name}: last checkpoint {result.checkpoints[-1].queries} != objective {used}")
    for before, after in zip(result.checkpoints, result.checkpoints[1:]):
        assert all(before.queries[u] <= after.queries[u] for u in UNITS), (
            f"{name}: checkpoint counts decreased: {before.queries} -> {after.queries}")
    for rec in result.checkpoints:
        assert rec.queries[unit] <= limit, f"{name}: checkpoint {rec.checkpoint} over the limit"
    trial = TrialRecord.from_run(
        result, trial_id="t0", sweep="property", sample_id="s0", method=name, model="analytic",
        dataset="analytic", shots=0, seed=seed, budget_unit=unit, budget=limit,
        black_box=method.black_box)
    row = trial.trials_row({}, Provenance())
    assert {u: row[f"queries_{u}"] for u in UNITS} == used.as_dict()
    curves = trial.curves_rows()
    assert {u: curves[-1][f"queries_{u}"] for u in UNITS} == used.as_dict()
    assert all(r[f"queries_{unit}"] <= limit for r in curves)

    # (4) asks x their prices == what the objective counted; each ask as large as checked.
    for checked, rows, _ in asked:
        assert rows == checked, f"{name}: ask() returned {rows} points after ask_size {checked}"
    expected = {u: 0 for u in UNITS}
    dev_images = max(1, objective.meter.images // 4)  # the stand-in dev draw (sweep.testing)
    for _, rows, minibatch in [*asked, *((rows, rows, dev_images) for rows in devs)]:
        for u, v in _price(rows, minibatch, objective.meter.images, objective.meter.classes,
                           calls_batch).items():
            expected[u] += v
    assert expected == used.as_dict(), (
        f"{name}: {len(asked)} asks cost {expected}, the objective counted {used.as_dict()}")
