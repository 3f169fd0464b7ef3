"""CIFAR-10 on the device: the official batches, preprocessing and a loader without per-image work."""
from cifarbench.data.cifar10 import CLASSES, Cifar10, DatasetError, load_cifar10
from cifarbench.data.loader import DeviceLoader
from cifarbench.data.preprocess import PREPROCESSES, build_preprocess
from cifarbench.data.split import validation_split

__all__ = ["CLASSES", "Cifar10", "DatasetError", "DeviceLoader", "PREPROCESSES", "build_preprocess", "load_cifar10",
           "validation_split"]
