"""Datasets as in-memory uint8 tensors, and batches converted and augmented on the training device."""

from ibrar.data.augment import random_crop_flip
from ibrar.data.cache import cache_path
from ibrar.data.loader import BatchLoader, balanced_subset
from ibrar.data.readers import (
    DATA_ROOT_ENV,
    DATASETS,
    DataNotFoundError,
    ImageData,
    check_same_classes,
    decode_images,
    load_split,
    resolve_data_root,
    scan_image_folder,
)
from ibrar.data.resident import ResidentLoader

__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "BatchLoader",
    "DataNotFoundError",
    "ImageData",
    "ResidentLoader",
    "balanced_subset",
    "cache_path",
    "check_same_classes",
    "decode_images",
    "load_split",
    "random_crop_flip",
    "resolve_data_root",
    "scan_image_folder",
]
