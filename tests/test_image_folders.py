"""Tests for sweep.data's folder loaders: CoOp layouts and class folders, on tiny generated roots."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sweep.data import COOP_DATASETS, Dataset, few_shot, load_class_folders, load_coop, load_dataset
from sweep.errors import ConfigError, DataError

# --------------------------------------------------------------------------- data roots

PETS = ("abyssinian", "american_bulldog", "beagle")
PETS_SIZES = {"train": 6, "val": 4, "test": 2}  # per class
WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark"}
IMAGENET_SIZES = {"train": 8, "val": 2}
# Deliberately not sorted: labels must follow variants.txt, as in CoOp.
VARIANTS = ("Cessna 172", "707-320", "A320")
FGVC_SIZES = {"train": 5, "val": 4, "test": 2}
FOLDER_CLASSES = ("cat", "dog", "sea_lion")
FOLDER_SIZES = {"train": 8, "val": 4, "test": 3}  # train: 4 shots + 4 val


def _write_image(path: Path, seed: int) -> None:
    """A tiny real image; formats and modes vary so that loading must convert to RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = tuple(int(v) for v in np.random.default_rng(seed).integers(0, 256, 3))
    if seed % 3 == 0:
        Image.new("L", (6, 5), color[0]).save(path, format="PNG")
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        Image.new("RGB", (6, 5), color).save(path, format="JPEG")
    else:
        Image.new("RGB", (6, 5), color).save(path, format="PNG")


def _make_pets(root: Path) -> dict[str, list[list]]:
    """oxford_pets/ in CoOp's layout; returns the split file's content."""
    folder = root / "oxford_pets"
    content: dict[str, list[list]] = {}
    n = 0
    for split, size in PETS_SIZES.items():
        entries = []
        # Interleave the classes so that labels are read per entry, not per block.
        for i in range(size):
            for label, cls in enumerate(PETS):
                rel = f"{cls.capitalize()}_{split}_{i}.jpg"
                _write_image(folder / "images" / rel, n)
                n += 1
                entries.append([rel, label, cls])
        content[split] = entries
    _write_split(folder / "split_zhou_OxfordPets.json", content)
    return content


def _write_split(path: Path, content: object) -> None:
    path.write_text(json.dumps(content), encoding="utf-8")


def _make_imagenet(root: Path) -> None:
    folder = root / "imagenet"
    n = 0
    for split, size in IMAGENET_SIZES.items():
        for wnid in WNIDS:
            for i in range(size):
                _write_image(folder / "images" / split / wnid / f"{wnid}_{i}.JPEG", n)
                n += 1
    # classnames.txt covers all 1000 classes in reality; an extra line is harmless.
    lines = [f"{w} {c}" for w, c in WNIDS.items()] + ["n99999999 unused class", ""]
    (folder / "classnames.txt").write_text("\n".join(lines), encoding="utf-8")


def _make_fgvc(root: Path, with_variants: bool = True) -> dict[str, list[tuple[str, str]]]:
    folder = root / "fgvc_aircraft"
    rows: dict[str, list[tuple[str, str]]] = {}
    n = 0
    for split, size in FGVC_SIZES.items():
        rows[split] = []
        for variant in VARIANTS:
            for _ in range(size):
                image_id = f"{1000000 + n:07d}"
                _write_image(folder / "images" / f"{image_id}.jpg", n)
                n += 1
                rows[split].append((image_id, variant))
        text = "\n".join(f"{i} {v}" for i, v in rows[split]) + "\n"
        (folder / f"images_variant_{split}.txt").write_text(text, encoding="utf-8")
    if with_variants:
        (folder / "variants.txt").write_text("\n".join(VARIANTS) + "\n", encoding="utf-8")
    return rows


