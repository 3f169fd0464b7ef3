"""Datasets on the device: the registry of official datasets (`data.name`), preprocessing, subsets and
splits, and a loader without per-image work."""
from cifarbench.data.datasets import DATASETS, ImageDataset, Source, dataset_source, load_dataset
from cifarbench.data.fetch import DatasetError

# Imported for their @DATASETS.register side effect: one file per format family.
from cifarbench.data import cifar, idx, svhn  # noqa: E402,F401  isort: skip
from cifarbench.data.cifar import load_cifar10  # noqa: E402
from cifarbench.data.loader import DeviceLoader  # noqa: E402
from cifarbench.data.preprocess import PREPROCESSES, build_preprocess  # noqa: E402
from cifarbench.data.split import stratified_sample, training_subset, validation_split  # noqa: E402

__all__ = ["DATASETS", "DatasetError", "DeviceLoader", "ImageDataset", "PREPROCESSES", "Source", "build_preprocess",
           "dataset_source", "load_cifar10", "load_dataset", "stratified_sample", "training_subset", "validation_split"]
