"""Checks before any work: read the data and the model a sweep needs, once, in the driver.

The specification checks names, types, ranges and that paths exist
(``sweep.spec``); what only reading the files tells is checked here, before
Ray starts or anything is written: that every data root is in its layout
(``load_dataset``), that every few-shot draw of the sweep can be made
(``few_shot``), that every training and validation image of those draws can
be decoded (``Split.load``), and that the model loads with its weights
(``load_model``: a corrupt checkpoint, one of another architecture, or
pretrained weights missing from the cache). Each problem raises the loaders'
own ``DataError`` or ``ModelError``, naming the file.

Test images are not opened here: a test split can be the size of ImageNet's
validation set. A test image that cannot be read fails the trials that
evaluate on it, with a ``DataError`` naming the file (a ``failed`` row).
Nor is what ships with the package (the digits, the embedded model's
weights): reading it would only add seconds (sklearn, open_clip) to every
sweep's start.
"""

from __future__ import annotations

from sweep.data import DATASETS, few_shot, load_dataset
from sweep.oracle import load_model
from sweep.spec import EMBEDDED_MODEL, SweepSpec

__all__ = ["check_inputs"]


def check_inputs(spec: SweepSpec) -> None:
    """Read what the sweep of ``spec`` needs, as its trials will.

    Raises:
        DataError: a data root is missing, empty or not in its layout, a class has
            too few images for a draw, or an image of a draw cannot be decoded.
        ModelError: the model cannot be built or its weights cannot be loaded.
    """
    for name in spec.data.datasets:
        if not DATASETS[name].needs_root:  # ships with the package
            continue
        dataset = load_dataset(name, spec.data.root)
        seen: set[str] = set()
        for shots in spec.data.shots:
            for seed in spec.data.seeds:
                task = few_shot(dataset, shots, seed)
                for split in (task.train, task.val):
                    for i, path in enumerate(map(str, split.images)):
                        if path not in seen:  # draws of several seeds share images
                            seen.add(path)
                            split.load(i)
    model = spec.model
    if model.name != EMBEDDED_MODEL or model.checkpoint is not None:
        load_model(model, "cpu")
