"""Sweep specifications (sweep/spec.py) and search spaces (sweep/spaces.py); no Ray."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import optuna
import pytest

from methods import REGISTRY
from sweep.errors import ConfigError
from sweep.data import COOP_DATASETS
from sweep.spec import (
    DEFAULT_SPACES,
    DEFAULT_SPEC_TOML,
    EMBEDDED_SOURCE,
    MethodSpace,
    Param,
    field_types,
    load_spec,
    make_space,
    param_columns,
    parse_spec,
    sample_to_config,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"

# A small valid specification; each bad case below adds or changes one thing.
BASE = """\
name = "t"
[budget]
limit = 100
[search]
methods = ["bbt"]
"""


def parse(text: str, **kwargs) -> object:
    return parse_spec(text, "t.toml", **kwargs)


def fails(text: str, *needles: str, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith("t.toml: "), message
    for needle in needles:
        assert needle in message, message
    return message


# ---------------------------------------------------------------- the two shipped files


def test_default_file_is_the_embedded_constant():
    assert (SWEEPS / "default.toml").read_bytes() == DEFAULT_SPEC_TOML.encode("utf-8")


def test_default_spec_parses():
    spec = load_spec(None)
    assert spec.source == EMBEDDED_SOURCE
    assert spec.name == "default"
    assert spec.model.name == "promptsweep-tiny" and spec.model.pretrained is None
    assert spec.data.datasets == ("digits-inverted", "digits-lowcontrast")
    assert spec.data.shots == (16,)
    assert spec.data.seeds == (1, 2)
    assert spec.search.methods == ("bpt-vlm", "cbbt", "bbt")
    assert spec.budget.checkpoints >= 8
    assert spec.search.scheduler == "none" and spec.search.mode == "max"
    assert spec.resources.concurrency == 2 and spec.resources.actors == 1
    assert spec.method("cbbt").space.fixed == {"q": 16}
    from_file = load_spec(SWEEPS / "default.toml")
    assert from_file.source.endswith("default.toml")
    assert dataclasses.replace(from_file, source=spec.source) == spec


def test_coop16_parses_without_the_data_root():
    spec = load_spec(SWEEPS / "coop16.toml", check_paths=False)
    assert spec.name == "coop16"
    assert spec.model.name == "ViT-B-32" and spec.model.pretrained == "openai"
    assert spec.data.root == "/data/coop" and spec.data.seeds == (1, 2, 3)
    assert set(spec.search.methods) == {"bpt-vlm", "bpt-vlm-deep", "cbbt", "bbt", "zip",
                                        "blackvip-tokens"}
    assert spec.search.scheduler == "asha"
    assert spec.resources.actors == 4 and spec.resources.gpus_per_actor == 1
    assert spec.budget.published  # resolved per group (tests/test_published.py)
    zip_ = spec.budget_for("zip", "Caltech101", 16)
    assert zip_.unit == "calls" and zip_.limit == 5000
    assert spec.samples_for("bpt-vlm-deep") == 10 and spec.samples_for("bbt") == 20
    # The data root is checked when asked: it does not exist here.
    with pytest.raises(ConfigError, match="data.root"):
        load_spec(SWEEPS / "coop16.toml")


def test_coop16_parses_with_a_data_root(tmp_path):
    for name in ("Caltech101", "OxfordPets", "Food101"):
        (tmp_path / COOP_DATASETS[name].folder).mkdir()
    text = (SWEEPS / "coop16.toml").read_text().replace("/data/coop", str(tmp_path))
    assert parse(text).data.root == str(tmp_path.resolve())


# ---------------------------------------------------------------- bad input


BAD = {
    "malformed": ("name = \"t\"\n[budget\n", ["malformed TOML", "line 2"]),
    "unknown top-level key": ("nmae = 1\n" + BASE, ["nmae", "did you mean 'name'"]),
    "unknown section": ("[modle]\n" + BASE, ["modle", "did you mean 'model'"]),
    "unknown budget key": (BASE.replace("limit = 100", "limt = 100\nlimit = 100"),
                           ["budget.limt", "did you mean 'limit'"]),
    "budget limit missing": (BASE.replace("limit = 100", ""), ["budget.limit", "required"]),
    "budget limit a string": (BASE.replace("limit = 100", 'limit = "100"'),
                              ["budget.limit", "expected an integer"]),
    "budget limit a boolean": (BASE.replace("limit = 100", "limit = true"), ["budget.limit"]),
    "negative budget": (BASE.replace("limit = 100", "limit = -5"), ["budget.limit", ">= 1"]),
    "zero budget": (BASE.replace("limit = 100", "limit = 0"), ["budget.limit"]),
    "unknown budget unit": (BASE.replace("limit = 100", 'limit = 100\nunit = "queries"'),
                            ["budget.unit", "queries"]),
    "batch size zero": (BASE.replace("limit = 100", "limit = 100\nbatch_size = 0"),
                        ["budget.batch_size"]),
    "too few checkpoints": (BASE.replace("limit = 100", "limit = 100\ncheckpoints = 4"),
                            ["budget.checkpoints", ">= 8"]),
    "zero shots": (BASE + "[data]\nshots = [0]\n", ["data.shots", "0"]),
    "shots not a list": (BASE + "[data]\nshots = 16\n", ["data.shots", "array"]),
    "repeated shots": (BASE + "[data]\nshots = [4, 4]\n", ["data.shots", "twice"]),
    "no seeds": (BASE + "[data]\nseeds = []\n", ["data.seeds", "empty"]),
    "negative seed": (BASE + "[data]\nseeds = [-1]\n", ["data.seeds", ">= 0"]),
    "unknown data set": (BASE + '[data]\ndatasets = ["digit"]\n',
                         ["data.datasets", "did you mean 'digits'"]),
    "CoOp data set without a root": (BASE + '[data]\ndatasets = ["OxfordPets"]\n',
                                     ["data.root", "required"]),
    "missing data root": (BASE + '[data]\ndatasets = ["folder"]\nroot = "/no/such/root"\n',
                          ["data.root", "does not exist"]),
    "no methods": (BASE.replace('methods = ["bbt"]', ""), ["search.methods", "required"]),
    "unknown method": (BASE.replace('["bbt"]', '["bbx"]'),
                       ["search.methods", "did you mean 'bbt'"]),
    "zero samples": (BASE + "samples = 0\n", ["search.samples"]),
    "unknown scheduler": (BASE + 'scheduler = "hyperband"\n', ["search.scheduler"]),
    "unknown sampler": (BASE + 'sampler = "cmaes"\n', ["search.sampler"]),
    "test metric": (BASE + 'metric = "test_acc"\n', ["search.metric"]),
    "grace fraction zero": (BASE + "grace_fraction = 0.0\n", ["search.grace_fraction"]),
    "zero concurrency": (BASE + "[resources]\nconcurrency = 0\n", ["resources.concurrency"]),
    "zero actors": (BASE + "[resources]\nactors = 0\n", ["resources.actors"]),
    "negative gpus": (BASE + "[resources]\ngpus_per_actor = -1\n", ["resources.gpus_per_actor"]),
    "name escapes results": (BASE.replace('"t"', '"../elsewhere"'), ["name", "results/"]),
    "name with a separator": (BASE.replace('"t"', '"a/b"'), ["name"]),
    "name with dots": (BASE.replace('"t"', '"a..b"'), ["name"]),
    "empty name": (BASE.replace('"t"', '""'), ["name"]),
    "name with a newline": (BASE.replace('"t"', '"t\\n"'), ["name"]),
    "unknown model": (BASE + '[model]\nname = "ViT-B-33"\npretrained = "openai"\n',
                      ["model.name", "did you mean 'ViT-B-32'"]),
    "random weights": (BASE + '[model]\nname = "RN50"\n', ["model.pretrained", "random"]),
    "tag and checkpoint": (BASE + '[model]\nname = "RN50"\npretrained = "openai"\n'
                                  'checkpoint = "w.pt"\n', ["model.checkpoint", "not both"]),
    "missing checkpoint": (BASE + '[model]\nname = "RN50"\ncheckpoint = "/no/such/w.pt"\n',
                           ["model.checkpoint", "does not exist"]),
    "section of a method not swept": (BASE + "[methods.zip]\nsamples = 2\n",
                                      ["methods.zip", "search.methods"]),
    "section of an unknown method": (BASE + "[methods.zipp]\nsamples = 2\n",
                                     ["methods.zipp", "did you mean 'zip'"]),
    "unknown method key": (BASE + "[methods.bbt]\nparam = { popsize = 4 }\n",
                           ["methods.bbt.param", "did you mean 'params'"]),
    "population below 2": (BASE + "[methods.bbt]\nparams = { popsize = 1 }\n",
                           ["methods.bbt.params.popsize", "popsize"]),
    "sigma zero": (BASE + "[methods.bbt]\nparams = { sigma0 = 0.0 }\n",
                   ["methods.bbt.params.sigma0", "> 0"]),
    "unknown hyperparameter": (BASE + "[methods.bbt]\nparams = { sigma = 0.5 }\n",
                               ["methods.bbt.params.sigma", "did you mean 'sigma0'"]),
    "hyperparameter of the wrong type": (BASE + '[methods.bbt]\nparams = { popsize = "30" }\n',
                                         ["methods.bbt.params.popsize", "integer"]),
    "unknown estimator": (BASE.replace('["bbt"]', '["cbbt"]')
                          + '[methods.cbbt]\nparams = { estimator = "sphre" }\n',
                          ["methods.cbbt.params.estimator", "sphre"]),
    "method budget with an unknown unit": (BASE + '[methods.bbt]\nbudget = { unit = "tokens" }\n',
                                           ["methods.bbt.budget.unit"]),
    "sigma range at zero": (BASE + "[methods.bbt.space]\nsigma0 = { low = 0.0 }\n",
                            ["methods.bbt.space.sigma0.low", "> 0"]),
    "population range below 2": (BASE + "[methods.bbt.space]\n"
                                        "popsize = { low = 1, high = 9, step = 1 }\n",
                                 ["methods.bbt.space.popsize.low", "popsize"]),
    "low above high": (BASE + "[methods.bbt.space]\nsigma0 = { low = 1.5, high = 0.5 }\n",
                       ["methods.bbt.space.sigma0.low", "<= high"]),
    "unknown override key": (BASE + "[methods.bbt.space]\nsigma0 = { lo = 0.5 }\n",
                             ["methods.bbt.space.sigma0.lo", "did you mean 'low'"]),
    "unknown space parameter": (BASE + "[methods.bbt.space]\nsigmaa = { low = 0.5 }\n",
                                ["methods.bbt.space.sigmaa", "did you mean 'sigma0'"]),
    "choice rejected by the config": (BASE + "[methods.bbt.space]\n"
                                             "intrinsic_dim_text = { choices = [0, 50] }\n",
                                      ["methods.bbt.space.intrinsic_dim_text.choices"]),
    "fixed and searched": (BASE + "[methods.bbt]\nparams = { popsize = 20 }\n"
                                  "[methods.bbt.space]\npopsize = { low = 10, high = 30 }\n",
                           ["methods.bbt.space.popsize", "fixed"]),
    "a range for a string": (BASE.replace('["bbt"]', '["cbbt"]')
                             + "[methods.cbbt.space]\nestimator = { low = 1, high = 2 }\n",
                             ["methods.cbbt.space.estimator", "choices"]),
    "never sampled": (BASE + "[methods.bbt.space]\n"
                             "intrinsic_dim_visual = { choices = [50, 100] }\n",
                      ["methods.bbt.space.intrinsic_dim_visual", "n_visual"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_the_key(case):
    text, needles = BAD[case]
    fails(text, *needles)


def test_unreadable_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec(tmp_path / "missing.toml")


def test_unknown_pretrained_tag_names_the_key():
    # Imports open_clip (seconds), hence apart from the fast cases above.
    fails(BASE + '[model]\nname = "ViT-B-32"\npretrained = "opnai"\n', "model.pretrained",
          "opnai")


def test_relative_paths_follow_the_spec_file(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"")
    (tmp_path / "data" / "train").mkdir(parents=True)
    spec_file = tmp_path / "s.toml"
    spec_file.write_text(BASE.replace('name = "t"\n', "") + '[model]\nname = "RN50"\n'
                         'checkpoint = "w.pt"\n[data]\ndatasets = ["folder"]\nroot = "data"\n')
    spec = load_spec(spec_file)
    assert spec.name == "s"  # the file's stem when no name is given
    assert spec.model.checkpoint == str((tmp_path / "w.pt").resolve())
    assert spec.data.root == str((tmp_path / "data").resolve())


def test_small_specification_takes_the_defaults():
    spec = parse(BASE)
    assert spec.model.name == "promptsweep-tiny"
    assert spec.data.datasets == ("digits",) and spec.search.samples == 1
    assert [m.name for m in spec.methods] == ["bbt"]
    assert spec.results_dir() == Path("results") / "t"


def test_method_budget_inherits_the_sweep_budget():
    spec = parse(BASE.replace('["bbt"]', '["bbt", "zip"]')
                 + '[methods.zip]\nbudget = { unit = "calls" }\n')
    assert spec.budget_for("zip").unit == "calls"
    assert spec.budget_for("zip").limit == spec.budget.limit == 100
    assert spec.budget_for("zip").to_budget_spec().unit == "calls"


# ---------------------------------------------------------------- spaces


@pytest.mark.parametrize("method", REGISTRY.names())
def test_tpe_samples_valid_configs(method):
    space = make_space(method)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    for i in range(4):
        trial = study.ask()
        fixed = space(trial)
        config = sample_to_config(method, trial.params, fixed)
        REGISTRY.make_config(method, config)
        study.tell(trial, float(i))


def _extreme(param: Param, last: bool):
    values = param.extremes()
    return values[-1] if last else values[0]


@pytest.mark.parametrize("method", REGISTRY.names())
@pytest.mark.parametrize("last", [False, True])
def test_range_ends_are_valid_configs(method, last):
    space = make_space(method)
    trial = optuna.trial.FixedTrial({p.name: _extreme(p, last) for p in space.params})
    space(trial)
    REGISTRY.make_config(method, sample_to_config(method, trial.params, space.fixed))


def test_default_spaces_name_config_fields():
    for method, params in DEFAULT_SPACES.items():
        assert method in REGISTRY, method
        tags = field_types(method)
        for param in params:
            assert tags.get(param.name) in ("int", "float", "str", "bool"), (method, param.name)


def test_every_registered_method_has_a_default_space():
    assert set(REGISTRY.names()) <= set(DEFAULT_SPACES)


def test_space_is_conditional_on_sampled_and_fixed_values():
    for estimator, expected in (("sphere", set()), ("spsa", {"gamma"}),
                                ("spsa_gc", {"gamma", "momentum"})):
        space = make_space("zo", fixed={"estimator": estimator})
        trial = optuna.create_study().ask()
        space(trial)
        assert {"gamma", "momentum"} & set(trial.params) == expected
    # Sampled: gamma appears exactly when the estimator drawn is an SPSA one.
    space = make_space("zo")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        space(trial)
        assert ("gamma" in trial.params) == (trial.params["estimator"] in ("spsa", "spsa_gc"))
    # No visual prompt, no visual subspace dimension.
    assert "intrinsic_dim_visual" not in make_space("bbt").names
    assert "intrinsic_dim_visual" in make_space("bpt-vlm").names
    assert "intrinsic_dim_visual" not in make_space("bpt-vlm", fixed={"n_visual": 0}).names


def test_overrides_and_fixed_values_take_effect():
    space = make_space(
        "cbbt-adapter",
        {"q": {"choices": [8]}, "lr": {"low": 0.01, "high": 0.02}, "mu": {"value": 0.05},
         "adapter_ratio": {"low": 0.1, "high": 0.3}},
        {"estimator": "sphere"},
    )
    assert space.fixed == {"estimator": "sphere", "mu": 0.05}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        fixed = space(trial)
        assert fixed == {"estimator": "sphere", "mu": 0.05}
        assert trial.params["q"] == 8
        assert 0.01 <= trial.params["lr"] <= 0.02
        assert 0.1 <= trial.params["adapter_ratio"] <= 0.3  # a field with no default range
        assert "estimator" not in trial.params and "mu" not in trial.params
    # A partial override keeps the rest of the default range (popsize: 10..50 step 5).
    popsize = {p.name: p for p in make_space("bbt", {"popsize": {"high": 20}}).params}["popsize"]
    assert (popsize.low, popsize.high, popsize.step) == (10, 20, 5)


def test_an_integer_for_a_float_field_becomes_a_float():
    space = make_space("bbt", {"sigma0": {"low": 1, "high": 2}}, {"bound": 3})
    assert space.fixed == {"bound": 3.0} and isinstance(space.fixed["bound"], float)
    sigma0 = {p.name: p for p in space.params}["sigma0"]
    assert isinstance(sigma0.low, float)


def test_prefix_and_hyperparameters():
    space = make_space("bbt", fixed={"bound": 2.0}, prefix="bbt.")
    trial = optuna.create_study().ask()
    config = {**trial.params, **space(trial), "seed": 1}  # what Ray Tune hands the trial
    config.update(trial.params)
    assert all(name.startswith("bbt.") for name in trial.params)
    params = space.hyperparameters(config)
    assert set(params) == {"sigma0", "popsize", "intrinsic_dim_text", "bound"}


def test_sample_to_config_checks_its_input():
    assert sample_to_config("bbt", {"popsize": 12}, {"sigma0": 0.5}) == {"popsize": 12,
                                                                         "sigma0": 0.5}
    with pytest.raises(ConfigError, match="fixed"):
        sample_to_config("bbt", {"popsize": 12}, {"popsize": 20})
    with pytest.raises(ConfigError, match="popsize"):
        sample_to_config("bbt", {"popsize": 1}, {})


def test_spaces_pickle():
    # Ray Tune checkpoints its searcher, space included.
    space = load_spec(None).method("bpt-vlm").space
    copy = pickle.loads(pickle.dumps(space))
    assert isinstance(copy, MethodSpace) and copy.names == space.names
    trial = optuna.trial.FixedTrial({"sigma0": 1.0, "popsize": 20, "intrinsic_dim_text": 50,
                                     "intrinsic_dim_visual": 100})
    assert copy(trial) == {}


def test_zero_shot_samples_once():
    spec = parse(BASE.replace('["bbt"]', '["bbt", "zero-shot"]') + "samples = 5\n")
    assert spec.method("zero-shot").space.samples_nothing
    assert spec.samples_for("zero-shot") == 1 and spec.samples_for("bbt") == 5


def test_param_columns_cover_every_sampled_and_fixed_name():
    spec = load_spec(None)
    columns = param_columns(spec.method(m).space for m in spec.search.methods)
    python_type = {"float": float, "int": int, "str": str, "bool": bool}
    for method in spec.search.methods:
        space = spec.method(method).space
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(3):
            trial = study.ask()
            values = {**trial.params, **space(trial)}
            for name, value in values.items():
                assert name in columns, (method, name)
                assert isinstance(value, python_type[columns[name]]), (method, name, value)
    assert columns["q"] == "int" and columns["sigma0"] == "float"
    assert columns["estimator"] == "str" and columns["popsize"] == "int"


def test_a_space_override_fixes_a_parameter_at_its_default_even_none(tmp_path):
    spec = parse_spec(BASE.replace('methods = ["bbt"]', 'methods = ["cbbt"]')
                      + "[methods.cbbt.space]\nmu = { default = true }\n", "d.toml")
    space = spec.method("cbbt").space
    assert "mu" in space.fixed and space.fixed["mu"] is None  # the release's rule, max(1/d, 1e-3)
    assert "mu" not in {p.name for p in space.params}
    with pytest.raises(ConfigError, match=r"methods\.cbbt\.space\.mu: default = true fixes"):
        parse_spec(BASE.replace('methods = ["bbt"]', 'methods = ["cbbt"]')
                   + "[methods.cbbt.space]\nmu = { default = true, low = 0.1 }\n", "d.toml")
