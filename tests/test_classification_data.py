"""Classification datamodules read each dataset's real on-disk format and fail clearly on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import DataError
from datamodules.cifar import CIFAR10DataModule
from datamodules.digits import DigitsDataModule
from datamodules.image_files import UnreadableImageError, read_image
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mit67 import MIT67DataModule
from datamodules.mnist import MNISTDataModule
from tests.classification_fakes import write_cifar10, write_image_folder, write_mit67, write_mnist

LOADER = {"batch_size": 4, "num_workers": 0}


def first_batch(dm, split: str = "train"):
    dm.setup("fit")
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]
    return next(iter(loader()))


def test_digits_splits_are_disjoint_stratified_and_fixed_by_split_seed():
    dm = DigitsDataModule(split_seed=3, **LOADER)
    dm.setup()
    sizes = {split: len(ds) for split, ds in dm.datasets.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360
    test_labels = dm.datasets["test"].tensors[1]
    assert torch.bincount(test_labels).min() >= 35  # every class is in the test split
    again = DigitsDataModule(split_seed=3, **LOADER)
    again.setup()
    assert torch.equal(again.datasets["test"].tensors[0], dm.datasets["test"].tensors[0])
    train_images = {tuple(dm.datasets["train"][i][0].flatten().tolist()) for i in range(200)}
    assert not any(tuple(x.flatten().tolist()) in train_images for x in dm.datasets["test"].tensors[0])


def test_digits_are_upsampled_to_the_configured_size():
    images, labels = first_batch(DigitsDataModule(image_size=32, **LOADER))
    assert images.shape == (4, 1, 32, 32) and labels.dtype == torch.long



def test_drop_last_drops_the_smaller_last_batch_of_training_only():
    dm = DigitsDataModule(batch_size=100, num_workers=0, drop_last=True)
    dm.setup("fit")
    train_sizes = [len(y) for _, y in dm.train_dataloader()]
    val_sizes = [len(y) for _, y in dm.val_dataloader()]
    assert set(train_sizes) == {100} and len(train_sizes) == len(dm.datasets["train"]) // 100
    assert sum(val_sizes) == len(dm.datasets["val"]) and val_sizes[-1] < 100

def test_mnist_reads_torchvision_raw_idx_files(tmp_path):
    dm = MNISTDataModule(root=str(write_mnist(tmp_path)), val_size=10, num_classes=10, channels=1,
                         image_size=28, **LOADER)
    images, labels = first_batch(dm)
    assert images.shape == (4, 1, 28, 28)
    assert {split: len(ds) for split, ds in dm.datasets.items()} == {"train": 50, "val": 10, "test": 20}
    assert dm.classes[0].startswith("0")


def test_mnist_missing_root_says_where_it_looked_and_how_to_get_it(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path / "nowhere"), num_classes=10, channels=1, image_size=28)
    with pytest.raises(FileNotFoundError, match=r"nowhere/MNIST/raw.*data\.download=true"):
        dm.setup()


def test_cifar10_reads_python_batches_without_checksums_of_the_real_files(tmp_path):
    dm = CIFAR10DataModule(root=str(write_cifar10(tmp_path)), verify_checksums=False, val_size=20,
                           num_classes=10, channels=3, image_size=32, **LOADER)
    images, _ = first_batch(dm)
    assert images.shape == (4, 3, 32, 32)
    assert len(dm.datasets["train"]) == 80 and len(dm.datasets["test"]) == 20
    assert dm.classes == ["airplane", "automobile", "bird", "cat", "deer",
                          "dog", "frog", "horse", "ship", "truck"]


def test_cifar10_with_checksums_says_the_checksum_failed_and_names_the_switch(tmp_path):
    dm = CIFAR10DataModule(root=str(write_cifar10(tmp_path)), num_classes=10, channels=3, image_size=32,
                           download=True)
    for step in (dm.prepare_data, dm.setup):  # prepare_data: before a download replaces the files
        with pytest.raises(DataError, match=r"checksum \(MD5\) of data_batch_1.*data.verify_checksums=false"):
            step()


def test_cifar10_without_its_files_still_says_where_it_looked(tmp_path):
    dm = CIFAR10DataModule(root=str(tmp_path), num_classes=10, channels=3, image_size=32)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        dm.setup()


def mit67(root, **options):
    settings = {"num_classes": 3, "channels": 3, "image_size": 32, "resize_size": 40,
                "val_fraction": 0.2, **LOADER, **options}
    return MIT67DataModule(root=str(root), **settings)


def test_mit67_reads_crlf_lists_and_paths_with_spaces(tmp_path):
    dm = mit67(write_mit67(tmp_path))
    dm.setup()
    assert dm.classes == ["bakery", "kitchen", "living room"]
    all_train = dm.datasets["train"].samples + dm.datasets["val"].samples
    assert len(all_train) == 6 + 7 + 8  # uneven class counts survive
    assert any(" " in path.name for path, _ in all_train)
    assert len(dm.datasets["test"]) == 6


def test_mit67_converts_grayscale_cmyk_png_and_gif_named_jpg_to_rgb(tmp_path):
    dm = mit67(write_mit67(tmp_path))
    dm.setup()
    dataset = dm.datasets["train"] if len(dm.datasets["train"]) else dm.datasets["val"]
    modes = {Image.open(path).mode for path, _ in dataset.samples}
    assert {"L", "CMYK", "P"} <= modes | {Image.open(p).mode for p, _ in dm.datasets["val"].samples}
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert 0 <= label < 3


def test_mit67_list_naming_a_missing_image_fails_and_names_it(tmp_path):
    write_mit67(tmp_path)
    (tmp_path / "Images" / "kitchen" / "kitchen_0000.jpg").unlink()
    expected = r"(?s)1 image\(s\) listed in .*TrainImages.txt.*kitchen_0000"
    with pytest.raises(FileNotFoundError, match=expected):
        mit67(tmp_path).setup()


def test_mit67_list_with_an_unknown_class_points_at_the_line(tmp_path):
    write_mit67(tmp_path)
    with open(tmp_path / "TestImages.txt", "a") as f:
        f.write("garage/garage_0001.jpg\r\n")
    with pytest.raises(ValueError, match=r"TestImages.txt:7: 'garage/garage_0001.jpg'"):
        mit67(tmp_path).setup()


def test_mit67_unreadable_image_names_the_file_and_the_option_to_skip(tmp_path):
    write_mit67(tmp_path)
    bad = tmp_path / "Images" / "bakery" / "bakery_0000.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(UnreadableImageError, match=r"(?s)bakery_0000.jpg.*data.skip_bad_images=true"):
        mit67(tmp_path).setup()


def test_mit67_skips_unreadable_images_with_a_warning_when_asked(tmp_path):
    write_mit67(tmp_path)
    bad = tmp_path / "Images" / "bakery" / "bakery_0000.jpg"
    bad.write_bytes(b"\xff\xd8\xff truncated")
    dm = mit67(tmp_path, skip_bad_images=True)
    with pytest.warns(UserWarning, match="bakery_0000.jpg"):
        dm.setup()
    kept = [path for split in ("train", "val") for path, _ in dm.datasets[split].samples]
    assert bad not in kept and len(kept) == 21 - 1
    image, _ = dm.datasets["train"][0]
    assert image.shape == (3, 32, 32)


def test_mit67_missing_root_says_what_is_missing_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MIT67 not found.*Images.*data.download=true"):
        mit67(tmp_path / "mit67").setup()


def test_num_classes_that_do_not_match_the_data_fail_with_the_right_value(tmp_path):
    dm = MIT67DataModule(root=str(write_mit67(tmp_path)), num_classes=67, channels=3, image_size=32)
    with pytest.raises(ValueError, match=r"num_classes=67 .* 3 classes .*Set data.num_classes=3"):
        dm.setup()


def test_image_folder_holds_out_validation_from_train_when_there_is_no_val_folder(tmp_path):
    dm = ImageFolderDataModule(root=str(write_image_folder(tmp_path)), num_classes=2, channels=3,
                               image_size=32, resize_size=36, val_fraction=0.25, **LOADER)
    images, _ = first_batch(dm, "val")
    assert images.shape == (3, 3, 32, 32)
    assert len(dm.datasets["train"]) == 9 and len(dm.datasets["val"]) == 3
    assert len(dm.datasets["test"]) == 12 and dm.classes == ["cat", "dog"]


def test_image_folder_without_train_folder_explains_the_layout(tmp_path):
    dm = ImageFolderDataModule(root=str(tmp_path), num_classes=2, channels=3, image_size=32)
    with pytest.raises(FileNotFoundError, match=r"<root>/train/<class>/<image>"):
        dm.setup()


def test_read_image_decodes_large_jpegs_at_reduced_scale_but_not_below_min_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((800, 1200, 3), 128, np.uint8)).save(path)
    assert read_image(path).shape == (3, 800, 1200)
    reduced = read_image(path, min_size=256)
    assert reduced.shape[0] == 3 and 256 <= min(reduced.shape[1:]) < 800
    assert read_image(path, mode="L").shape == (1, 800, 1200)