def _make_folders(root: Path, with_val: bool = True) -> None:
    n = 0
    for split, size in FOLDER_SIZES.items():
        if split == "val" and not with_val:
            continue
        for cls in FOLDER_CLASSES:
            for i in range(size):
                suffix = ".png" if i % 2 else ".JPG"
                _write_image(root / split / cls / f"img{i}{suffix}", n)
                n += 1
    # Files that are not images, and hidden entries, are ignored.
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"")
    (root / "train" / ".cache").mkdir()


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only CoOp root shared by the tests that do not modify it."""
    root = tmp_path_factory.mktemp("coop")
    _make_pets(root)
    _make_imagenet(root)
    _make_fgvc(root)
    return root


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folders")
    _make_folders(root)
    return root


@pytest.fixture(scope="module")
def folder_root_no_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folders_noval")
    _make_folders(root, with_val=False)
    return root


# --------------------------------------------------------------------------- reading back


def test_registry_lists_the_11_coop_benchmarks() -> None:
    assert set(COOP_DATASETS) == {
        "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "Flowers102", "Food101",
        "FGVCAircraft", "SUN397", "DTD", "EuroSAT", "UCF101",
    }
    assert COOP_DATASETS["Caltech101"].folder == "caltech-101"
    assert COOP_DATASETS["Caltech101"].image_dir == "101_ObjectCategories"
    assert COOP_DATASETS["Flowers102"].split_file == "split_zhou_OxfordFlowers.json"
    assert COOP_DATASETS["DTD"].split_file == "split_zhou_DescribableTextures.json"
    assert COOP_DATASETS["StanfordCars"].image_dir == ""
    for layout in COOP_DATASETS.values():
        assert layout.template.count("{}") == 1
        assert (layout.split_file is None) == (layout.kind != "split")


def test_split_file_reads_back_exactly(coop_root: Path) -> None:
    content = json.loads((coop_root / "oxford_pets" / "split_zhou_OxfordPets.json").read_text())
    ds = load_coop("OxfordPets", coop_root)
    assert ds.name == "OxfordPets"
    # Underscores become spaces, as CoOp's trainers do before building prompts.
    assert ds.classnames == ("abyssinian", "american bulldog", "beagle")
    assert ds.template == "a photo of a {}, a type of pet."
    image_dir = coop_root / "oxford_pets" / "images"
    for split in ("train", "val", "test"):
        got = getattr(ds, split)
        assert len(got) == PETS_SIZES[split] * len(PETS)
        assert got.labels.dtype == np.int64
        assert got.labels.tolist() == [label for _, label, _ in content[split]]
        assert [Path(p) for p in got.images] == [image_dir / rel for rel, _, _ in content[split]]


def test_imagenet_folders_and_val_as_test(coop_root: Path) -> None:
    ds = load_coop("ImageNet", coop_root)
    assert ds.classnames == ("tench", "goldfish", "great white shark")  # sorted by wnid
    assert ds.val is None
    assert ds.template == "a photo of a {}."
    images = coop_root / "imagenet" / "images"
    for split, got in (("train", ds.train), ("val", ds.test)):
        size = IMAGENET_SIZES[split]
        assert got.labels.tolist() == [c for c in range(3) for _ in range(size)]
        expected = [images / split / w / f"{w}_{i}.JPEG"
                    for w in sorted(WNIDS) for i in range(size)]
        assert [Path(p) for p in got.images] == expected


@pytest.mark.parametrize("with_variants", [True, False])
def test_fgvc_txt_layout(tmp_path: Path, with_variants: bool) -> None:
    rows = _make_fgvc(tmp_path, with_variants)
    ds = load_coop("FGVCAircraft", tmp_path)
    # variants.txt order when present (CoOp), sorted variant names otherwise.
    names = list(VARIANTS) if with_variants else sorted(VARIANTS)
    assert ds.classnames == tuple(names)
    assert ds.template == "a photo of a {}, a type of aircraft."
    for split in ("train", "val", "test"):
        got = getattr(ds, split)
        assert got.labels.tolist() == [names.index(v) for _, v in rows[split]]
        assert [Path(p).name for p in got.images] == [f"{i}.jpg" for i, _ in rows[split]]


@pytest.mark.parametrize("with_val", [True, False])
def test_class_folders(folder_root: Path, folder_root_no_val: Path, with_val: bool) -> None:
    root = folder_root if with_val else folder_root_no_val
    ds = load_class_folders(root)
    assert ds.classnames == ("cat", "dog", "sea lion")
    assert ds.template == "a photo of a {}."
    assert (ds.val is None) is not with_val
    splits = ("train", "val", "test") if with_val else ("train", "test")
    for split in splits:
        got = getattr(ds, split)
        size = FOLDER_SIZES[split]
        assert got.labels.tolist() == [c for c in range(3) for _ in range(size)]
        assert all(Path(p).parent == root / split / FOLDER_CLASSES[label]
                   for p, label in zip(got.images, got.labels))
        assert len({Path(p).name for p in got.images}) == size  # only the images


def test_load_returns_rgb(coop_root: Path, folder_root: Path) -> None:
    for ds in (load_coop("OxfordPets", coop_root), load_class_folders(folder_root)):
        for i in range(3):  # includes an L-mode PNG and a JPEG
            img = ds.train.load(i)
            assert img.mode == "RGB"
            assert img.size == (6, 5)


# --------------------------------------------------------------------------- few-shot


def _load(kind: str, coop_root: Path, folder_root: Path, folder_root_no_val: Path) -> Dataset:
    if kind == "folder":
        return load_class_folders(folder_root)
    if kind == "folder_no_val":
        return load_class_folders(folder_root_no_val)
    return load_coop(kind, coop_root)


@pytest.mark.parametrize("kind", ["OxfordPets", "ImageNet", "FGVCAircraft", "folder",
                                  "folder_no_val"])
@pytest.mark.parametrize("shots", [1, 2, 4])
def test_few_shot(kind: str, shots: int, coop_root: Path, folder_root: Path,
                  folder_root_no_val: Path) -> None:
    ds = _load(kind, coop_root, folder_root, folder_root_no_val)
    a, again, other = few_shot(ds, shots, 1), few_shot(ds, shots, 1), few_shot(ds, shots, 2)
    assert list(a.train.images) == list(again.train.images)
    assert list(a.val.images) == list(again.val.images)
    assert (list(a.train.images), list(a.val.images)) != (
        list(other.train.images), list(other.val.images))
    n_val = min(shots, 4)
    assert np.bincount(a.train.labels, minlength=3).tolist() == [shots] * 3
    assert np.bincount(a.val.labels, minlength=3).tolist() == [n_val] * 3
    assert not set(a.train.images) & set(a.val.images)
    # Shots keep their labels: each drawn image is one of the class's own images.
    pool = dict(zip(ds.train.images, ds.train.labels.tolist()))
    assert all(pool[p] == label for p, label in zip(a.train.images, a.train.labels.tolist()))
    if ds.val is None:
        assert set(a.val.images) <= set(ds.train.images)
    else:
        assert set(a.val.images) <= set(ds.val.images)
    assert a.test is ds.test
    assert a.template == ds.template and a.classnames == ds.classnames
    # A method's own dev draw: min(K, 4) a class from the training pool, apart from the rest.
    if shots == 1:
        assert a.dev is not None
    if a.dev is not None:
        assert np.bincount(a.dev.labels, minlength=3).tolist() == [n_val] * 3
        assert set(a.dev.images) <= set(ds.train.images)
        assert not set(a.dev.images) & (set(a.train.images) | set(a.val.images))
        assert list(a.dev.images) == list(again.dev.images)


# --------------------------------------------------------------------------- dispatch


def test_load_dataset_dispatches_by_name(coop_root: Path, folder_root: Path) -> None:
    pets = load_dataset("OxfordPets", coop_root)
    assert pets.name == "OxfordPets" and pets.num_classes == 3
    assert load_dataset("ImageNet", str(coop_root)).val is None
    assert load_dataset("folder", folder_root).classnames == ("cat", "dog", "sea lion")
    with pytest.raises(ConfigError, match="NotADataSet"):
        load_dataset("NotADataSet", coop_root)
    with pytest.raises(ConfigError, match="OxfordPets"):
        load_dataset("OxfordPets", None)
    with pytest.raises(ConfigError, match="Pets"):
        load_coop("Pets", coop_root)


# --------------------------------------------------------------------------- bad inputs

PETS_DIR = "oxford_pets"
PETS_SPLIT = "oxford_pets/split_zhou_OxfordPets.json"


def _edit_split(edit: Callable[[dict], object]) -> Callable[[Path], str]:
    """A corruption that rewrites the pets split file; the message must name the file."""
    def corrupt(root: Path) -> str:
        path = root / PETS_SPLIT
        content = json.loads(path.read_text())
        _write_split(path, edit(content))
        return str(path)
    return corrupt


def _set(split: str, i: int, value: object) -> Callable[[dict], dict]:
    def edit(content: dict) -> dict:
        content[split][i] = value
        return content
    return edit


def _drop(key: str) -> Callable[[dict], dict]:
    def edit(content: dict) -> dict:
        del content[key]
        return content
    return edit


def _empty(key: str) -> Callable[[dict], dict]:
    def edit(content: dict) -> dict:
        content[key] = []
        return content
    return edit


def _relabel(old: int, new: int) -> Callable[[dict], dict]:
    def edit(content: dict) -> dict:
        for entries in content.values():
            for entry in entries:
                if entry[1] == old:
                    entry[1] = new
        return content
    return edit


def _missing_folder(root: Path) -> str:
    shutil.rmtree(root / PETS_DIR)
    return str(root / PETS_DIR)


def _missing_image_folder(root: Path) -> str:
    shutil.rmtree(root / PETS_DIR / "images")
    return str(root / PETS_DIR / "images")


def _missing_split_file(root: Path) -> str:
    (root / PETS_SPLIT).unlink()
    return str(root / PETS_SPLIT)


def _not_json(root: Path) -> str:
    (root / PETS_SPLIT).write_text("{ train: [")
    return str(root / PETS_SPLIT)


def _missing_image(root: Path) -> str:
    content = json.loads((root / PETS_SPLIT).read_text())
    image = root / PETS_DIR / "images" / content["test"][1][0]
    image.unlink()
    return str(image)


def _missing_image_subfolder(root: Path) -> str:
    content = json.loads((root / PETS_SPLIT).read_text())
    content["train"][0][0] = "no_such_dir/x.jpg"
    _write_split(root / PETS_SPLIT, content)
    return str(root / PETS_DIR / "images" / "no_such_dir" / "x.jpg")


SPLIT_FILE_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "missing data-set folder": (_missing_folder, "OxfordPets folder"),
    "missing image folder": (_missing_image_folder, "image folder"),
    "missing split file": (_missing_split_file, "does not exist"),
    "not JSON": (_not_json, "cannot be read as JSON"),
    "not an object": (_edit_split(lambda c: list(c.values())), "holds a list"),
    "missing key": (_edit_split(_drop("test")), "lacks key(s) test"),
    "split not a list": (_edit_split(lambda c: {**c, "val": {"a": 1}}), "'val' is a dict"),
    "empty split": (_edit_split(_empty("val")), "the val split is empty"),
    "short entry": (_edit_split(_set("train", 2, ["a.jpg", 0])), "train[2]"),
    "label as string": (_edit_split(_set("test", 0, ["a.jpg", "0", "abyssinian"])), "test[0]"),
    "negative label": (_edit_split(_set("val", 1, ["a.jpg", -1, "beagle"])), "val[1]"),
    "absolute path": (_edit_split(_set("val", 0, ["/abs/a.jpg", 0, "abyssinian"])),
                      "absolute path"),
    "label/name mismatch": (
        _edit_split(lambda c: _set("test", 4, [c["test"][4][0], c["test"][4][1], "sphynx"])(c)),
        "'sphynx'"),
    "labels not dense": (_edit_split(_relabel(2, 7)), "never occur"),
    "missing image": (_missing_image, "listed images do not exist"),
    "missing image subfolder": (_missing_image_subfolder, "listed images do not exist"),
}


@pytest.mark.parametrize("case", list(SPLIT_FILE_CASES))
def test_split_file_errors(tmp_path: Path, case: str) -> None:
    _make_pets(tmp_path)
    corrupt, fragment = SPLIT_FILE_CASES[case]
    offending = corrupt(tmp_path)
    with pytest.raises(DataError) as info:
        load_coop("OxfordPets", tmp_path)
    message = str(info.value)
    assert offending in message
    assert fragment in message
    assert "expected" in message


@pytest.mark.parametrize("loader", ["coop", "folder"])
def test_missing_root(tmp_path: Path, loader: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        if loader == "coop":
            load_coop("DTD", root)
        else:
            load_class_folders(root)
    assert str(root) in str(info.value)
    file_root = tmp_path / "a_file"
    file_root.write_text("")
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset("folder" if loader == "folder" else "DTD", file_root)


def _fgvc_malformed_line(root: Path) -> str:
    path = root / "fgvc_aircraft" / "images_variant_val.txt"
    path.write_text(path.read_text() + "1234567\n")
    return f"{path}:{4 * len(VARIANTS) + 1}"


def _fgvc_unknown_variant(root: Path) -> str:
    path = root / "fgvc_aircraft" / "images_variant_test.txt"
    path.write_text(path.read_text().replace("A320", "A380"))
    return "'A380'"


def _fgvc_missing_list(root: Path) -> str:
    path = root / "fgvc_aircraft" / "images_variant_train.txt"
    path.unlink()
    return str(path)


def _fgvc_empty_list(root: Path) -> str:
    path = root / "fgvc_aircraft" / "images_variant_test.txt"
    path.write_text("\n")
    return str(path)


def _fgvc_missing_image(root: Path) -> str:
    image = root / "fgvc_aircraft" / "images" / "1000003.jpg"
    image.unlink()
    return str(image)


def _imagenet_missing_classnames(root: Path) -> str:
    path = root / "imagenet" / "classnames.txt"
    path.unlink()
    return str(path)


def _imagenet_unnamed_wnid(root: Path) -> str:
    path = root / "imagenet" / "classnames.txt"
    path.write_text("\n".join(f"{w} {c}" for w, c in WNIDS.items() if w != "n01443537"))
    return "n01443537"


def _imagenet_val_class_differs(root: Path) -> str:
    shutil.rmtree(root / "imagenet" / "images" / "val" / "n01484850")
    return str(root / "imagenet" / "images" / "val")


def _imagenet_flat_val(root: Path) -> str:
    val = root / "imagenet" / "images" / "val"
    shutil.rmtree(val)
    _write_image(val / "ILSVRC2012_val_00000001.JPEG", 1)
    return str(val)


OTHER_COOP_CASES: dict[str, tuple[str, Callable[[Path], None], Callable[[Path], str], str]] = {
    "fgvc malformed line": ("FGVCAircraft", _make_fgvc, _fgvc_malformed_line, "<variant name>"),
    "fgvc unknown variant": ("FGVCAircraft", _make_fgvc, _fgvc_unknown_variant, "variants.txt"),
    "fgvc missing list": ("FGVCAircraft", _make_fgvc, _fgvc_missing_list, "does not exist"),
    "fgvc empty list": ("FGVCAircraft", _make_fgvc, _fgvc_empty_list, "lists no images"),
    "fgvc missing image": ("FGVCAircraft", _make_fgvc, _fgvc_missing_image, "do not exist"),
    "imagenet no classnames": ("ImageNet", _make_imagenet, _imagenet_missing_classnames,
                               "<wnid> <class name>"),
    "imagenet unnamed wnid": ("ImageNet", _make_imagenet, _imagenet_unnamed_wnid,
                              "no class name"),
    "imagenet val classes": ("ImageNet", _make_imagenet, _imagenet_val_class_differs,
                             "missing ['n01484850']"),
    "imagenet flat val": ("ImageNet", _make_imagenet, _imagenet_flat_val, "no class folders"),
}


@pytest.mark.parametrize("case", list(OTHER_COOP_CASES))
def test_fgvc_and_imagenet_errors(tmp_path: Path, case: str) -> None:
    name, make, corrupt, fragment = OTHER_COOP_CASES[case]
    make(tmp_path)
    offending = corrupt(tmp_path)
    with pytest.raises(DataError) as info:
        load_coop(name, tmp_path)
    message = str(info.value)
    assert offending in message
    assert fragment in message
    assert "expected" in message


def _folder_missing_train(root: Path) -> str:
    shutil.rmtree(root / "train")
    return str(root / "train")


def _folder_missing_test(root: Path) -> str:
    shutil.rmtree(root / "test")
    return str(root / "test")


def _folder_extra_test_class(root: Path) -> str:
    _write_image(root / "test" / "zebra" / "a.png", 1)
    return str(root / "test")


def _folder_missing_val_class(root: Path) -> str:
    shutil.rmtree(root / "val" / "dog")
    return str(root / "val")


def _folder_empty_class(root: Path) -> str:
    folder = root / "train" / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    return str(folder)


def _folder_empty_split(root: Path) -> str:
    shutil.rmtree(root / "val")
    (root / "val").mkdir()
    return str(root / "val")


FOLDER_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "missing train": (_folder_missing_train, "does not exist"),
    "missing test": (_folder_missing_test, "does not exist"),
    "extra test class": (_folder_extra_test_class, "extra ['zebra']"),
    "missing val class": (_folder_missing_val_class, "missing ['dog']"),
    "empty class folder": (_folder_empty_class, "holds no images"),
    "empty split": (_folder_empty_split, "no class folders"),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_class_folder_errors(tmp_path: Path, case: str) -> None:
    _make_folders(tmp_path)
    corrupt, fragment = FOLDER_CASES[case]
    offending = corrupt(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset("folder", tmp_path)
    message = str(info.value)
    assert offending in message
    assert fragment in message
    assert "expected" in message
