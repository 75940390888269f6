"""The 11 CoOp benchmarks, read from disk in CoOp's layout.

CoOp layout (KaiyangZhou/CoOp, DATASETS.md and datasets/*.py): every benchmark
is a folder under one data root. Nine of them come with a fixed split file
``split_zhou_<Name>.json``: one JSON object with keys ``train``, ``val`` and
``test``, each a list of ``[image path, integer label, class name]`` where the
path is relative to the data set's image folder. FGVCAircraft is read from the
data set's own ``images_variant_{train,val,test}.txt`` files, and ImageNet from
its ``images/{train,val}/<wnid>/`` folders with ``classnames.txt``; CoOp
evaluates ImageNet on the official validation set, so here it is the test
split and ImageNet has no validation split (``few_shot`` draws validation
shots from the rest of the train split).

Images are not opened here: a split holds file paths, read by ``Split.load``.
Every problem with a root (missing folder or file, malformed split file,
listed image that does not exist, empty split) raises ``DataError`` naming the
path and what was expected there.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from sweep.data.folders import (
    display_name,
    folders_to_split,
    read_class_dirs,
    require_root,
    require_same_classes,
)
from sweep.data.splits import Dataset, Split
from sweep.errors import ConfigError, DataError

__all__ = ["COOP_DATASETS", "CoopLayout", "load_coop"]

_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CoopLayout:
    """Where one CoOp benchmark lives under the data root.

    Attributes:
        folder: The data set's folder under the root.
        image_dir: The folder, inside ``folder``, that image paths are relative
            to; ``""`` means ``folder`` itself (StanfordCars).
        kind: ``"split"`` (a split_zhou JSON file), ``"fgvc"`` (FGVCAircraft's
            txt files) or ``"imagenet"`` (class folders and classnames.txt).
        split_file: The split file's name inside ``folder`` (kind ``"split"``).
        template: CoOp's hand-written zero-shot template (CUSTOM_TEMPLATES in
            trainers/zsclip.py).
    """

    folder: str
    image_dir: str
    kind: Literal["split", "fgvc", "imagenet"]
    split_file: str | None
    template: str


#: The 11 CoOp benchmarks by name. Folder, image folder and split file names
#: are those of CoOp's datasets/*.py; templates are CoOp's CUSTOM_TEMPLATES
#: (keyed there by CoOp's class names, e.g. OxfordFlowers, DescribableTextures).
COOP_DATASETS: Mapping[str, CoopLayout] = MappingProxyType({
    "ImageNet": CoopLayout("imagenet", "images", "imagenet", None, "a photo of a {}."),
    "Caltech101": CoopLayout(
        "caltech-101", "101_ObjectCategories", "split", "split_zhou_Caltech101.json",
        "a photo of a {}."),
    "OxfordPets": CoopLayout(
        "oxford_pets", "images", "split", "split_zhou_OxfordPets.json",
        "a photo of a {}, a type of pet."),
    # CoOp's split paths for StanfordCars start with cars_train/ or cars_test/,
    # relative to the data set folder itself.
    "StanfordCars": CoopLayout(
        "stanford_cars", "", "split", "split_zhou_StanfordCars.json", "a photo of a {}."),
    "Flowers102": CoopLayout(
        "oxford_flowers", "jpg", "split", "split_zhou_OxfordFlowers.json",
        "a photo of a {}, a type of flower."),
    "Food101": CoopLayout(
        "food-101", "images", "split", "split_zhou_Food101.json",
        "a photo of {}, a type of food."),
    "FGVCAircraft": CoopLayout(
        "fgvc_aircraft", "images", "fgvc", None, "a photo of a {}, a type of aircraft."),
    "SUN397": CoopLayout("sun397", "SUN397", "split", "split_zhou_SUN397.json", "a photo of a {}."),
    "DTD": CoopLayout(
        "dtd", "images", "split", "split_zhou_DescribableTextures.json", "{} texture."),
    "EuroSAT": CoopLayout(
        "eurosat", "2750", "split", "split_zhou_EuroSAT.json", "a centered satellite photo of {}."),
    "UCF101": CoopLayout(
        "ucf101", "UCF-101-midframes", "split", "split_zhou_UCF101.json",
        "a photo of a person doing {}."),
})


def load_coop(name: str, root: Path) -> Dataset:
    """Load one of the 11 CoOp benchmarks from ``root`` in CoOp's layout.

    Args:
        name: A key of ``COOP_DATASETS`` (e.g. ``"OxfordPets"``).
        root: The data root holding the data set folders (CoOp's ``$DATA``).

    Returns:
        The data set with CoOp's fixed splits, class names (underscores turned
        into spaces, as CoOp's trainers do before building prompts) and CoOp's
        zero-shot template. ImageNet's ``val`` is None.

    Raises:
        ConfigError: ``name`` is not a CoOp benchmark.
        DataError: The root, the data set folder, a split or class-name file,
            or a listed image is missing or malformed.
    """
    if name not in COOP_DATASETS:
        raise ConfigError(
            f"unknown CoOp data set {name!r}; valid names: {', '.join(sorted(COOP_DATASETS))}"
        )
    layout = COOP_DATASETS[name]
    root = Path(root).expanduser()
    require_root(root, f"a directory holding the CoOp data set folders (e.g. {layout.folder}/)")
    folder = root / layout.folder
    if not folder.is_dir():
        raise DataError(
            f"{folder} does not exist; expected the {name} folder of CoOp's layout "
            f"({_expected_contents(layout)}; see KaiyangZhou/CoOp DATASETS.md)"
        )
    image_dir = folder / layout.image_dir if layout.image_dir else folder
    if not image_dir.is_dir():
        raise DataError(f"{image_dir} does not exist; expected the {name} image folder")

    if layout.kind == "imagenet":
        return _load_imagenet(name, folder, image_dir, layout.template)
    if layout.kind == "fgvc":
        classnames, splits = _read_fgvc(folder, image_dir)
    else:
        classnames, splits = _read_split_file(folder / str(layout.split_file), image_dir)
    return Dataset(
        name=name,
        classnames=tuple(display_name(c) for c in classnames),
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        template=layout.template,
    )


def _expected_contents(layout: CoopLayout) -> str:
    if layout.kind == "imagenet":
        return "images/train/<wnid>/, images/val/<wnid>/ and classnames.txt"
    if layout.kind == "fgvc":
        return "images/ and images_variant_{train,val,test}.txt"
    # StanfordCars' split paths start with cars_train/ or cars_test/.
    images = f"{layout.image_dir}/" if layout.image_dir else "cars_train/, cars_test/"
    return f"{images} and {layout.split_file}"


def _check_images_exist(paths: Sequence[str], source: Path, image_dir: Path) -> None:
    """Raise DataError if any listed image file is missing.

    Every path is checked, at the cost of one directory listing per distinct
    parent folder (about a hundred for Food101 or UCF101, 397 for SUN397)
    instead of one stat per image, which matters on network file systems.
    Names absent from a listing are confirmed with os.path.exists, so
    case-insensitive file systems do not give false alarms.
    """
    by_dir: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        parent, file = os.path.split(path)
        by_dir[parent].append(file)
    missing: list[str] = []
    for parent, files in by_dir.items():
        try:
            present = set(os.listdir(parent))
        except OSError:
            present = set()
        missing.extend(
            os.path.join(parent, f) for f in files
            if f not in present and not os.path.exists(os.path.join(parent, f))
        )
    if missing:
        raise DataError(
            f"{source}: {len(missing)} of {len(paths)} listed images do not exist, first "
            f"{missing[0]}; expected every listed image under {image_dir}"
        )


def _read_split_file(path: Path, image_dir: Path) -> tuple[list[str], dict[str, Split]]:
    """Read a CoOp ``split_zhou_*.json`` file into class names and three splits."""
    expected = ("one JSON object with keys train, val, test, each a list of "
                "[image path, integer label, class name]")
    if not path.is_file():
        raise DataError(f"split file {path} does not exist; expected {expected}")
    try:
        with open(path, encoding="utf-8") as f:
            content: Any = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"split file {path} cannot be read as JSON ({exc}); "
                        f"expected {expected}") from exc
    if not isinstance(content, dict):
        raise DataError(f"split file {path} holds a {type(content).__name__}; expected {expected}")
    missing_keys = [k for k in _SPLITS if k not in content]
    if missing_keys:
        raise DataError(f"split file {path} lacks key(s) {', '.join(missing_keys)}; "
                        f"expected {expected}")

    names: dict[int, str] = {}
    where: dict[int, str] = {}  # label -> first entry naming it, for error messages
    entries: dict[str, tuple[list[str], list[int]]] = {}
    for split in _SPLITS:
        items = content[split]
        if not isinstance(items, list):
            raise DataError(f"split file {path}: {split!r} is a {type(items).__name__}; "
                            f"expected a list of [image path, integer label, class name]")
        if not items:
            raise DataError(f"split file {path}: the {split} split is empty; "
                            f"expected at least one [image path, integer label, class name]")
        images, labels = [], []
        for i, item in enumerate(items):
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                    and item[0] and type(item[1]) is int and item[1] >= 0
                    and isinstance(item[2], str) and item[2]):
                raise DataError(f"split file {path}: {split}[{i}] is {item!r}; expected "
                                f"[image path, integer label >= 0, class name]")
            rel, label, classname = item
            if os.path.isabs(rel):
                raise DataError(f"split file {path}: {split}[{i}] has the absolute path {rel!r}; "
                                f"expected a path relative to {image_dir}")
            known = names.setdefault(label, classname)
            where.setdefault(label, f"{split}[{i}]")
            if known != classname:
                raise DataError(
                    f"split file {path}: label {label} is {classname!r} at {split}[{i}] but "
                    f"{known!r} at {where[label]}; expected one class name per label"
                )
            images.append(os.path.join(image_dir, rel))
            labels.append(label)
        entries[split] = (images, labels)

    classnames = _dense_classnames(names, path)
    _check_images_exist([p for images, _ in entries.values() for p in images], path, image_dir)
    return classnames, {s: Split(images, np.asarray(labels, dtype=np.int64))
                        for s, (images, labels) in entries.items()}


def _dense_classnames(names: Mapping[int, str], source: Path) -> list[str]:
    # Labels index the class-name tuple, so they must be exactly 0..C-1.
    n = max(names) + 1
    absent = [label for label in range(n) if label not in names]
    if absent:
        raise DataError(f"{source}: label(s) {absent[:10]} never occur although labels go up to "
                        f"{n - 1}; expected the labels 0..C-1 of C classes")
    return [names[label] for label in range(n)]


def _read_fgvc(folder: Path, image_dir: Path) -> tuple[list[str], dict[str, Split]]:
    """Read FGVCAircraft: ``images_variant_<split>.txt`` lines ``<image id> <variant>``.

    Labels follow the order of ``variants.txt`` as in CoOp's fgvc_aircraft.py
    (it ships with the data set); without that file, the sorted variant names.
    """
    records: dict[str, list[tuple[str, str]]] = {}
    for split in _SPLITS:
        path = folder / f"images_variant_{split}.txt"
        if not path.is_file():
            raise DataError(f"{path} does not exist; expected FGVCAircraft's {split} list "
                            f"(lines '<image id> <variant name>')")
        rows = []
        for lineno, line in enumerate(_read_lines(path), start=1):
            if not line:
                continue
            image_id, _, variant = line.partition(" ")
            if not variant.strip():
                raise DataError(f"{path}:{lineno}: {line!r}; expected '<image id> <variant name>'")
            rows.append((image_id, variant.strip()))
        if not rows:
            raise DataError(f"{path} lists no images; expected lines '<image id> <variant name>'")
        records[split] = rows

    variants_file = folder / "variants.txt"
    if variants_file.is_file():
        classnames = [line for line in _read_lines(variants_file) if line]
        duplicates = sorted({c for c in classnames if classnames.count(c) > 1})
        if duplicates:
            raise DataError(f"{variants_file} lists {duplicates[0]!r} more than once; "
                            f"expected one variant name per line")
    else:
        classnames = sorted({variant for rows in records.values() for _, variant in rows})
    label_of = {c: i for i, c in enumerate(classnames)}

    splits = {}
    for split, rows in records.items():
        path = folder / f"images_variant_{split}.txt"
        unknown = [v for _, v in rows if v not in label_of]
        if unknown:
            raise DataError(f"{path}: variant {unknown[0]!r} is not in {variants_file}; "
                            f"expected one of the variants listed there")
        images = [os.path.join(image_dir, f"{image_id}.jpg") for image_id, _ in rows]
        _check_images_exist(images, path, image_dir)
        splits[split] = Split(images, np.array([label_of[v] for _, v in rows], dtype=np.int64))
    return classnames, splits


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _load_imagenet(name: str, folder: Path, image_dir: Path, template: str) -> Dataset:
    """ImageNet as in CoOp's imagenet.py: labels by sorted wnid, official val set as test."""
    names_file = folder / "classnames.txt"
    if not names_file.is_file():
        raise DataError(f"{names_file} does not exist; expected lines '<wnid> <class name>'")
    wnid_names: dict[str, str] = {}
    for lineno, line in enumerate(_read_lines(names_file), start=1):
        if not line:
            continue
        wnid, _, classname = line.partition(" ")
        if not classname.strip():
            raise DataError(f"{names_file}:{lineno}: {line!r}; expected '<wnid> <class name>'")
        wnid_names[wnid] = classname.strip()

    train = read_class_dirs(image_dir / "train", "train")
    wnids = sorted(train)
    unnamed = [w for w in wnids if w not in wnid_names]
    if unnamed:
        raise DataError(f"{names_file} has no class name for {unnamed[0]} (a folder of "
                        f"{image_dir / 'train'}); expected a line '<wnid> <class name>' per folder")
    test = read_class_dirs(image_dir / "val", "val")
    require_same_classes(image_dir / "val", test, wnids, image_dir / "train")
    return Dataset(
        name=name,
        classnames=tuple(display_name(wnid_names[w]) for w in wnids),
        train=folders_to_split(train, wnids),
        # CoOp tests on the official val set and keeps no separate validation
        # split; few_shot then draws validation from train, disjoint from the shots.
        val=None,
        test=folders_to_split(test, wnids),
        template=template,
    )
