"""The images an oracle scores on, on its device: from the node's pixels, cached under a memory budget.

One ``ImageStore`` serves every oracle of a process (an actor's seeds, layouts
and settings alike). Pixels come from the node's ``PixelCache``
(``sweep.data``: each image decoded once per node) and are normalised on the
device. What does not depend on a prompt is computed once per split and kept
in a ``DeviceCache``: the image features (used without visual prompts) and the
patch embeddings (with them). Entries are keyed by the split's images, so a
test split shared by every seed is held once; the least recently used entry is
evicted when the budget is full, and an entry larger than the whole budget is
not kept: its split streams from the node's pixels in batches at every request
(exact, only slower). Pixels themselves are never held on the device: the
features or patch embeddings that replace them are no larger. Augmented views
(``sweep.oracle.augment``) differ at every request: they are never cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np
import torch

from sweep.data import PixelCache, Split
from sweep.oracle.augment import augment
from sweep.oracle.models import LoadedModel

__all__ = ["DeviceCache", "ImageStore", "default_cache_bytes"]



def default_cache_bytes(device: torch.device) -> int:
    """The caches' budget on ``device`` unless the specification gives one: 40% of a GPU's
    memory (the rest is the model and the work of a request), 2 GiB on a CPU."""
    if device.type == "cuda":
        return int(0.4 * torch.cuda.get_device_properties(device).total_memory)
    return 2 << 30


class DeviceCache:
    """Tensors on one device by key, least recently used evicted first, at most ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"a cache budget is a number of bytes >= 0; got {budget}")
        self.budget = budget
        self._entries: OrderedDict[tuple, tuple[str, torch.Tensor]] = OrderedDict()
        self.evictions = 0

    @property
    def used(self) -> int:
        return sum(t.nbytes for _, t in self._entries.values())

    def get(self, key: tuple) -> torch.Tensor | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def fits(self, nbytes: int) -> bool:
        """Whether an entry of ``nbytes`` can be kept at all (after evicting everything else)."""
        return nbytes <= self.budget

    def put(self, key: tuple, kind: str, tensor: torch.Tensor) -> bool:
        """Keep ``tensor`` under ``key`` (of ``kind``), evicting the least recently used entries
        as needed; False (and nothing kept) if it is larger than the whole budget."""
        if not self.fits(tensor.nbytes):
            return False
        self._entries.pop(key, None)
        while self._entries and self.used + tensor.nbytes > self.budget:
            self._entries.popitem(last=False)
            self.evictions += 1
        self._entries[key] = (kind, tensor)
        return True

    def held(self) -> dict[str, int]:
        """Bytes held per kind of entry, with the budget: what an actor reports."""
        out = {"budget": self.budget}
        for kind, tensor in self._entries.values():
            out[kind] = out.get(kind, 0) + tensor.nbytes
        return out


class ImageStore:
    """A process's images on its device.

    Args:
        model: the loaded CLIP (its device, image transform and precision).
        pixels: the node's decoded pixels for the model's preprocessing.
        cache: where prompt-free results are kept, shared by every oracle of the process.
        batch: images per batch when pixels stream from the node's cache.
    """

    def __init__(self, model: LoadedModel, pixels: PixelCache, cache: DeviceCache,
                 batch: int = 256) -> None:
        self.model = model
        self.pixels = pixels
        self.cache = cache
        self.batch = batch
        _, mean, std = model.pixels
        self._mean = torch.tensor(mean, dtype=torch.float32, device=model.device)[:, None, None]
        self._std = torch.tensor(std, dtype=torch.float32, device=model.device)[:, None, None]

    def normalised(self, pixels: np.ndarray, views: np.ndarray | None = None) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> the model's input (n, 3, H, W): what its transform gives, exactly;
        with ``views`` (a row per image, ``sweep.oracle.augment``), of the pixels' views."""
        x = torch.from_numpy(pixels).to(self.model.device).permute(0, 3, 1, 2).contiguous()
        x = x.float().div(255)
        if views is not None:  # on pixels in [0, 1], as the releases' transforms see them
            x = augment(x, views)
        return x.sub(self._mean).div(self._std)

    def batches(self, split: Split, indices: np.ndarray | None = None,
                views: np.ndarray | None = None) -> Iterator[torch.Tensor]:
        """The model's inputs for ``split``'s images ``indices`` (default: all), in batches;
        with ``views``, their augmented views."""
        start = 0
        for pixels in self.pixels.batches(split, indices, self.batch):
            yield self.normalised(pixels, None if views is None else
                                  views[start:start + len(pixels)])
            start += len(pixels)

    def _cached(self, kind: str, split: Split, nbytes: int, compute: Callable[[], torch.Tensor],
                precision: str) -> torch.Tensor | None:
        # Oracles of one process may run the image tower in different precisions (a method's
        # own): their tensors are kept apart.
        key = (kind, precision, self.pixels.identity(split))
        found = self.cache.get(key)
        if found is not None or not self.cache.fits(nbytes):
            return found
        value = compute()
        self.cache.put(key, kind, value)
        return value

    def features(self, encode: Callable[[torch.Tensor], torch.Tensor], split: Split,
                 dim: int, precision: str) -> torch.Tensor:
        """Prompt-free image features of ``split`` (m, D) fp32, from ``encode`` (a batch of model
        inputs -> features, in the image tower's ``precision``); kept when they fit the
        budget, computed again when they do not."""
        def compute() -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([encode(b).float() for b in self.batches(split)])

        nbytes = len(split) * dim * 4
        found = self._cached("image_features", split, nbytes, compute, precision)
        return compute() if found is None else found

    def set_features(self, split: Split, features: torch.Tensor, precision: str) -> None:
        """Take ``features`` (m, D) as ``split``'s image features in ``precision`` instead of
        encoding its images (a benchmark that never encodes them), while the cache keeps them."""
        if not self.cache.put(("image_features", precision, self.pixels.identity(split)),
                              "image_features", features.float()):
            raise ValueError(f"{features.nbytes} bytes of features exceed the cache's budget of "
                             f"{self.cache.budget}")

    def patches(self, embed: Callable[[torch.Tensor], torch.Tensor], split: Split,
                per_image: int, precision: str) -> torch.Tensor | None:
        """Patch embeddings of all of ``split`` from ``embed`` (model inputs -> patch embeddings),
        if they fit the budget (``per_image`` bytes each); None: stream them (``batches``)."""
        def compute() -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([embed(b) for b in self.batches(split)])

        return self._cached("patch_embeddings", split, len(split) * per_image, compute,
                            precision)
