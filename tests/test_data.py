"""Readers on tiny datasets written in the real on-disk formats, the cache, augmentation and the loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ibrar.data import (
    BatchLoader,
    DataNotFoundError,
    ImageData,
    ResidentLoader,
    balanced_subset,
    load_split,
    random_crop_flip,
    readers,
    resolve_data_root,
    scan_image_folder,
)
from ibrar.errors import InputError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REAL_CIFAR10 = Path("~/.cache/ibrar-data/cifar10-jpeg").expanduser()


def random_pixels(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)


def write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_png(path: Path, pixels_chw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels_chw.transpose(1, 2, 0))).save(path)


def write_cifar10_pickles(directory: Path, per_batch: int = 2) -> dict[str, np.ndarray]:
    """torchvision's layout; keys as bytes, as a Python 3 pickle of the original dicts has them."""
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels = random_pixels(rng, per_batch)
        labels = rng.integers(0, 10, per_batch).tolist()
        write_pickle(
            directory / name,
            {
                b"batch_label": name.encode(),
                b"data": pixels.reshape(per_batch, 3072),
                b"labels": labels,
                b"filenames": [b"x.png"] * per_batch,
            },
        )
        written[name] = (pixels, labels)
    write_pickle(
        directory / "batches.meta",
        {
            b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_cases_per_batch": per_batch,
            b"num_vis": 3072,
        },
    )
    return written


def write_image_folder(
    directory: Path, classes: list[str], per_class: int, size: int = 32, suffix: str = ".png"
):
    rng = np.random.default_rng(1)
    pixels = random_pixels(rng, len(classes) * per_class, size)
    for i, cls in enumerate(classes):
        for j in range(per_class):
            write_png(directory / cls / f"{j:04d}{suffix}", pixels[i * per_class + j])
    return pixels


# ---------------------------------------------------------------- data root


def test_data_root_prefers_argument_then_env_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IBRAR_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("IBRAR_DATA_ROOT")
    assert resolve_data_root(None) == Path.home() / ".cache" / "ibrar-data"


# ---------------------------------------------------------------- readers


def test_cifar10_pickles_read_as_row_major_rgb_planes(tmp_path: Path) -> None:
    written = write_cifar10_pickles(tmp_path / "cifar10" / "cifar-10-batches-py")
    train = load_split("cifar10", tmp_path, "train")
    test = load_split("cifar10", tmp_path, "test")
    assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.classes == CIFAR10_CLASSES
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(train.images, torch.from_numpy(expected))
    assert train.labels.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert torch.equal(test.images, torch.from_numpy(written["test_batch"][0]))


def test_cifar100_pickles_use_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    names = [f"class{i:02d}" for i in range(100)]
    directory = tmp_path / "cifar-100-python"
    pixels = random_pixels(rng, 4)
    write_pickle(
        directory / "train",
        {"data": pixels.reshape(4, 3072), "fine_labels": [5, 99, 0, 7], "coarse_labels": [1, 2, 3, 4]},
    )
    write_pickle(
        directory / "test",
        {"data": pixels[:2].reshape(2, 3072), "fine_labels": [1, 2], "coarse_labels": [0, 0]},
    )
    write_pickle(directory / "meta", {"fine_label_names": names, "coarse_label_names": ["c"] * 20})
    train = load_split("cifar100", tmp_path, "train")
    assert train.labels.tolist() == [5, 99, 0, 7] and train.classes == names
    assert torch.equal(train.images, torch.from_numpy(pixels))
    assert load_split("cifar100", tmp_path, "test").labels.tolist() == [1, 2]


def test_cifar10_image_folder_is_found_under_cifar10_jpeg(tmp_path: Path) -> None:
    pixels = write_image_folder(tmp_path / "cifar10-jpeg" / "test", CIFAR10_CLASSES, per_class=1)
    data = load_split("cifar10", tmp_path, "test")
    assert data.classes == CIFAR10_CLASSES
    assert data.labels.tolist() == list(range(10))
    assert torch.equal(data.images, torch.from_numpy(pixels))  # PNG is lossless


