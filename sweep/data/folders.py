"""Image data sets in a plain class-per-folder layout, and the folder readers CoOp's loaders share.

Layout: ``root/train/<class>/<image>``, an optional ``root/val/<class>/<image>``
and ``root/test/<class>/<image>``. Images are not opened here: a split holds
file paths, read by ``Split.load``. Every problem with a root (missing folder,
a class folder without images, class folders that differ between splits)
raises ``DataError`` naming the path and what was expected there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sweep.data.splits import Dataset, Split
from sweep.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "display_name",
    "folders_to_split",
    "load_class_folders",
    "read_class_dirs",
    "require_root",
    "require_same_classes",
]

#: File suffixes (lower case) taken as images in folder layouts.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


def load_class_folders(root: Path, name: str = "folder") -> Dataset:
    """Load a class-per-folder data set: ``root/{train,val,test}/<class>/<image>``.

    ``val`` is optional. Classes are the sorted folder names of ``train`` and
    label ``i`` is the ``i``-th of them; ``val`` and ``test`` must have the
    same class folders. Files whose suffix is in ``IMAGE_EXTENSIONS`` are
    images; hidden files and other files are ignored.

    Args:
        root: The data root.
        name: The data set's name in results.

    Returns:
        The data set; class names are the folder names with underscores turned
        into spaces, and ``val`` is None when ``root/val`` does not exist.

    Raises:
        DataError: The root, ``train`` or ``test`` is missing, a split has no
            class folders, a class folder has no images, or the class folders
            of ``val``/``test`` differ from those of ``train``.
    """
    root = Path(root).expanduser()
    require_root(root, "a directory with train/, test/ and optionally val/ class folders")
    folders = read_class_dirs(root / "train", "train")
    classes = sorted(folders)
    splits: dict[str, Split | None] = {"train": folders_to_split(folders, classes)}
    for split in ("val", "test"):
        split_dir = root / split
        if split == "val" and not split_dir.exists():
            splits["val"] = None
            continue
        other = read_class_dirs(split_dir, split)
        require_same_classes(split_dir, other, classes, root / "train")
        splits[split] = folders_to_split(other, classes)
    return Dataset(
        name=name,
        classnames=tuple(display_name(c) for c in classes),
        train=splits["train"],  # type: ignore[arg-type]
        val=splits["val"],
        test=splits["test"],  # type: ignore[arg-type]
    )


def display_name(classname: str) -> str:
    """The class name shown in prompts: underscores become spaces."""
    # CoOp's trainers apply the same replacement before building every prompt
    # (e.g. "american_bulldog", "Apply_Eye_Makeup").
    return classname.replace("_", " ")


def require_root(root: Path, expected: str) -> None:
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"data root {root} {state}; expected {expected}")


def read_class_dirs(split_dir: Path, split: str) -> dict[str, list[str]]:
    """Map each class folder of ``split_dir`` to its image files, sorted by name.

    Sorting makes the order (and so every seeded few-shot draw) independent of
    the file system's listing order.
    """
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} does not exist; expected the {split} split as "
                        f"{split_dir}/<class>/<image> folders")
    folders: dict[str, list[str]] = {}
    with os.scandir(split_dir) as entries:
        class_entries = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    for entry in class_entries:
        with os.scandir(entry.path) as files:
            images = sorted(
                f.path for f in files
                if not f.name.startswith(".") and os.path.splitext(f.name)[1].lower()
                in IMAGE_EXTENSIONS and f.is_file()
            )
        if not images:
            raise DataError(f"class folder {entry.path} holds no images; expected image files "
                            f"with one of the suffixes {', '.join(sorted(IMAGE_EXTENSIONS))}")
        folders[entry.name] = images
    if not folders:
        raise DataError(f"{split_dir} has no class folders; expected the {split} split as "
                        f"{split_dir}/<class>/<image> folders")
    return folders


def require_same_classes(split_dir: Path, folders: Mapping[str, list[str]],
                          classes: Sequence[str], train_dir: Path) -> None:
    extra = sorted(set(folders) - set(classes))
    absent = sorted(set(classes) - set(folders))
    if extra or absent:
        detail = "; ".join(
            part for part in (f"extra {extra[:5]}" if extra else "",
                              f"missing {absent[:5]}" if absent else "") if part
        )
        raise DataError(f"{split_dir} has different class folders than {train_dir} ({detail}); "
                        f"expected the same class set")


def folders_to_split(folders: Mapping[str, list[str]], classes: Sequence[str]) -> Split:
    images: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        images.extend(folders[cls])
        labels.extend([label] * len(folders[cls]))
    return Split(images, np.asarray(labels, dtype=np.int64))
