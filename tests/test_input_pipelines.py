"""Input pipelines that keep a GPU fed: automatic worker counts, the gpu_fast preset, JPEG decoding there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from app.build import build
from app.checks import check_config
from app.training import train
from core.errors import ConfigError
from datamodules.base import loader_workers
from datamodules.gpu_decode import EncodedBatch, decode_on_device
from datamodules.image_folder import ImageFolderDataModule
from tests.classification_fakes import write_image_folder

AUTO = [(8, 1, 7), (8, 2, 3), (16, 8, 1), (2, 1, 1), (1, 1, 0), (4, 8, 0)]  # CPUs, local processes, workers


@pytest.mark.parametrize(("cpus", "processes", "workers"), AUTO)
def test_auto_workers_are_the_cpus_shared_by_the_nodes_processes_less_one(monkeypatch, cpus, processes,
                                                                           workers):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)))
    assert loader_workers("auto", processes) == workers
    assert loader_workers(5, processes) == 5  # an explicit count wins


def test_auto_workers_follow_the_trainers_processes_per_node(make_config, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(12)))
    cfg = make_config("trainer=ddp", "trainer.devices=3", "data.num_workers=auto")
    datamodule, _, trainer = build(cfg)
    datamodule.trainer = trainer
    assert datamodule.workers() == 3


@pytest.mark.parametrize("value", ["many", -1, 2.5])
def test_a_worker_count_that_is_neither_a_count_nor_auto_is_refused_naming_the_key(make_config, value):
    with pytest.raises(ConfigError, match="data.num_workers"):
        check_config(make_config(f"data.num_workers={value}"))
    with pytest.raises(ConfigError, match="data.num_workers"):
        loader_workers(value)


def test_real_datasets_default_to_auto_workers_and_the_in_memory_ones_to_none(make_config):
    assert make_config("data=cifar10").data.num_workers == "auto"
    assert make_config("data=mit67").data.num_workers == "auto"
    assert make_config("task=segment", "data=voc").data.num_workers == "auto"
    assert make_config().data.num_workers == 0  # the digits live in memory


def test_gpu_fast_preset_builds_on_the_cpu_with_bf16_channels_last_and_cudnn_autotuning(make_config):
    cfg = make_config("trainer=gpu_fast", "trainer.accelerator=cpu", "data=mit67")
    assert (cfg.trainer.precision, cfg.trainer.benchmark, cfg.channels_last) == ("bf16-mixed", True, True)
    assert (cfg.data.num_workers, cfg.data.persistent_workers, cfg.data.pin_memory) == ("auto", True, "auto")
    cfg = make_config("trainer=gpu_fast", "trainer.accelerator=cpu")
    _, module, trainer = build(cfg)
    assert trainer.precision == "bf16-mixed"
    conv = next(m for m in module.net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def image_folder(tmp_path) -> ImageFolderDataModule:
    """A folder of small RGB JPEGs plus what nvJPEG cannot take: a PNG, a CMYK JPEG, a sideways JPEG."""
    root = write_image_folder(tmp_path / "images", splits=("train", "val"), per_class=4)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "val" / "cat" / "png.png")
    Image.fromarray(pixels).convert("CMYK").save(root / "val" / "cat" / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees
    Image.fromarray(pixels).save(root / "val" / "dog" / "sideways.jpg", exif=exif)
    return root


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal happens only without CUDA")
def test_gpu_decoding_is_refused_without_cuda_with_the_fix(make_config, tmp_path):
    cfg = make_config("data=image_folder", f"data.root={image_folder(tmp_path)}", "data.num_classes=2",
                      "data.decode=gpu")
    with pytest.raises(ConfigError, match="data.decode=gpu .* no CUDA device .* data.decode=cpu"):
        train(cfg)


def test_an_unknown_decoder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="data.decode='nvidia'"):
        ImageFolderDataModule(str(tmp_path), num_classes=2, channels=3, image_size=32, decode="nvidia")


def loaded_batches(root, decode: str, device: torch.device, split: str) -> list[tuple[torch.Tensor, ...]]:
    """Every batch of `split` as the training step gets it, decoded by `decode`'s path on `device`."""
    datamodule = ImageFolderDataModule(str(root), num_classes=2, channels=3, image_size=32, resize_size=36,
                                       batch_size=4, decode=decode)
    datamodule.setup("fit")
    loader = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader}[split]()
    batches = []
    for batch in loader:
        if isinstance(batch, EncodedBatch):
            batches.append(decode_on_device(batch, device, datamodule.device_transforms[split], "RGB"))
        else:
            batches.append((batch[0].to(device), batch[1].to(device)))
    return batches


def test_the_device_decoding_path_gives_the_cpu_paths_batches(tmp_path):
    """On the CPU (torchvision decodes there with libjpeg) the two paths must agree to the bit: the same
    files decoded the same, upright, through the same evaluation transform."""
    root = image_folder(tmp_path)
    cpu = loaded_batches(root, "cpu", torch.device("cpu"), "val")
    device = loaded_batches(root, "gpu", torch.device("cpu"), "val")
    assert len(cpu) == len(device) > 0
    for (images, labels), (device_images, device_labels) in zip(cpu, device, strict=True):
        assert torch.equal(labels, device_labels) and images.shape == device_images.shape
        torch.testing.assert_close(device_images, images, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_decoding_matches_cpu_decoding_to_within_nvjpegs_rounding(tmp_path):
    root = image_folder(tmp_path)
    cpu = loaded_batches(root, "cpu", torch.device("cuda"), "val")
    gpu = loaded_batches(root, "gpu", torch.device("cuda"), "val")
    for (images, labels), (gpu_images, gpu_labels) in zip(cpu, gpu, strict=True):
        assert torch.equal(labels, gpu_labels)
        assert (gpu_images - images).abs().mean() < 0.05  # normalised units: a few levels of 255 at most
