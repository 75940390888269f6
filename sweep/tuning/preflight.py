"""Checks before any work: read the data and the model a sweep needs, once, in the driver.

The specification checks names, types, ranges and that paths exist
(``sweep.spec``); what only reading the files tells is checked here, before
Ray starts or anything is written: that the model loads with its weights
(``load_model``: a corrupt checkpoint, one of another architecture, or
pretrained weights missing from the cache), that every data root is in its
layout (``load_dataset``), that every few-shot draw of the sweep can be made
(``few_shot``), and that every training and validation image of those draws
can be decoded. Decoding them fills the node's pixel cache
(``sweep.data.PixelCache``), in parallel, so the actors on this node never
decode them again. Each problem raises the loaders' own ``DataError`` or
``ModelError``, naming the file.

Test images are not decoded here: a test split can be the size of ImageNet's
validation set. The first actor that evaluates on one decodes it into its
node's cache; an image that cannot be read fails the trials that evaluate on
it, with a ``DataError`` naming the file (a ``failed`` row). Nor is what
ships with the package read (the digits, the embedded model's weights): that
would only add seconds (sklearn, open_clip) to every sweep's start.
"""

from __future__ import annotations

from sweep.data import DATASETS, PixelCache, few_shot, load_dataset
from sweep.spec import EMBEDDED_MODEL, SweepSpec

__all__ = ["check_inputs"]


def check_inputs(spec: SweepSpec, progress: bool = True) -> None:
    """Read what the sweep of ``spec`` needs, as its trials will; decode the draws' images.

    Raises:
        DataError: a data root is missing, empty or not in its layout, a class has
            too few images for a draw, or an image of a draw cannot be decoded.
        ModelError: the model cannot be built or its weights cannot be loaded.
    """
    from sweep.oracle import load_model  # torch: the driver's, not a trial's

    on_disk = [name for name in spec.data.datasets if DATASETS[name].needs_root]
    model = spec.model
    if not on_disk and model.name == EMBEDDED_MODEL and model.checkpoint is None:
        return  # everything ships with the package
    loaded = load_model(model, "cpu")
    if not on_disk:
        return
    pixels = PixelCache(spec.data.cache, loaded.pixels[0])
    for name in on_disk:
        dataset = load_dataset(name, spec.data.root)
        for shots in spec.all_shots:
            for seed in spec.data.seeds:
                task = few_shot(dataset, shots, seed)
                for split in (task.train, task.val):
                    pixels.fill(split, progress)  # draws of several seeds share images