def test_cifar10_image_folder_with_wrong_class_count_is_rejected(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "cifar10" / "train", ["a", "b"], per_class=1)
    with pytest.raises(InputError, match="expected 10 class folders"):
        load_split("cifar10", tmp_path, "train")


def test_svhn_mat_maps_label_10_to_digit_0(tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(3)
    pixels = random_pixels(rng, 3)
    (tmp_path / "svhn").mkdir()
    scipy_io.savemat(
        tmp_path / "svhn" / "train_32x32.mat",
        {"X": pixels.transpose(2, 3, 1, 0), "y": np.array([[10], [1], [9]], dtype=np.uint8)},
    )
    data = load_split("svhn", tmp_path, "train")
    assert data.labels.tolist() == [0, 1, 9]
    assert data.classes == [str(d) for d in range(10)]
    assert torch.equal(data.images, torch.from_numpy(pixels))


def write_tiny_imagenet(directory: Path) -> list[str]:
    wnids = ["n02", "n01", "n03"]
    (directory).mkdir(parents=True)
    (directory / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(4)
    for wnid in wnids:
        for j in range(2):
            write_png(
                directory / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", random_pixels(rng, 1, 64)[0]
            )
    lines = []
    for j, wnid in enumerate(["n03", "n01", "n01", "n02"]):
        write_png(directory / "val" / "images" / f"val_{j}.JPEG", random_pixels(rng, 1, 64)[0])
        lines.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t63\t63")
    (directory / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


def test_tiny_imagenet_reads_train_folders_and_val_annotations(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    train = load_split("tinyimagenet", tmp_path, "train")
    val = load_split("tinyimagenet", tmp_path, "test")
    assert train.classes == val.classes == ["n01", "n02", "n03"]
    assert train.images.shape == (6, 3, 64, 64)
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert val.images.shape == (4, 3, 64, 64)
    assert val.labels.tolist() == [2, 0, 0, 1]


def test_image_folder_reads_png_and_jpeg_with_sorted_classes(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", ["zebra"], per_class=1, suffix=".jpg")
    write_image_folder(tmp_path / "train", ["ant"], per_class=2, suffix=".png")
    data = load_split("imagefolder", tmp_path, "train")
    assert data.classes == ["ant", "zebra"]
    assert data.labels.tolist() == [0, 0, 1]
    assert data.images.shape == (3, 3, 32, 32)


def test_empty_class_folder_is_named_in_the_error(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", ["cat"], per_class=1)
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match="dog"):
        load_split("imagefolder", tmp_path, "train")


def test_unreadable_image_is_named_in_the_error(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", ["cat"], per_class=1)
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_split("imagefolder", tmp_path, "train")


def test_images_of_different_sizes_are_rejected(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", ["a"], per_class=1, size=32)
    write_image_folder(tmp_path / "train", ["b"], per_class=1, size=16)
    with pytest.raises(InputError, match="pixels"):  # the CLI's one-line error, exit 2
        load_split("imagefolder", tmp_path, "train")


def test_scan_image_folder_lists_files_in_class_order(tmp_path: Path) -> None:
    write_image_folder(tmp_path, ["b", "a"], per_class=2)
    files, labels, classes = scan_image_folder(tmp_path)
    assert classes == ["a", "b"] and labels == [0, 0, 1, 1]
    assert [f.parent.name for f in files] == ["a", "a", "b", "b"]


# ---------------------------------------------------------------- missing data and bad arguments


def test_missing_data_error_lists_every_searched_path_and_the_fixes(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_split("cifar10", tmp_path, "train")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for place in [
        tmp_path / "cifar-10-batches-py",
        tmp_path / "cifar10" / "cifar-10-batches-py",
        tmp_path / "train",
        tmp_path / "cifar10" / "train",
        tmp_path / "cifar10-jpeg" / "train",
    ]:
        assert str(place) in message
    assert "--data-root" in message and "IBRAR_DATA_ROOT" in message and "unpack-cifar10.sh" in message


@pytest.mark.parametrize("name", ["cifar100", "svhn", "tinyimagenet", "imagefolder"])
def test_every_dataset_reports_missing_data_clearly(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataNotFoundError, match=str(tmp_path)):
        load_split(name, tmp_path, "test")


def test_failed_download_becomes_the_same_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataNotFoundError, match="network is unreachable") as info:
        load_split("cifar10", tmp_path, "test", download=True)
    assert "--data-root" in str(info.value)


def test_download_is_refused_for_datasets_torchvision_cannot_fetch(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="not available for tinyimagenet"):
        load_split("tinyimagenet", tmp_path, "train", download=True)


@pytest.mark.parametrize(
    ("name", "split", "argument"), [("mnist", "train", "name"), ("cifar10", "val", "split")]
)
def test_unknown_dataset_or_split_raises_value_error(
    tmp_path: Path, name: str, split: str, argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        load_split(name, tmp_path, split)


# ---------------------------------------------------------------- cache


def test_cache_is_written_and_read_back_identically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image_folder(tmp_path / "train", ["a", "b"], per_class=2)
    first = load_split("imagefolder", tmp_path, "train")
    cached = list((tmp_path / ".ibrar-cache").glob("imagefolder-train-*.pt"))
    assert len(cached) == 1

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(readers, "decode_images", no_decoding)
    second = load_split("imagefolder", tmp_path, "train")
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.classes == second.classes


def test_changed_data_gets_a_new_cache_entry(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", ["a"], per_class=1)
    assert len(load_split("imagefolder", tmp_path, "train")) == 1
    write_image_folder(tmp_path / "train", ["b"], per_class=1)
    assert len(load_split("imagefolder", tmp_path, "train")) == 2
    assert len(list((tmp_path / ".ibrar-cache").glob("*.pt"))) == 2


def test_an_image_moved_to_another_class_or_a_renamed_class_is_never_read_from_the_cache(tmp_path: Path) -> None:
    """`mv` keeps a file's time and the file count: the cache key must still change."""
    write_image_folder(tmp_path / "train", ["a", "b", "c"], per_class=2)
    assert load_split("imagefolder", tmp_path, "train").labels.tolist() == [0, 0, 1, 1, 2, 2]
    (tmp_path / "train" / "a" / "0001.png").rename(tmp_path / "train" / "b" / "0009.png")
    assert load_split("imagefolder", tmp_path, "train").labels.tolist() == [0, 1, 1, 1, 2, 2]
    (tmp_path / "train" / "c").rename(tmp_path / "train" / "z")
    assert load_split("imagefolder", tmp_path, "train").classes == ["a", "b", "z"]


def test_an_edited_tiny_imagenet_label_file_is_never_read_from_the_cache(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    assert load_split("tinyimagenet", tmp_path, "test").labels.tolist() == [2, 0, 0, 1]
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text().replace("\tn03\t", "\tn02\t"))
    assert load_split("tinyimagenet", tmp_path, "test").labels.tolist() == [1, 0, 0, 1]


def test_a_full_disk_while_caching_is_skipped_and_leaves_no_temp_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ibrar.data import cache

    def full_disk(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")  # torch.save's failed write

    write_image_folder(tmp_path / "train", ["a"], per_class=1)
    monkeypatch.setattr(cache.torch, "save", full_disk)
    assert len(load_split("imagefolder", tmp_path, "train")) == 1
    assert list((tmp_path / ".ibrar-cache").iterdir()) == []


def test_a_test_split_with_other_classes_than_training_is_refused(tmp_path: Path) -> None:
    from ibrar.build import load_data
    from ibrar.config import build_config

    write_image_folder(tmp_path / "train", ["a", "b", "c"], per_class=2)
    write_image_folder(tmp_path / "test", ["a", "c"], per_class=1)  # test/c would be labelled 1, b's label
    config = build_config({"data": {"name": "imagefolder", "root": str(tmp_path)}})
    with pytest.raises(InputError, match=r"missing \['b'\]"):
        load_data(config, None)


def test_damaged_dataset_files_are_input_errors_naming_the_file(tmp_path: Path) -> None:
    write_cifar10_pickles(tmp_path / "cifar-10-batches-py")
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:100])  # cut short in a download
    with pytest.raises(InputError, match="data_batch_1.*download the dataset again"):
        load_split("cifar10", tmp_path, "train", cache=False)


def test_unwritable_cache_location_is_skipped(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", ["a"], per_class=1)
    (tmp_path / ".ibrar-cache").write_text("a file where the cache folder would go")
    assert len(load_split("imagefolder", tmp_path, "train")) == 1


def test_cache_can_be_turned_off(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", ["a"], per_class=1)
    load_split("imagefolder", tmp_path, "train", cache=False)
    assert not (tmp_path / ".ibrar-cache").exists()


# ---------------------------------------------------------------- augmentation


def test_augmentation_keeps_shape_dtype_and_is_seeded() -> None:
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    for batch in (images, images.float() / 255):
        a = random_crop_flip(batch, generator=torch.Generator().manual_seed(3))
        b = random_crop_flip(batch, generator=torch.Generator().manual_seed(3))
        assert a.shape == batch.shape and a.dtype == batch.dtype
        assert torch.equal(a, b)


def test_flip_only_returns_each_image_or_its_mirror() -> None:
    images = torch.rand(32, 3, 5, 5)
    out = random_crop_flip(images, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert bool(same.any()) and bool(mirrored.any())


def test_no_padding_no_flip_is_the_identity() -> None:
    images = torch.rand(4, 3, 6, 6)
    assert torch.equal(random_crop_flip(images, padding=0, flip=False, generator=torch.Generator()), images)


def test_crop_of_constant_image_keeps_values_and_pads_with_zeros() -> None:
    images = torch.full((16, 3, 12, 12), 0.7)
    out = random_crop_flip(images, padding=4, generator=torch.Generator().manual_seed(1))
    assert torch.all(out[:, :, 4:8, 4:8] == 0.7)  # the centre is inside the image for every shift
    assert bool(((out == 0) | (out == 0.7)).all())
    assert bool((out == 0).any())


def test_crop_is_a_shifted_window_of_the_padded_image() -> None:
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    out = random_crop_flip(images, padding=2, flip=False, generator=torch.Generator().manual_seed(5))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_augmentation_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="images"):
        random_crop_flip(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(torch.rand(1, 3, 8, 8), padding=-1)


# ---------------------------------------------------------------- loader


def make_data(n: int = 20, classes: int = 4) -> ImageData:
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8)
    return ImageData(images, torch.arange(n, dtype=torch.int64) % classes, [str(c) for c in range(classes)])


def batches(loader: BatchLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_loader_yields_float_batches_in_unit_range() -> None:
    loader = BatchLoader(make_data(), batch_size=8, shuffle=True, augment=True, seed=0)
    out = list(loader)
    assert len(loader) == len(out) == 3
    assert [len(y) for _, y in out] == [8, 8, 4]
    for x, y in out:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_loader_without_shuffle_or_augment_returns_the_data_in_order() -> None:
    data = make_data()
    x, y = next(iter(BatchLoader(data, batch_size=20, shuffle=False, augment=False, seed=0)))
    assert torch.equal(x, data.images.float() / 255) and torch.equal(y, data.labels)


def test_drop_last_skips_the_partial_batch() -> None:
    loader = BatchLoader(make_data(), batch_size=8, shuffle=True, augment=False, seed=0, drop_last=True)
    assert len(loader) == len(list(loader)) == 2


def test_same_seed_and_epoch_give_the_same_batches() -> None:
    data = make_data()
    a = BatchLoader(data, batch_size=8, shuffle=True, augment=True, seed=7)
    list(a)  # the first run has already been through epoch 0 ...
    resumed = BatchLoader(data, batch_size=8, shuffle=True, augment=True, seed=7)  # ... a resumed run has not
    for (xa, ya), (xb, yb) in zip(batches(a, 3), batches(resumed, 3), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_different_epochs_give_different_order() -> None:
    loader = BatchLoader(make_data(), batch_size=20, shuffle=True, augment=False, seed=7)
    assert not torch.equal(batches(loader, 0)[0][1], batches(loader, 1)[0][1])


def test_iterating_advances_the_epoch() -> None:
    loader = BatchLoader(make_data(), batch_size=20, shuffle=True, augment=True, seed=1)
    first, second = list(loader), list(loader)
    assert loader.epoch == 2
    assert torch.equal(first[0][0], batches(loader, 0)[0][0])
    assert not torch.equal(first[0][0], second[0][0])


def test_subset_is_fixed_and_class_balanced() -> None:
    data = make_data(40, classes=4)
    loader = BatchLoader(data, batch_size=100, shuffle=False, augment=False, seed=3, subset=8)
    again = BatchLoader(data, batch_size=100, shuffle=False, augment=False, seed=3, subset=8)
    _, y = next(iter(loader))
    assert y.bincount().tolist() == [2, 2, 2, 2]
    assert torch.equal(loader.images, again.images)


def test_balanced_subset_fills_up_from_larger_classes() -> None:
    labels = torch.tensor([0] * 10 + [1] * 2)
    chosen = balanced_subset(labels, 8, seed=0)
    assert labels[chosen].bincount().tolist() == [6, 2]
    assert len(set(chosen.tolist())) == 8


def test_indices_restrict_the_data() -> None:
    data = make_data()
    loader = BatchLoader(
        data, batch_size=5, shuffle=False, augment=False, seed=0, indices=torch.tensor([3, 1])
    )
    _, y = next(iter(loader))
    assert y.tolist() == data.labels[[3, 1]].tolist()


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"indices": torch.tensor([99])}, "indices"),
        ({"subset": 0}, "subset"),
    ],
)
def test_loader_rejects_bad_arguments(kwargs: dict, argument: str) -> None:
    options = {"batch_size": 4, "shuffle": False, "augment": False, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=argument):
        BatchLoader(make_data(), **options)


@pytest.mark.parametrize("options", [
    {"shuffle": True, "augment": True},
    {"shuffle": True, "augment": False},
    {"shuffle": False, "augment": True},
    {"shuffle": True, "augment": True, "subset": 24},
    {"shuffle": True, "augment": True, "indices": torch.arange(3, 37, 2), "drop_last": True},
], ids=["shuffled+augmented", "shuffled", "augmented", "subset", "indices+drop_last"])
def test_the_resident_loader_yields_the_batches_of_the_plain_loader(options: dict) -> None:
    data = ImageData(torch.randint(0, 256, (50, 3, 8, 6), dtype=torch.uint8), torch.arange(50) % 5,
                     [str(c) for c in range(5)])
    plain = BatchLoader(data, batch_size=8, seed=11, **options)
    resident = ResidentLoader(data, batch_size=8, seed=11, **options)
    assert len(resident) == len(plain)
    for epoch in (0, 1, 4):
        pairs = list(zip(batches(plain, epoch), batches(resident, epoch), strict=True))
        for (xa, ya), (xb, yb) in pairs:
            assert xb.dtype == torch.float32 and xb.shape == xa.shape
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert resident.images.dtype == torch.uint8  # the stored copy stays uint8; only batches are float
    assert not torch.equal(batches(resident, 0)[0][0], batches(resident, 1)[0][0])  # epochs do differ


def test_resident_ranks_split_each_global_batch_as_the_plain_loader_does() -> None:
    data = make_data(40, classes=4)
    for rank in (0, 1, 2):
        plain = BatchLoader(data, batch_size=4, shuffle=True, augment=True, seed=5, rank=rank, world_size=3)
        resident = ResidentLoader(data, batch_size=4, shuffle=True, augment=True, seed=5, rank=rank, world_size=3)
        for (xa, ya), (xb, yb) in zip(batches(plain, 2), batches(resident, 2), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_image_data_validates_its_tensors() -> None:
    with pytest.raises(ValueError, match="images"):
        ImageData(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64), [])
    with pytest.raises(ValueError, match="labels"):
        ImageData(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), [])


# ---------------------------------------------------------------- the real CIFAR-10 copy, when unpacked


@pytest.mark.skipif(not (REAL_CIFAR10 / "test").is_dir(), reason="CIFAR-10 JPEG copy not unpacked")
def test_real_cifar10_jpeg_folder_has_ten_classes_of_1000_test_images() -> None:
    files, labels, classes = scan_image_folder(REAL_CIFAR10 / "test")
    assert classes == CIFAR10_CLASSES
    assert np.bincount(labels).tolist() == [1000] * 10
    sample = readers.decode_images(files[::1000])
    assert sample.shape == (10, 3, 32, 32) and sample.dtype == torch.uint8
