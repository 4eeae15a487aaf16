"""The `augment` group: torchvision policies, crops and sizes for every classification datamodule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from core.errors import ConfigError
from datamodules.augment import Augment, Geometry
from datamodules.digits import DigitsDataModule
from datamodules.image_folder import ImageFolderDataModule
from tests.classification_fakes import write_image_folder
from tests.run_py import python

CONF = Path(__file__).resolve().parents[1] / "conf" / "augment"
POLICIES = ["randaugment", "trivialaugment", "autoaugment", "augmix"]
NO_GEOMETRY = Geometry(random=[], fixed=[], hflip=0.0)


def photo(channels: int, dtype: torch.dtype = torch.uint8, size: int = 32) -> torch.Tensor:
    """A smooth image with structure in every channel (constant images hide most ops)."""
    ramp = torch.linspace(0, 1, size)
    image = torch.stack([(ramp[:, None] * (c + 1) + ramp[None, :]) % 1 for c in range(channels)])
    return (image * 255).to(torch.uint8) if dtype == torch.uint8 else image.to(dtype)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_a_policy_changes_pixels_and_keeps_shape_and_dtype(policy, channels, dtype):
    op = Augment(policy=policy).policy_transform()
    image = v2.functional.to_image(photo(channels, dtype))
    torch.manual_seed(0)
    outputs = [op(image) for _ in range(8)]
    assert all(out.shape == image.shape and out.dtype == dtype for out in outputs)
    assert any(not torch.equal(out, image) for out in outputs)


@pytest.mark.parametrize("autoaugment_policy", ["imagenet", "cifar10", "svhn"])
def test_every_autoaugment_policy_is_torchvisions(autoaugment_policy):
    op = Augment(policy="autoaugment", autoaugment_policy=autoaugment_policy).policy_transform()
    assert op.policy == v2.AutoAugmentPolicy(autoaugment_policy)


def test_basic_and_none_add_no_policy():
    assert Augment(policy="basic").policy_transform() is None
    assert Augment(policy="none").policy_transform() is None


@pytest.mark.parametrize("channels", [1, 3])
def test_train_pipeline_crops_normalises_and_erases(channels):
    augment = Augment(policy="trivialaugment", random_resized_crop=True, color_jitter=0.4,
                      random_erasing=1.0, interpolation="bicubic")
    transform = augment.train_transform(NO_GEOMETRY, 24, [0.5] * channels, [0.25] * channels)
    steps = [type(t) for t in transform.transforms]
    assert steps == [v2.ToImage, v2.RandomResizedCrop, v2.TrivialAugmentWide, v2.ColorJitter,
                     v2.ToDtype, v2.Normalize, v2.RandomErasing]
    assert transform.transforms[1].interpolation == v2.InterpolationMode.BICUBIC
    out = transform(photo(channels))
    assert out.shape == (channels, 24, 24) and out.dtype == torch.float32
    assert (out == 0).any()  # the erased rectangle (p=1) is filled with 0


def test_none_trains_on_the_evaluation_geometry_without_flip():
    geometry = Geometry(random=[v2.RandomCrop(8)], fixed=[v2.CenterCrop(16)], hflip=0.5)
    steps = [type(t) for t in Augment(policy="none").train_transform(geometry, 8, [0], [1]).transforms]
    assert steps == [v2.ToImage, v2.CenterCrop, v2.ToDtype, v2.Normalize]
    steps = [type(t) for t in Augment(policy="basic").train_transform(geometry, 8, [0], [1]).transforms]
    assert steps == [v2.ToImage, v2.RandomCrop, v2.RandomHorizontalFlip, v2.ToDtype, v2.Normalize]


def test_unknown_settings_are_config_errors():
    with pytest.raises(ConfigError, match="augment.policy"):
        Augment(policy="autoaugmnet")
    with pytest.raises(ConfigError, match="autoaugment_policy"):
        Augment(policy="autoaugment", autoaugment_policy="mnist")
    with pytest.raises(ConfigError, match="interpolation"):
        Augment(interpolation="lanczos")
    with pytest.raises(ConfigError, match="probability"):
        Augment(random_erasing=1.5)


def test_train_crop_eval_resize_and_eval_crop_are_set_separately(tmp_path):
    root = write_image_folder(tmp_path / "folder", splits=("train", "val"), per_class=2)  # 48x40 JPEGs
    augment = Augment(train_crop_size=36, eval_resize_size=30, eval_crop_size=24)
    dm = ImageFolderDataModule(str(root), num_classes=2, channels=3, image_size=16, resize_size=40,
                               augment=augment, batch_size=2)
    dm.setup("fit")
    assert dm.datasets["train"][0][0].shape == (3, 36, 36)
    assert dm.datasets["val"][0][0].shape == (3, 24, 24)
    resize = dm.datasets["val"].transform.transforms[1]
    assert isinstance(resize, v2.Resize) and resize.size == [30]


@pytest.mark.parametrize("option", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_every_augment_option_composes_with_the_digits(make_config, option):
    cfg = make_config(f"augment={option}", "augment.random_erasing=0.25")
    dm = instantiate(cfg.data)
    assert dm.augment.policy == option and dm.augment.random_erasing == 0.25
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (dm.batch_size, 1, dm.image_size, dm.image_size) and images.dtype == torch.float32
    plain = DigitsDataModule()
    plain.setup()
    assert torch.equal(dm.datasets["val"].tensors[0], plain.datasets["val"].tensors[0])  # never augmented


def first_batch(seed: int) -> torch.Tensor:
    dm = DigitsDataModule(augment=Augment(policy="trivialaugment"), batch_size=16)
    dm.setup("fit")
    loader = dm.train_dataloader()
    torch.manual_seed(seed)  # pl.seed_everything seeds this generator; workers derive theirs from it
    two_workers = DataLoader(loader.dataset, batch_size=16, num_workers=2, shuffle=False)
    return next(iter(two_workers))[0]


def test_augmentation_in_worker_processes_is_fixed_by_the_seed():
    assert torch.equal(first_batch(1), first_batch(1))
    assert not torch.equal(first_batch(1), first_batch(2))


@pytest.mark.slow
def test_input_pipeline_benchmark_compares_policies_against_basic():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "input_pipeline.py"
    result = python(str(script), "--quick", "--policies", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ratio trivialaugment/basic [training loader]:" in result.stdout
    assert all(name in result.stdout for name in ("randaugment", "autoaugment", "augmix"))


def test_segmentation_photometric_distortion_changes_the_image_only_geometry_stays_joint():
    from torchvision import tv_tensors

    from datamodules.transforms import segmentation_train

    image = tv_tensors.Image(photo(3, size=40))
    mask = tv_tensors.Mask(torch.arange(40 * 40).view(1, 40, 40) % 7)
    changed = 0
    for seed in range(6):
        outputs = []
        for photometric in (False, True):
            torch.manual_seed(seed)
            transform = segmentation_train(32, 40, [0, 0, 0], [1, 1, 1], photometric_distortion=photometric)
            outputs.append(transform(image, mask))
        (plain_image, plain_mask), (jittered_image, jittered_mask) = outputs
        assert torch.equal(plain_mask, jittered_mask)  # same crop, same flip, mask values untouched
        changed += not torch.allclose(plain_image, jittered_image)
    assert changed >= 3


def test_segmentation_configs_switch_the_photometric_distortion_on(make_config, tmp_path):
    from tests.fakes import write_fake_seg_folder

    root = write_fake_seg_folder(tmp_path / "seg")
    cfg = make_config("task=segment", "data=seg_folder", f"data.root={root}", "data.num_classes=3",
                      "data.photometric_distortion=true")
    datamodule = instantiate(cfg.data)
    assert datamodule.photometric_distortion
    assert any(isinstance(t, v2.Compose) for t in datamodule.train_transform().transforms)
