"""otlearn.data: offline datasets with indexed samples, and loaders for users' own data."""
from otlearn.data.datamodule import DigitsDataModule, PatchesDataModule, ShapesDataModule
from otlearn.data.digits import Digits, DigitsAugment
from otlearn.data.images import CIFAR10Folder, ImageDataModule, TorchvisionAugment, image_folder
from otlearn.data.patches import NaturalPatches
from otlearn.data.panoptic_files import COCOPanoptic, VOCPanoptic
from otlearn.data.shapes import SyntheticPanopticShapes, collate_panoptic
from otlearn.data.indexed import EpochShuffleSampler, IndexedDataset, ShardSampler
from otlearn.data.resumable import ResumableLoader

__all__ = ["COCOPanoptic", "SyntheticPanopticShapes", "ShapesDataModule", "NaturalPatches", "PatchesDataModule", "VOCPanoptic", "collate_panoptic", "CIFAR10Folder", "ImageDataModule", "TorchvisionAugment", "image_folder", "Digits", "DigitsAugment", "DigitsDataModule", "EpochShuffleSampler", "IndexedDataset", "ResumableLoader", "ShardSampler"]
