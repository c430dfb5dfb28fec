"""Readers for the datasets the paper uses, each in the layout people already have on disk.

Every reader returns the same `ImageData` (uint8 images, int64 labels, class names), decoded once
and then served from a tensor cache; missing data fails with one message that says where we looked.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ibrar.data.cache import cache_path, read_cache, source_fingerprint, write_cache
from ibrar.errors import IbrarError, InputError

DATASETS = ("cifar10", "cifar100", "svhn", "tinyimagenet", "imagefolder")
SPLITS = ("train", "test")
DATA_ROOT_ENV = "IBRAR_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("~/.cache/ibrar-data")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff"})


@dataclass
class ImageData:
    """One dataset split in memory: images uint8 (N, C, H, W), labels int64 (N,), class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images: expected a uint8 tensor (N, C, H, W), got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels: expected an int64 tensor of shape ({self.images.shape[0]},), got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        self.classes = list(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class DataNotFoundError(IbrarError, FileNotFoundError):
    """The dataset is not on disk (and could not be downloaded); the message lists where we looked."""


@dataclass(frozen=True)
class Source:
    """One place on disk holding a dataset split: the files that define it and how to decode them."""

    path: Path
    files: list[Path]
    read: Callable[[], tuple[torch.Tensor, torch.Tensor, list[str]]]


def resolve_data_root(arg: str | Path | None = None) -> Path:
    """The data root: the `--data-root` argument, else $IBRAR_DATA_ROOT, else ~/.cache/ibrar-data."""
    if arg is not None and str(arg) != "":
        return Path(arg).expanduser()
    env = os.environ.get(DATA_ROOT_ENV, "")
    return Path(env).expanduser() if env else DEFAULT_DATA_ROOT.expanduser()


def load_split(
    name: str, root: str | Path, split: str, download: bool = False, cache: bool = True
) -> ImageData:
    """Read one split ("train" or "test"; Tiny ImageNet's "test" is its val set) of a dataset under `root`.

    Decoded tensors are cached in `root/.ibrar-cache/` unless `cache` is False or the folder is read-only.
    Raises `DataNotFoundError` when no known layout is found, `ValueError` for unreadable data.
    """
    if name not in DATASETS:
        raise ValueError(f"name: expected one of {list(DATASETS)}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    root = Path(root).expanduser()
    source, searched = _LOCATORS[name](root, split)
    download_failure = ""
    if source is None and download:
        download_failure = _download(name, root, split)
        source, searched = _LOCATORS[name](root, split)
    if source is None:
        raise DataNotFoundError(_not_found_message(name, split, root, searched, download_failure))
    key = cache_path(root, name, split, source_fingerprint(source.path, source.files))
    payload = read_cache(key) if cache else None
    if payload is not None:
        return ImageData(payload["images"], payload["labels"], payload["classes"])
    images, labels, classes = source.read()
    data = ImageData(images, labels, classes)
    if cache:
        write_cache(key, data.images, data.labels, data.classes)
    return data


def check_same_classes(expected: Sequence[str] | None, found: Sequence[str], where: str) -> None:
    """Refuse a test split whose classes are not ``expected`` (``where`` says whose they are): each split numbers
    its own sorted class folders, so a test folder missing one would shift every later label by one."""
    if expected is not None and list(expected) != list(found):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        parts = [f"missing {missing}"] if missing else []
        if extra:
            parts.append(f"not in training {extra}")
        detail = "; ".join(parts) or "another order"
        raise InputError(f"the test split's classes are not the ones {where} ({detail}): its labels would not "
                         "mean the same classes; give test/ one folder per training class")


# ---------------------------------------------------------------- image decoding


def scan_image_folder(directory: Path) -> tuple[list[Path], list[int], list[str]]:
    """Files, labels and sorted class names of a `<directory>/<class>/<image>` tree."""
    directory = Path(directory)
    classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise InputError(f"{directory}: expected one sub-folder per class, found none")
    files: list[Path] = []
    labels: list[int] = []
    for index, class_name in enumerate(classes):
        folder = directory / class_name
        images = sorted(
            e.name
            for e in os.scandir(folder)
            if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            raise InputError(
                f"class folder {folder} holds no images (expected {sorted(IMAGE_SUFFIXES)} files)"
            )
        files += [folder / image for image in images]
        labels += [index] * len(images)
    return files, labels, classes


def read_rgb(path: Path) -> np.ndarray:
    """One image as an (H, W, 3) uint8 array; a file PIL cannot decode is a ValueError naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot read image {path}: {err}") from err


def decode_images(files: Sequence[Path], workers: int | None = None) -> torch.Tensor:
    """Decode same-sized images into one uint8 tensor (N, 3, H, W) with threads (PIL releases the GIL)."""
    if not files:
        raise ValueError("files: expected at least one image path, got none")
    first = read_rgb(files[0])
    out = np.empty((len(files), *first.shape), dtype=np.uint8)

    def fill(chunk: range) -> None:
        for i in chunk:
            pixels = read_rgb(files[i])
            if pixels.shape != first.shape:
                raise InputError(
                    f"image {files[i]} is {pixels.shape[1]}x{pixels.shape[0]} pixels; expected "
                    f"{first.shape[1]}x{first.shape[0]} like {files[0]}: resize the images to one size"
                )
            out[i] = pixels

    step = 512
    chunks = [range(s, min(s + step, len(files))) for s in range(0, len(files), step)]
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, chunks))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _image_folder_source(directory: Path, expected_classes: int | None = None) -> Source:
    files, labels, classes = scan_image_folder(directory)
    if expected_classes is not None and len(classes) != expected_classes:
        raise InputError(f"{directory}: expected {expected_classes} class folders, found {len(classes)} "
                         f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); point --data-root at "
                         "the dataset's own copy, or use data.name=imagefolder for another dataset")

    def read() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        return decode_images(files), torch.tensor(labels, dtype=torch.int64), classes

    return Source(directory, files, read)


# ---------------------------------------------------------------- CIFAR


def _read_pickle(path: Path) -> dict:
    # torchvision's CIFAR files are Python-2 pickles of plain dicts; latin1 is how they decode.
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise InputError(f"cannot read {path} ({err}): the file is damaged or cut short; download the dataset "
                         "again") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path} holds a {type(raw).__name__}, not CIFAR's dict of arrays; download it again")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _cifar_pickles_source(
    directory: Path, batches: list[str], meta: str, label_key: str, names_key: str
) -> Source:
    files = [directory / b for b in batches]

    def read() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        images, labels = [], []
        for path in files:
            batch = _read_pickle(path)
            if "data" not in batch or label_key not in batch:
                raise InputError(f"{path}: expected the keys 'data' and {label_key!r}, got {sorted(batch)}; "
                                 "download the dataset again")
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(label) for label in batch[label_key])
        names = _read_pickle(directory / meta)[names_key]
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64), classes

    return Source(directory, [*files, directory / meta], read)


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    meta: str
    label_key: str
    names_key: str
    num_classes: int
    batches: dict[str, list[str]]


_CIFAR_LAYOUTS = {
    "cifar10": _CifarLayout(
        "cifar-10-batches-py", "batches.meta", "labels", "label_names", 10,
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    ),
    "cifar100": _CifarLayout(
        "cifar-100-python", "meta", "fine_labels", "fine_label_names", 100,
        {"train": ["train"], "test": ["test"]},
    ),
}  # fmt: skip


def _locate_cifar(name: str, root: Path, split: str) -> tuple[Source | None, list[str]]:
    layout = _CIFAR_LAYOUTS[name]
    folder, meta, batches = layout.folder, layout.meta, layout.batches[split]
    searched: list[str] = []
    for parent in (root, root / name):
        directory = parent / folder
        searched.append(f"{directory} (torchvision's pickles: {', '.join(batches)}, {meta})")
        if all((directory / f).is_file() for f in [*batches, meta]):
            return _cifar_pickles_source(
                directory, batches, meta, layout.label_key, layout.names_key
            ), searched
    for parent in (root, root / name, root / f"{name}-jpeg"):
        searched.append(f"{parent / split} (an image folder: {split}/<class>/*.jpg|png)")
        if (parent / split).is_dir():
            return _image_folder_source(parent / split, layout.num_classes), searched
    return None, searched


# ---------------------------------------------------------------- SVHN


def _svhn_source(path: Path) -> Source:
    def read() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        try:
            from scipy.io import loadmat
        except ImportError as err:
            raise ImportError(f"reading SVHN's {path.name} needs scipy: pip install scipy") from err
        try:
            mat = loadmat(str(path))
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read {path} ({err}): the file is damaged or cut short; download it "
                             "again") from None
        images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
        labels = torch.from_numpy(np.asarray(mat["y"]).reshape(-1).astype(np.int64))
        labels[labels == 10] = 0  # SVHN stores the digit 0 as class 10
        return torch.from_numpy(images), labels, [str(d) for d in range(10)]

    return Source(path.parent, [path], read)


def _locate_svhn(root: Path, split: str) -> tuple[Source | None, list[str]]:
    searched = []
    for parent in (root, root / "svhn"):
        path = parent / f"{split}_32x32.mat"
        searched.append(f"{path} (torchvision's SVHN file)")
        if path.is_file():
            return _svhn_source(path), searched
    return None, searched


# ---------------------------------------------------------------- Tiny ImageNet


def _tiny_imagenet_source(directory: Path, split: str) -> Source:
    classes = sorted(
        {line.strip() for line in (directory / "wnids.txt").read_text().splitlines() if line.strip()}
    )
    index = {wnid: i for i, wnid in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for wnid in classes:
            folder = directory / "train" / wnid / "images"
            images = (
                sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
                if folder.is_dir()
                else []
            )
            if not images:
                raise InputError(f"class folder {folder} holds no images (expected {sorted(IMAGE_SUFFIXES)} files)")
            files += images
            labels += [index[wnid]] * len(images)
    else:
        annotations = directory / "val" / "val_annotations.txt"
        for number, line in enumerate(annotations.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise InputError(
                    f"{annotations} line {number}: expected 'filename<TAB>wnid...' with a wnid "
                    f"from wnids.txt, got {line!r}"
                )
            files.append(directory / "val" / "images" / parts[0])
            labels.append(index[parts[1]])
        if not files:
            raise InputError(f"{annotations} lists no images")

    def read() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        return decode_images(files), torch.tensor(labels, dtype=torch.int64), classes

    # the label files define the split too: an edited one must not read a stale cache
    label_files = [directory / "wnids.txt"] + ([] if split == "train" else [directory / "val" / "val_annotations.txt"])
    return Source(directory / ("train" if split == "train" else "val"), [*files, *label_files], read)


def _locate_tiny_imagenet(root: Path, split: str) -> tuple[Source | None, list[str]]:
    searched = []
    needed = (
        "train/<wnid>/images/*.JPEG" if split == "train" else "val/images/*.JPEG, val/val_annotations.txt"
    )
    for directory in (
        root / "tiny-imagenet-200",
        root / "tinyimagenet" / "tiny-imagenet-200",
        root / "tinyimagenet",
    ):
        searched.append(f"{directory} (tiny-imagenet-200 layout: wnids.txt, {needed})")
        marker = directory / ("train" if split == "train" else "val/val_annotations.txt")
        if (directory / "wnids.txt").is_file() and marker.exists():
            return _tiny_imagenet_source(directory, split), searched
    return None, searched


# ---------------------------------------------------------------- generic image folder


def _locate_image_folder(root: Path, split: str) -> tuple[Source | None, list[str]]:
    directory = root / split
    searched = [f"{directory} (an image folder: {split}/<class>/<image>)"]
    return (_image_folder_source(directory) if directory.is_dir() else None), searched


_LOCATORS: dict[str, Callable[[Path, str], tuple[Source | None, list[str]]]] = {
    "cifar10": lambda root, split: _locate_cifar("cifar10", root, split),
    "cifar100": lambda root, split: _locate_cifar("cifar100", root, split),
    "svhn": _locate_svhn,
    "tinyimagenet": _locate_tiny_imagenet,
    "imagefolder": _locate_image_folder,
}


# ---------------------------------------------------------------- download and the not-found message


def _download(name: str, root: Path, split: str) -> str:
    """Try torchvision's downloader; return why it failed ('' on success)."""
    if name not in ("cifar10", "cifar100", "svhn"):
        return f"download=True is not available for {name}; place the files yourself."
    try:
        from torchvision import datasets

        root.mkdir(parents=True, exist_ok=True)
        if name == "svhn":
            datasets.SVHN(str(root), split=split, download=True)
        else:
            dataset = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
            dataset(str(root), train=split == "train", download=True)
    except Exception as err:  # network, disk or checksum errors all mean: the data is still missing
        return f"Downloading {name} into {root} failed: {type(err).__name__}: {err}"
    return ""


def _not_found_message(name: str, split: str, root: Path, searched: list[str], download_failure: str) -> str:
    lines = [f"{name} ({split} split) not found under the data root {root}. Looked in:"]
    lines += [f"  - {place}" for place in searched]
    if download_failure:
        lines.append(download_failure)
    lines.append(
        "Put the data in one of these layouts and point ibrar at the data root with the --data-root option "
        f"or the {DATA_ROOT_ENV} environment variable (default {DEFAULT_DATA_ROOT})."
    )
    if name == "cifar10":
        lines.append(
            "For CIFAR-10 the project ships a JPEG copy; unpack it with "
            "../shared/data/unpack-cifar10.sh ~/.cache/ibrar-data/cifar10-jpeg"
        )
    return "\n".join(lines)
