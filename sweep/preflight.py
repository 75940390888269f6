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
"""

from __future__ import annotations

import numpy as np

from sweep.data import few_shot, load_dataset
from sweep.models import load_model
from sweep.spec import SweepSpec

__all__ = ["check_inputs"]


def check_inputs(spec: SweepSpec) -> int:
    """Read what the sweep of ``spec`` needs; returns the number of image files decoded.

    Raises:
        DataError: a data root is missing, empty or not in its layout, a class has
            too few images for a draw, or an image of a draw cannot be decoded.
        ModelError: the model cannot be built or its weights cannot be loaded.
    """
    decoded = 0
    for name in spec.data.datasets:
        dataset = load_dataset(name, spec.data.root)
        seen: set[str] = set()
        for shots in spec.data.shots:
            for seed in spec.data.seeds:
                task = few_shot(dataset, shots, seed)
                for split in (task.train, task.val):
                    for i, ref in enumerate(split.images):
                        # Images held in memory (the embedded digits) are decoded already.
                        if isinstance(ref, np.ndarray) or str(ref) in seen:
                            continue
                        seen.add(str(ref))
                        split.load(i)
        decoded += len(seen)
    load_model(spec.model.to_model_spec(), "cpu")
    return decoded
