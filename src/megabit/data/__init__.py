"""Data loaders (CIFAR-10; image folders for codecs)."""
from .cifar import CIFAR10_CLASSES, DataError, Split, batches, load_cifar10, random_crop_flip, tta_views

__all__ = ["CIFAR10_CLASSES", "DataError", "Split", "batches", "load_cifar10", "random_crop_flip", "tta_views"]
