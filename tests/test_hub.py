"""``hf-hub:<repo>`` models load from the local Hugging Face cache, offline, and ``--plan`` prices
them from their config: a cache laid out as ``huggingface_hub`` lays it out, holding the
embedded model's config and weights as a hub repository would."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from sweep.errors import ModelError
from sweep.oracle import EMBEDDED_CONFIG, EMBEDDED_WEIGHTS, load_model
from sweep.spec import ModelSpec, parse_spec

REPO = "promptsweep/tiny-hub"


def _put(repo_dir: Path, commit: str, name: str, data: bytes) -> None:
    """A file of a snapshot as huggingface_hub keeps it: a blob named by its hash, and the
    snapshot's entry a relative link to it."""
    digest = hashlib.sha256(data).hexdigest()
    (repo_dir / "blobs" / digest).write_bytes(data)
    os.symlink(Path("..", "..", "blobs", digest), repo_dir / "snapshots" / commit / name)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / f"models--{REPO.replace('/', '--')}"
    for folder in ("blobs", "refs", f"snapshots/{commit}"):
        (repo_dir / folder).mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    config = {"model_cfg": json.loads(EMBEDDED_CONFIG.read_text()), "preprocess_cfg": {}}
    _put(repo_dir, commit, "open_clip_config.json", json.dumps(config).encode())
    _put(repo_dir, commit, "open_clip_pytorch_model.bin", EMBEDDED_WEIGHTS.read_bytes())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert constants.HF_HUB_OFFLINE  # conftest: as every sweep runs
    return tmp_path


def test_a_hub_model_loads_from_the_cache_with_its_weights(hub_cache):
    hub = load_model(ModelSpec(name=f"hf-hub:{REPO}"), "cpu")
    embedded = load_model(ModelSpec(), "cpu")
    theirs = embedded.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in hub.model.state_dict().items())
    tokens = hub.tokenizer(["a photo of a cat."])
    with torch.no_grad():
        assert torch.equal(hub.model.encode_text(tokens), embedded.model.encode_text(tokens))


def test_a_hub_model_missing_from_the_cache_fails_naming_the_offline_cache(hub_cache):
    with pytest.raises(ModelError, match=r"cannot build model 'hf-hub:promptsweep/absent' "
                                         r"\(HF_HUB_OFFLINE=1: only cached weights\)"):
        load_model(ModelSpec(name="hf-hub:promptsweep/absent"), "cpu")


def test_the_plan_prices_a_hub_model_from_its_cached_config(hub_cache):
    from sweep.tuning import DEVICES, Architecture, plan_cost, plan_sweep

    spec = parse_spec(f'name = "hub"\n[model]\nname = "hf-hub:{REPO}"\n[budget]\nlimit = 100\n'
                      '[search]\nmethods = ["bbt"]\n', "hub.toml")
    assert Architecture.of(spec.model) == Architecture.of(ModelSpec())
    assert spec.actor_gpus == 1.0  # not the embedded model, though its weights are the same
    cost = plan_cost(plan_sweep(spec, hub_cache / "results"), DEVICES["a10g"])
    assert "bbt-digits-16shot" in cost and "wall time on 1 GPUs" in cost


@pytest.mark.parametrize("user", [None, "0"])
def test_the_launcher_sets_hf_hub_offline_unless_the_user_did(user, tmp_path, monkeypatch):
    from sweep.launch import main

    if user is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", user)
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\n[budget]\nlimit = 10\n[search]\nmethods = ["bbt"]\n')
    assert main([str(spec), "--plan", "--results", str(tmp_path)]) == 0
    assert os.environ["HF_HUB_OFFLINE"] == (user or "1")


@pytest.mark.ray
def test_hf_hub_offline_reaches_every_worker_through_the_jobs_runtime_environment(ray_session):
    import ray

    from sweep.tuning import PASSED_ENV

    @ray.remote(num_cpus=0)
    def seen() -> tuple[dict, str | None]:
        return ray.get_runtime_context().runtime_env, os.environ.get("HF_HUB_OFFLINE")

    runtime_env, value = ray.get(seen.remote())
    assert "HF_HUB_OFFLINE" in PASSED_ENV
    # Set by Ray for the job, not inherited from a raylet (which a joined cluster's would be).
    assert runtime_env["env_vars"]["HF_HUB_OFFLINE"] == value == os.environ["HF_HUB_OFFLINE"]
