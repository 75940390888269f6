"""Shared fixtures: small random-weight CLIPs (ViT and ResNet) and a synthetic few-shot task.

Random weights are enough for every exactness test: the identities checked
(context injection, truncation, batching) hold for any weights.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Decoded images go to a folder of this test session, not the user's cache: the
# environment reaches every Ray worker the session starts.
os.environ["PROMPTSWEEP_CACHE"] = tempfile.mkdtemp(prefix="promptsweep-test-pixels-")
# Likewise the key that signs the trials' checkpoints (sweep.checkpoints), not the user's.
os.environ["PROMPTSWEEP_CHECKPOINT_KEY"] = os.path.join(
    tempfile.mkdtemp(prefix="promptsweep-test-key-"), "checkpoint-key")

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

# One BLAS thread: pycma's small eigendecompositions are 100x slower when two
# OpenBLAS threads fight over two busy cores.
threadpool_limits(1, user_api="blas")
# Likewise torch: the tests' tensors are small, and two threads on two busy cores
# cost more in synchronisation than they gain.
torch.set_num_threads(1)

from sweep.data import FewShot, Split
from sweep.tuning.auth import private_token

# Every Ray of the session, and of the processes it starts, is authenticated: RAY_AUTH_MODE=token
# with a token of the session's own (the launcher's start_ray makes one of its own again); the
# user's ~/.ray/auth_token is never read or written.
private_token()

TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 48, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 3},
}
TINY_RN = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_configs(tmp_path_factory) -> dict[str, str]:
    """Register the test architectures with open_clip; returns name -> config path."""
    import open_clip

    folder = tmp_path_factory.mktemp("model_configs")
    names = {}
    for name, cfg in (("test-tiny-vit", TINY_VIT), ("test-tiny-rn", TINY_RN)):
        path = folder / f"{name}.json"
        path.write_text(json.dumps(cfg))
        open_clip.add_model_config(path)
        names[name] = str(path)
    return names


@pytest.fixture(scope="session")
def tiny_vit(tiny_configs):
    """A random-weight ViT CLIP on the CPU (seeded, so every session is the same)."""
    from sweep.oracle import load_model
    from sweep.spec import ModelSpec

    torch.manual_seed(0)
    return load_model(ModelSpec(name="test-tiny-vit"), "cpu")


def make_task(num_classes: int = 3, shots: int = 4, seed: int = 0) -> FewShot:
    """A few-shot task of random 12x12 grey images (the model resizes them)."""
    rng = np.random.default_rng(seed)

    def split(per_class: int) -> Split:
        labels = np.repeat(np.arange(num_classes), per_class)
        images = [rng.integers(0, 256, size=(12, 12), dtype=np.uint8) for _ in labels]
        return Split(images, labels)

    names = ("cat", "dog", "bird", "fish", "horse", "sheep")[:num_classes]
    return FewShot(dataset="synthetic", classnames=names, template="a photo of a {}.",
                   shots=shots, seed=seed, train=split(shots), val=split(2), test=split(3))


class RecordingObjective:
    """An objective that remembers each request: its points, keywords and reply."""

    def __init__(self, objective) -> None:
        self.objective, self.requests = objective, []

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def __call__(self, z, **kwargs):
        ev = self.objective(z, **kwargs)
        self.requests.append((np.array(z), kwargs, ev))
        return ev


@pytest.fixture(scope="session")
def task() -> FewShot:
    return make_task()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session: 2 CPUs, loopback, no dashboard."""
    import ray

    from sweep.tuning import start_ray

    start_ray()
    yield ray
    ray.shutdown()


@pytest.fixture
def umask_022():
    """This process's umask at 022 (the common one) for the test."""
    before = os.umask(0o022)
    yield
    os.umask(before)


class _RunsCode:
    """Unpickled, it makes a folder: what a pickle planted in a results folder could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def planted(tmp_path):
    """(a pickle that runs code when it is loaded, the folder that code makes): nothing may
    ever unpickle it, so the folder must never appear."""
    marker = tmp_path / "planted-code-ran"
    return pickle.dumps(_RunsCode(str(marker))), marker
