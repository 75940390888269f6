"""Tests for the embedded digits (sweep.data) and the embedded tiny CLIP (no training: a few seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sweep.data import (
    DIGIT_CLASSNAMES,
    DIGITS_TEMPLATE,
    digits_split_indices,
    few_shot,
    load_dataset,
    load_digits_task,
    load_pretraining_digits,
)
from sweep.oracle import EMBEDDED_CONFIG, EMBEDDED_WEIGHTS
from sweep.pretrain_tiny import (
    CLEAN_TEMPLATES,
    NOISY_TEMPLATES,
    ZERO_SHOT_TEST_ACCURACY,
    ZERO_SHOT_VAL_ACCURACY,
    create_tiny,
    zero_shot_accuracy,
)
from sweep.spec import EMBEDDED_MODEL

N_DIGITS = 1797
# Per-class sizes of the downstream splits (classes 0..9), fixed by the split constants.
TRAIN_PER_CLASS = [31, 32, 31, 32, 32, 32, 32, 31, 30, 31]
VAL_PER_CLASS = [13, 14, 13, 14, 14, 14, 14, 14, 13, 14]
TEST_PER_CLASS = [45, 45, 45, 46, 45, 45, 45, 45, 44, 45]
PRETRAIN_PER_CLASS = [89, 91, 88, 91, 90, 91, 90, 89, 87, 90]


# --------------------------------------------------------------------------- the data


def test_downstream_task_sizes_and_per_class_counts() -> None:
    task = load_digits_task()
    assert task.name == "digits"
    assert task.classnames == DIGIT_CLASSNAMES == (
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert task.template == DIGITS_TEMPLATE
    assert task.val is not None
    for split, expected in ((task.train, TRAIN_PER_CLASS), (task.val, VAL_PER_CLASS),
                            (task.test, TEST_PER_CLASS)):
        assert np.bincount(split.labels, minlength=10).tolist() == expected
    assert (len(task.train), len(task.val), len(task.test)) == (314, 137, 450)
    # Enough for the largest CoOp shot count (16) and its validation set (4).
    assert min(TRAIN_PER_CLASS) >= 16 and min(VAL_PER_CLASS) >= 4


def test_downstream_split_is_deterministic() -> None:
    a, b = load_digits_task(), load_digits_task()
    for split_a, split_b in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        np.testing.assert_array_equal(split_a.labels, split_b.labels)
        np.testing.assert_array_equal(np.stack(split_a.images), np.stack(split_b.images))
    # Pinned: the split is a fixed constant of the project, not a seeded draw.
    idx = digits_split_indices()
    assert idx["test"][:8].tolist() == _FIRST_TEST_INDICES
    assert idx["pretrain"][:8].tolist() == _FIRST_PRETRAIN_INDICES


_FIRST_TEST_INDICES = [3, 4, 7, 8, 9, 13, 14, 21]
_FIRST_PRETRAIN_INDICES = [0, 1, 2, 5, 10, 11, 16, 17]


def test_halves_are_disjoint_and_cover_the_digits() -> None:
    idx = digits_split_indices()
    parts = [set(idx[k].tolist()) for k in ("pretrain", "train", "val", "test")]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert parts[i].isdisjoint(parts[j])
    assert set().union(*parts) == set(range(N_DIGITS))
    assert np.bincount(load_pretraining_digits()[1], minlength=10).tolist() == PRETRAIN_PER_CLASS


def test_splits_hold_the_images_of_their_indices() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    idx = digits_split_indices()
    task = load_digits_task()
    pre_images, pre_labels = load_pretraining_digits()
    for images, labels, key in ((np.stack(task.test.images), task.test.labels, "test"),
                                (pre_images, pre_labels, "pretrain")):
        np.testing.assert_array_equal(labels, raw.target[idx[key]])
        np.testing.assert_array_equal(images, np.rint(raw.images[idx[key]] * 255 / 16))


def test_images_are_uint8_height_by_width() -> None:
    task = load_digits_task()
    pre_images, pre_labels = load_pretraining_digits()
    assert pre_images.dtype == np.uint8 and pre_images.shape == (len(pre_labels), 8, 8)
    assert pre_labels.dtype == np.int64
    for split in (task.train, task.val, task.test):
        assert all(img.dtype == np.uint8 and img.shape == (8, 8) for img in split.images)
    everything = np.concatenate([np.stack(task.test.images).ravel(), pre_images.ravel()])
    assert everything.min() == 0 and everything.max() == 255
    img = task.test.load(0)
    assert img.mode == "RGB" and img.size == (8, 8)


def test_cached_images_cannot_be_mutated_through_a_split() -> None:
    task = load_digits_task()
    with pytest.raises(ValueError):
        task.train.images[0][0, 0] = 1


def test_few_shot_and_load_dataset() -> None:
    fs = few_shot(load_digits_task(), 16, 1)
    assert np.bincount(fs.train.labels).tolist() == [16] * 10
    assert np.bincount(fs.val.labels).tolist() == [4] * 10
    assert len(fs.test) == 450
    assert load_dataset("digits").classnames == DIGIT_CLASSNAMES


# --------------------------------------------------------------------------- the embedded model


def test_pretraining_captions_leave_out_the_downstream_template() -> None:
    assert DIGITS_TEMPLATE not in CLEAN_TEMPLATES + NOISY_TEMPLATES


def test_config_is_a_tiny_vit_with_the_clip_tokenizer() -> None:
    cfg = json.loads(EMBEDDED_CONFIG.read_text())
    assert EMBEDDED_CONFIG.stem == EMBEDDED_MODEL
    assert cfg["text_cfg"]["context_length"] == 77 and cfg["text_cfg"]["vocab_size"] == 49408
    model, preprocess, tokenizer = create_tiny(weights=None)
    import open_clip

    assert isinstance(model.visual, open_clip.transformer.VisionTransformer)
    assert isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer)
    assert preprocess(load_digits_task().test.load(0)).shape == (3, 32, 32)


def test_shipped_weights_load_strictly_as_float32() -> None:
    assert EMBEDDED_WEIGHTS.is_file()
    assert EMBEDDED_WEIGHTS.stat().st_size <= 20 * 1024 * 1024
    state = torch.load(EMBEDDED_WEIGHTS, map_location="cpu", weights_only=True)
    model, _, _ = create_tiny(weights=None)
    model.load_state_dict(state, strict=True)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_zero_shot_accuracy_of_the_shipped_weights_is_the_recorded_one() -> None:
    model, preprocess, tokenizer = create_tiny()
    task = load_digits_task()
    test_acc = zero_shot_accuracy(model, preprocess, tokenizer, task.test, task.classnames,
                                  task.template)
    val_acc = zero_shot_accuracy(model, preprocess, tokenizer, task.val, task.classnames,
                                 task.template)
    assert test_acc == pytest.approx(ZERO_SHOT_TEST_ACCURACY, abs=1e-6)
    assert val_acc == pytest.approx(ZERO_SHOT_VAL_ACCURACY, abs=1e-6)
    # The benchmark needs room for prompt tuning.
    assert test_acc <= 0.75


# --------------------------------------------------------------------------- shifted digits


@pytest.mark.parametrize("name", ["digits-inverted", "digits-noise", "digits-mirror",
                                  "digits-rotated", "digits-lowcontrast"])
def test_shifted_digits_are_the_digits_task_with_fixed_new_pixels(name) -> None:
    import hashlib
    import subprocess
    import sys

    from sweep.data.shifts import load_shifted_digits

    plain, shifted = load_digits_task(), load_dataset(name)
    assert shifted.name == name and shifted.classnames == plain.classnames
    assert shifted.template == plain.template
    for part in ("train", "val", "test"):
        a, b = getattr(plain, part), getattr(shifted, part)
        assert np.array_equal(a.labels, b.labels) and len(a.images) == len(b.images)
        assert all(x.shape == y.shape and y.dtype == np.uint8 for x, y in zip(a.images, b.images))
        assert not any(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    if name == "digits-inverted":
        assert all(np.array_equal(255 - x, y)
                   for x, y in zip(plain.test.images, shifted.test.images))
    # The same pixels in another process (the noise is keyed by each image's index).
    code = (f"from sweep.data.shifts import load_shifted_digits; import hashlib; "
            f"d = load_shifted_digits({name!r}); "
            "print(hashlib.sha256(b''.join(i.tobytes() for i in d.test.images)).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = hashlib.sha256(b"".join(i.tobytes() for i in load_shifted_digits(name).test.images))
    assert out.stdout.strip() == here.hexdigest()
    assert few_shot(shifted, 16, 1).dev is not None
