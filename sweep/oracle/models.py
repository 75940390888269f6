"""Loading CLIP models: an open_clip name with a pretrained tag, a local checkpoint, a model of the
Hugging Face Hub (``hf-hub:<repo>``, its config and weights read from the local cache: the
sweep runs with ``HF_HUB_OFFLINE=1``), or the embedded tiny model.

Weights from a file are always read with ``torch.load(..., weights_only=True)``
so that a checkpoint cannot execute code. The model is kept in float32; the
oracle runs its image tower under autocast in the model's resolved
``precision`` (``resolve_precision``) and everything else in float32.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from sweep.data import Preprocessing
from sweep.errors import ModelError
from sweep.oracle.requests import EMBEDDED_CONFIG, EMBEDDED_WEIGHTS
from sweep.spec import EMBEDDED_MODEL, HF_HUB_PREFIX, ModelSpec

__all__ = ["DTYPES", "EMBEDDED_CONFIG", "EMBEDDED_WEIGHTS", "LoadedModel", "load_model",
           "pick_device", "register_embedded", "resolve_precision", "split_transform"]

#: Each precision's torch dtype.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A CLIP in eval mode on its device, with its image transform and tokenizer."""

    spec: ModelSpec
    model: torch.nn.Module
    #: open_clip's whole image transform: a PIL image -> a normalised tensor.
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    device: torch.device
    #: the image tower's precision on ``device`` ("fp32", "bf16" or "fp16"), resolved.
    precision: str = "fp32"

    @functools.cached_property
    def pixels(self) -> tuple[Preprocessing, tuple[float, ...], tuple[float, ...]]:
        """``preprocess`` cut in two: the host side up to uint8 pixels, and the mean and std
        that normalise them on the device (``split_transform``)."""
        return split_transform(self.preprocess)


def split_transform(preprocess: Any) -> tuple[Preprocessing, tuple[float, ...], tuple[float, ...]]:
    """An open_clip eval transform (resize, crop, RGB, to tensor, normalise) as its host side
    (PIL image -> uint8 pixels) and the normalisation's mean and std.

    ``to tensor`` divides uint8 by 255; done on the device with the same operations in the
    same order, the two halves give the whole transform's tensor bit for bit.

    Raises:
        ModelError: the transform is not of that shape.
    """
    from torchvision import transforms

    steps = list(getattr(preprocess, "transforms", ()))
    cut = next((i for i, t in enumerate(steps) if isinstance(t, transforms.ToTensor)), None)
    if cut is None or len(steps) != cut + 2 or not isinstance(steps[-1], transforms.Normalize):
        raise ModelError(f"the model's image transform is not resize/crop, to tensor, normalise: "
                         f"{preprocess!r}")
    host = transforms.Compose(steps[:cut])
    normalise = steps[-1]
    return (Preprocessing(host, repr(host)), tuple(map(float, normalise.mean)),
            tuple(map(float, normalise.std)))


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else CUDA when available, else CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelError(f"device {requested!r} was asked for but CUDA is not available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(requested: str | None, device: torch.device) -> str:
    """``requested``, or the device's default: fp32 on a CPU, bf16 on a GPU that supports it, else fp16.

    Raises:
        ModelError: bf16 was asked for on a GPU without it.
    """
    if device.type != "cuda":
        return requested or "fp32"
    bf16 = torch.cuda.is_bf16_supported()
    if requested == "bf16" and not bf16:
        raise ModelError(f"precision bf16 was asked for but {torch.cuda.get_device_name(device)} "
                         "does not support it; use fp16 or fp32")
    return requested or ("bf16" if bf16 else "fp16")


@contextlib.contextmanager
def _quiet_random_init_warning():
    """open_clip warns that weights are random; when we load a checkpoint next, that is untrue."""

    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    flt = _Filter()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def register_embedded() -> None:
    """Register the embedded model's architecture with open_clip (once per process)."""
    import open_clip  # deferred: importing open_clip costs seconds

    if EMBEDDED_MODEL not in open_clip.list_models():
        open_clip.add_model_config(EMBEDDED_CONFIG)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist or is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or unsafe file
        raise ModelError(
            f"checkpoint {path} cannot be read as a weights-only torch file: {_load_reason(exc)}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"checkpoint {path} does not hold a state dict of tensors")
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_reason(exc: BaseException) -> str:
    """torch.load's reason on one line, without its advice to load the file as a full pickle."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # the refusal wraps the reason in paragraphs of advice
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    return " ".join(text.split()) or type(exc).__name__


def _mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """How ``state`` differs from the model's keys and shapes, in a few words ("": it fits).

    torch's own message lists every key, hundreds for a real CLIP.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(state[k].shape)}, expected {tuple(v.shape)}"
                for k, v in expected.items() if k in state and state[k].shape != v.shape]
    return "; ".join(f"{what}: {len(keys)} (first: {keys[0]})" for what, keys in (
        ("keys missing", missing), ("unexpected keys", unexpected), ("of another shape", reshaped))
        if keys)


def load_model(spec: ModelSpec, device: str | torch.device | None = None) -> LoadedModel:
    """Build the model of ``spec`` on ``device`` (default: CUDA if available, else CPU)."""
    import open_clip  # deferred: importing open_clip costs seconds

    register_embedded()
    if spec.config:
        path = Path(spec.config)
        if not path.is_file():
            raise ModelError(f"model config {path} does not exist or is not a file")
        if path.stem != spec.name:
            raise ModelError(f"model config {path} defines {path.stem!r}, not {spec.name!r}")
        if spec.name not in open_clip.list_models():
            open_clip.add_model_config(path)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    known = open_clip.list_models()
    hub = spec.name.startswith(HF_HUB_PREFIX)
    if not hub and spec.name not in known:
        close = difflib.get_close_matches(spec.name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see open_clip.list_models()"
        raise ModelError(f"unknown model {spec.name!r}{hint}")

    checkpoint = spec.checkpoint
    if spec.name == EMBEDDED_MODEL and not spec.pretrained and not checkpoint:
        checkpoint = str(EMBEDDED_WEIGHTS)
    quiet = _quiet_random_init_warning() if checkpoint else contextlib.nullcontext()
    try:
        with quiet:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name,
                pretrained=spec.pretrained,
                # A hub model's weights come with it: open_clip only warns when they do not.
                require_pretrained=bool(spec.pretrained) or hub,
                weights_only=True,
            )
    except Exception as exc:
        where = "" if os.environ.get("HF_HUB_OFFLINE") != "1" else " (HF_HUB_OFFLINE=1: only cached weights)"
        raise ModelError(
            f"cannot build model {spec.label!r}{where}: {type(exc).__name__}: {exc}"
        ) from exc
    if checkpoint:
        state = _read_state_dict(Path(checkpoint))
        mismatch = _mismatch(model.state_dict(), state)
        if mismatch:
            raise ModelError(f"checkpoint {checkpoint} does not match architecture {spec.name!r}: "
                             f"{mismatch}")
        model.load_state_dict(state, strict=True)
    model = model.to(dev).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(
        spec=spec,
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(spec.name),
        device=dev,
        precision=resolve_precision(spec.precision, dev),
    )
