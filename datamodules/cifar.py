"""CIFAR-10 through torchvision's reader and downloader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity
from torchvision.transforms import v2

from core.errors import DataError
from datamodules.augment import Geometry, resize_and_crop
from datamodules.base import TorchvisionDataModule


class CIFAR10Files(CIFAR10):
    """torchvision's CIFAR-10; with `verify_checksums=False` only the files' presence is checked."""

    def __init__(self, *args: Any, verify_checksums: bool = True, **kwargs: Any) -> None:
        if not verify_checksums:
            self.train_list = [[name, None] for name, _ in CIFAR10.train_list]
            self.test_list = [[name, None] for name, _ in CIFAR10.test_list]
            self.meta = {**CIFAR10.meta, "md5": None}
        super().__init__(*args, **kwargs)


class CIFAR10DataModule(TorchvisionDataModule):
    """50k training images (minus a stratified validation hold-out) and the official 10k test set."""

    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    layout = "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"

    def __init__(self, *args: Any, verify_checksums: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verify_checksums = verify_checksums

    def prepare_data(self) -> None:
        self.check_checksums()  # before a download would replace the user's files
        super().prepare_data()

    def build_datasets(self) -> dict[str, Any]:
        self.check_checksums()
        return super().build_datasets()

    def check_checksums(self) -> None:
        """Stop, naming the files and `data.verify_checksums=false`, when all are there but differ."""
        folder = self.root / CIFAR10.base_folder
        files = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
        if not self.verify_checksums or not all((folder / name).is_file() for name, _ in files):
            return
        changed = [name for name, md5 in files if not check_integrity(str(folder / name), md5)]
        if changed:
            raise DataError(
                f"CIFAR-10: the files under {folder} are all there, but the checksum (MD5) of "
                f"{', '.join(changed)} differs from the official files'. For a copy that is meant to "
                "differ (re-saved, a subset, a synthetic set), set data.verify_checksums=false; "
                "otherwise delete them and run with data.download=true to fetch the official files."
            )

    def make_dataset(self, train: bool, transform: Callable | None, download: bool = False) -> Any:
        return CIFAR10Files(
            self.root, train=train, transform=transform, download=download,
            verify_checksums=self.verify_checksums,
        )

    def geometry(self) -> Geometry:
        """Pad-4 random crop and flip for training; full images (or the set eval sizes) for evaluation."""
        augment = self.augment
        crop_size = augment.train_crop_size or self.image_size
        fixed = resize_and_crop(augment.eval_resize_size, augment.eval_crop_size, augment.interpolation_mode)
        return Geometry(random=[v2.RandomCrop(crop_size, padding=4)], fixed=fixed, hflip=0.5)
