"""The data path: each image decoded once per node, device caches under a budget, exact streaming."""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sweep.data import PixelCache, Split, few_shot, load_dataset
from sweep.errors import ConfigError, DataError
from sweep.oracle import ClipOracle, DeviceCache, ImageStore, OracleServer, PromptLayout, TaskKey
from sweep.spec import ModelSpec, parse_spec
from sweep.tuning import check_inputs

CLASSES, PER_SPLIT = ("cat", "dog", "owl"), {"train": 5, "val": 3, "test": 6}
LAYOUTS = (PromptLayout(n_text=2), PromptLayout(n_text=2, n_visual=2))
TOL = 1e-6


def _jpegs(root: Path) -> Path:
    """root/{train,val,test}/<class>/<i>.jpg: small JPEGs of different sizes, none alike."""
    rng = np.random.default_rng(0)
    for split, n in PER_SPLIT.items():
        for c in CLASSES:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(20, 60, size=2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


@pytest.fixture
def counted(monkeypatch):
    """Every decode of an image (Split.load), by file."""
    calls: Counter[str] = Counter()
    real = Split.load

    def load(self, i):
        calls[str(self.images[i])] += 1
        return real(self, i)

    monkeypatch.setattr(Split, "load", load)
    return calls


def test_the_host_pixels_and_the_device_normalisation_give_the_models_transform(tiny_vit, tmp_path):
    split = load_dataset("folder", _jpegs(tmp_path / "data")).train
    store = ImageStore(tiny_vit, PixelCache(tmp_path / "cache", tiny_vit.pixels[0]), DeviceCache(0))
    expected = torch.stack([tiny_vit.preprocess(split.load(i)) for i in range(len(split))])
    assert torch.equal(torch.cat(list(store.batches(split))), expected)  # bit for bit


def test_every_image_is_decoded_once_per_node(tiny_configs, tmp_path, counted):
    root, cache = _jpegs(tmp_path / "data"), tmp_path / "cache"
    spec = parse_spec(f'name = "once"\n[model]\nname = "test-tiny-vit"\ncheckpoint = "{_weights(tmp_path)}"\n'
                      f'[data]\ndatasets = ["folder"]\nroot = "{root}"\nshots = [2]\nseeds = [1, 2]\n'
                      f'cache = "{cache}"\n[budget]\nlimit = 10\n[search]\nmethods = ["bbt"]\n',
                      "once.toml")
    check_inputs(spec, progress=False)  # the preflight decodes the two seeds' draws
    model = ModelSpec(name="test-tiny-vit", config=tiny_configs["test-tiny-vit"],
                      checkpoint=spec.model.checkpoint)
    for _restart in range(2):  # an actor, then the actor that replaces it
        server = OracleServer(model, "cpu", 1, str(cache))
        for seed in (1, 2):
            key = TaskKey("folder", str(root), 2, seed)
            for layout in LAYOUTS:
                shape = server.info(key, layout)
                text = np.zeros((1, *shape["text_shape"]), np.float32)
                visual = np.zeros((1, *shape["visual_shape"]), np.float32) if layout.n_visual else None
                for _checkpoint in range(3):
                    server.evaluate(key, layout, text, visual, False, None)
                    for split in ("val", "test"):
                        server.evaluate_split(key, layout, split, text, visual, False)
    check_inputs(spec, progress=False)  # a resumed sweep's preflight
    dataset = load_dataset("folder", root)
    used = {str(p) for seed in (1, 2) for s in (few_shot(dataset, 2, seed).train,
                                                few_shot(dataset, 2, seed).val) for p in s.images}
    used |= {str(p) for p in dataset.test.images}
    assert set(counted) == used and set(counted.values()) == {1}, counted


def _weights(tmp_path: Path) -> Path:
    """A state dict of the test ViT: the preflight loads the sweep's model like the actors do."""
    from sweep.oracle import load_model

    path = tmp_path / "vit.pt"
    torch.save(load_model(ModelSpec(name="test-tiny-vit"), "cpu").model.state_dict(), path)
    return path


def test_a_replaced_file_is_decoded_again(tiny_vit, tmp_path, counted):
    root = _jpegs(tmp_path / "data")
    split = load_dataset("folder", root).train
    cache = PixelCache(tmp_path / "cache", tiny_vit.pixels[0])
    before = cache.pixels(split)
    path = Path(split.images[0])
    Image.new("RGB", (30, 30), (255, 0, 0)).save(path)  # new content, size and time
    os.utime(path, ns=(1, 1))
    fresh = PixelCache(tmp_path / "cache", tiny_vit.pixels[0])  # a new process: stat again
    after = fresh.pixels(load_dataset("folder", root).train)
    assert counted[str(path)] == 2 and fresh.decoded == 1
    assert not np.array_equal(after[0], before[0]) and np.array_equal(after[1:], before[1:])


def _fill(folder: str, preprocessing, root: str, queue) -> None:
    cache = PixelCache(folder, preprocessing, workers=2)
    queue.put(cache.fill(load_dataset("folder", root).test, progress=False))


def test_processes_filling_one_folder_at_once_decode_each_image_once(tiny_vit, tmp_path):
    root = _jpegs(tmp_path / "data")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_fill, args=(str(tmp_path / "cache"), tiny_vit.pixels[0],
                                                   str(root), queue)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert sorted(queue.get(timeout=5) for _ in workers) == [0, 0, len(CLASSES) * PER_SPLIT["test"]]


def _oracles(model, task, store: ImageStore | None):
    return [ClipOracle(model, task, layout, images=store) for layout in LAYOUTS]


def _scores(oracles) -> list[np.ndarray]:
    out = []
    for oracle in oracles:
        rng = np.random.default_rng(5)
        text = rng.normal(0, 0.02, (3, *oracle.text_shape)).astype(np.float32)
        visual = (rng.normal(0, 0.5, (3, *oracle.visual_shape)).astype(np.float32)
                  if oracle.layout.n_visual else None)
        out += [oracle.evaluate(text=text, visual=visual).losses,
                oracle.evaluate(text=text, visual=visual, subset=[0, 2, 3]).losses,
                oracle.evaluate_split("test", text=text[:1], visual=None if visual is None
                                      else visual[:1]).losses]
    return out


@pytest.mark.parametrize("budget", [0, 3000, 45_000], ids=["nothing kept", "features only",
                                                           "evicting"])
def test_results_under_a_small_budget_equal_unbounded_ones(tiny_vit, task, tmp_path, budget):
    pixels = PixelCache(tmp_path / "cache", tiny_vit.pixels[0])
    unbounded = _scores(_oracles(tiny_vit, task, ImageStore(tiny_vit, pixels, DeviceCache(1 << 30))))
    store = ImageStore(tiny_vit, pixels, DeviceCache(budget), batch=4)
    bounded = _scores(_oracles(tiny_vit, task, store))
    for a, b in zip(unbounded, bounded):
        np.testing.assert_allclose(a, b, atol=TOL)
    held = store.cache.held()
    assert sum(v for k, v in held.items() if k != "budget") <= budget
    if budget == 45_000:  # 39 kB of training and 29 kB of test patch embeddings: one at a time
        assert store.cache.evictions > 0 and held.get("patch_embeddings", 0) > 0


def test_a_test_split_shared_by_seeds_is_held_once(tiny_vit, tmp_path):
    root = _jpegs(tmp_path / "data")
    dataset = load_dataset("folder", root)
    store = ImageStore(tiny_vit, PixelCache(tmp_path / "cache", tiny_vit.pixels[0]),
                       DeviceCache(1 << 30))
    for seed in (1, 2, 3):
        oracle = ClipOracle(tiny_vit, few_shot(dataset, 2, seed), LAYOUTS[0], images=store)
        text = np.zeros((1, *oracle.text_shape), np.float32)
        oracle.evaluate_split("test", text=text)
    dim = tiny_vit.model.text_projection.shape[1]
    assert store.cache.held()["image_features"] == len(dataset.test) * dim * 4


def test_the_cache_settings_of_a_specification(tmp_path):
    toml = 'name = "c"\n[data]\ncache = "{}"\n[budget]\nlimit = 10\n[search]\nmethods = ["bbt"]\n'
    spec = parse_spec(toml.format("~/pixels") + "[resources]\ncache_gb = 0.5\n", "c.toml",
                      base_dir=tmp_path)
    assert spec.data.cache == "~/pixels"  # each node expands it to its own home
    assert spec.resources.cache_bytes == 2**29
    relative = parse_spec(toml.format("pixels"), "c.toml", base_dir=tmp_path)
    assert relative.data.cache == str(tmp_path / "pixels") and relative.resources.cache_bytes is None
    with pytest.raises(ConfigError, match="resources.cache_gb: must be > 0.0; got 0"):
        parse_spec(toml.format("x") + "[resources]\ncache_gb = 0\n", "c.toml", base_dir=tmp_path)


def test_a_cache_folder_that_cannot_be_created_is_a_clear_error(tiny_vit, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataError, match="cannot create the folder of decoded images .*; set "
                                        r"\[data\] cache or \$PROMPTSWEEP_CACHE"):
        PixelCache(tmp_path / "file" / "cache", tiny_vit.pixels[0])
