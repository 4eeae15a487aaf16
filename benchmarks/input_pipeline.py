"""Input pipeline: training images/s of the MIT67 datamodule's loader against torchvision ImageFolder.

A MIT67-format folder (`Images/<class>/<file>.jpg`, `TrainImages.txt`, `TestImages.txt`) of
realistic JPEGs is generated in a temporary folder: crops of scikit-image's sample photographs
rescaled to 300-800 px, a few grayscale and CMYK. Every loader reads the same training images with
the same v2 transforms (resize 256, random crop 224, flip, normalise), batch size and workers
(= cores); they differ only in decoding:
- datamodule: `datamodules.image_files.read_image`: Pillow's JPEG draft mode (DCT scaling) for
  JPEGs at least twice the resize size, torchvision.io for other JPEGs, Pillow for the rest;
- ImageFolder: torchvision's default loader, Pillow decoding at full size (the baseline);
- torchvision.io: `decode_image` into a tensor at full size.
Each figure is the median, over `--repeats` interleaved epochs after a warm-up epoch, of one epoch.

Then the check before training: on a MIT67-sized folder of `--scan-images` (6,700) small JPEGs
(160-320 px), the threaded header scan that `setup()` runs over every split
(`datamodules.image_files.scan_images`, median of `--repeats`) against one epoch of the
datamodule's training loader over the same folder (after a warm-up epoch).

`--policies`: instead, the datamodule's training loader with each `augment` policy (and
RandomResizedCrop + random erasing), in images/s against `augment=basic`: what a policy costs.

Then the datamodule's training loader against its worker count: 1, 2 and every CPU this process
may use (what `data.num_workers=auto` starts from), in images/s and against one worker. With a CUDA
device, images/s delivered on the GPU, ready for the network: decoding in the workers
(`data.decode=cpu`, `data.num_workers=auto`, pinned batches copied without blocking) against
decoding on the GPU (`data.decode=gpu`: the workers only read the files).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import interleaved_medians, machine_description, median_seconds, parse_args, print_table
from PIL import Image
from skimage import data as samples
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_image

from datamodules.augment import Augment
from datamodules.image_files import scan_images
from datamodules.mit67 import MIT67DataModule
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_crop_train

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel")


def add_options(parser: argparse.ArgumentParser) -> None:
    """Dataset size and loader settings."""
    parser.add_argument("--images", type=int, default=480, help="generated JPEGs")
    parser.add_argument("--classes", type=int, default=8, help="class folders")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scan-images", type=int, default=6700, help="JPEGs for the scan (MIT67: 6,700)")
    parser.add_argument("--scan-only", action="store_true", help="measure only the header scan")
    parser.add_argument("--workers-only", action="store_true",
                        help="measure only images/s against workers, and CPU against GPU decoding")
    parser.add_argument("--policies", action="store_true",
                        help="compare the augment policies' loader images/s against augment=basic")


AUGMENTS = {
    "basic": Augment(policy="basic"),
    "randaugment": Augment(policy="randaugment"),
    "trivialaugment": Augment(policy="trivialaugment"),
    "autoaugment": Augment(policy="autoaugment"),
    "augmix": Augment(policy="augmix"),
    "trivialaugment + RRC + erasing": Augment(policy="trivialaugment", random_resized_crop=True,
                                              random_erasing=0.1),
}


def compare_policies(root: Path, args: argparse.Namespace) -> None:
    """Time the MIT67 datamodule's training loader with each augmentation policy; print images/s."""
    loaders = {}
    for name, augment in AUGMENTS.items():
        datamodule = MIT67DataModule(
            str(root), num_classes=args.classes, channels=3, image_size=224, resize_size=256,
            batch_size=args.batch_size, num_workers=args.workers, persistent_workers=True, augment=augment,
        )
        datamodule.setup("fit")
        loaders[name] = datamodule.train_dataloader()
    images = len(loaders["basic"].dataset)
    seconds = interleaved_medians(
        {name: lambda dl=dl: sum(1 for _ in dl) for name, dl in loaders.items()}, args.repeats)
    rates = {name: images / s for name, s in seconds.items()}
    print_table(f"Training loader by augment policy, {images} images, batch {args.batch_size}, "
                f"{args.workers} workers, median of {args.repeats} epochs", [
                    {"augment": name, "images/s": rate, "vs basic": rate / rates["basic"]}
                    for name, rate in rates.items()])
    print(f"ratio trivialaugment/basic [training loader]: {rates['trivialaugment'] / rates['basic']:.3f}")


def write_mit67_jpegs(root: Path, images: int, classes: int, seed: int = 0,
                      sides: tuple[int, int] = (300, 800)) -> Path:
    """A MIT67-format folder of `images` JPEGs (sample-photo crops, longer side in `sides`); returns root."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(samples, name)()) for name in PHOTOS]
    lines = []
    for i in range(images):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = (int(s * rng.uniform(0.5, 1.0)) for s in (w, h))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        long_side = int(rng.integers(sides[0], sides[1] + 1))
        scale = long_side / max(cw, ch)
        image = photo.crop((left, top, left + cw, top + ch)).resize(
            (max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.BICUBIC)
        if i % 20 == 7:
            image = image.convert("L")
        elif i % 20 == 13:
            image = image.convert("CMYK")
        entry = f"class{i % classes:02d}/img{i:05d}.jpg"
        (root / "Images" / entry).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / "Images" / entry, "JPEG", quality=int(rng.integers(75, 96)))
        lines.append(entry)
    cut = int(0.8 * len(lines))
    (root / "TrainImages.txt").write_text("\n".join(lines[:cut]) + "\n")
    (root / "TestImages.txt").write_text("\n".join(lines[cut:]) + "\n")
    return root


class TensorDecodedImages(Dataset):
    """(path, label) samples decoded by `torchvision.io.decode_image` into RGB tensors."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Any) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(decode_image(str(path), mode=ImageReadMode.RGB)), label


def measure_scan(args: argparse.Namespace) -> None:
    """Time the header scan of every split against one training epoch on a MIT67-sized folder."""
    with tempfile.TemporaryDirectory() as tmp:
        classes = min(67, max(1, args.scan_images // 20))  # MIT67's 67 at full size
        root = write_mit67_jpegs(Path(tmp), args.scan_images, classes, sides=(160, 320))
        datamodule = MIT67DataModule(
            str(root), num_classes=classes, channels=3, image_size=224, resize_size=256,
            batch_size=args.batch_size, num_workers=args.workers, persistent_workers=True,
        )
        datamodule.setup("fit")
        paths = [path for split in ("train", "val", "test") for path, _ in datamodule.datasets[split].samples]
        scan = median_seconds(lambda: scan_images(paths), args.repeats)
        loader = datamodule.train_dataloader()
        epoch = median_seconds(lambda: sum(1 for _ in loader), 1)
    trained = len(datamodule.datasets["train"])
    print_table(f"Header scan of every split ({len(paths)} files) against one training epoch "
                f"({trained} images, batch {args.batch_size}, {args.workers} workers)", [
                    {"what": "scan_images", "seconds": scan, "ms per image": 1000 * scan / len(paths)},
                    {"what": "training epoch", "seconds": epoch, "ms per image": 1000 * epoch / trained},
                ])
    print(f"ratio scan/epoch [pre-training header scan]: {scan / epoch:.3f} (target <= 0.05)")


def main() -> None:
    """Build the three loaders, time their epochs interleaved, print images/s and the ratio; then the scan."""
    args = parse_args(__doc__.splitlines()[0], add_options)
    if args.quick:
        args.images, args.classes, args.repeats, args.scan_images = 48, 4, 1, 200
    print(f"Machine: {machine_description()}; loader workers: {args.workers}")
    if args.workers_only:
        measure_workers_and_decoding(args)
        return
    if not args.scan_only:
        measure_loaders(args)
    if not args.policies:
        measure_scan(args)
    if not (args.scan_only or args.policies):
        measure_workers_and_decoding(args)


def mit67_loader(root: Path, args: argparse.Namespace, workers: int | str, decode: str = "cpu",
                 pin: bool = False) -> tuple[MIT67DataModule, DataLoader]:
    """The MIT67 datamodule's training loader over `root` (batches of args.batch_size, last one dropped)."""
    datamodule = MIT67DataModule(
        str(root), num_classes=args.classes, channels=3, image_size=224, resize_size=256, decode=decode,
        batch_size=args.batch_size, num_workers=workers, persistent_workers=True, pin_memory=pin,
        drop_last=True,
    )
    datamodule.setup("fit")
    return datamodule, datamodule.train_dataloader()


def on_device_epoch(datamodule: MIT67DataModule, loader: DataLoader, device: torch.device) -> int:
    """One epoch of batches made ready on `device` (decoded and transformed there for data.decode=gpu)."""
    count = 0
    for batch in loader:
        images, _ = datamodule.transfer_batch_to_device(batch, device, 0)
        count += len(images)
    torch.cuda.synchronize(device)
    return count


def measure_workers_and_decoding(args: argparse.Namespace) -> None:
    """Loader images/s against the worker count; with CUDA, CPU against GPU decoding, on the device."""
    from datamodules.base import loader_workers

    cpus = loader_workers("auto") + 1
    counts = sorted({1, 2, cpus})
    with tempfile.TemporaryDirectory() as tmp:
        root = write_mit67_jpegs(Path(tmp), args.images, args.classes)
        loaders = {workers: mit67_loader(root, args, workers)[1] for workers in counts}
        seconds = interleaved_medians(
            {workers: lambda dl=dl: sum(len(images) for images, _ in dl) for workers, dl in loaders.items()},
            args.repeats)
        images = len(loaders[1]) * args.batch_size
        rates = {workers: images / s for workers, s in seconds.items()}
        print_table(f"MIT67 training loader against workers, {images} images an epoch, "
                    f"batch {args.batch_size}, median of {args.repeats} epochs", [
                        {"workers": workers, "images/s": rate, "vs 1 worker": rate / rates[1]}
                        for workers, rate in rates.items()])
        print(f"ratio {cpus} workers/1 worker [training loader]: {rates[cpus] / rates[1]:.3f}")
        if not torch.cuda.is_available():
            print("CPU against GPU decoding: skipped, no CUDA device")
            return
        device = torch.device("cuda")
        pipelines = {decode: mit67_loader(root, args, "auto", decode, pin=True) for decode in ("cpu", "gpu")}
        epochs = {decode: lambda p=p: on_device_epoch(*p, device) for decode, p in pipelines.items()}
        seconds = interleaved_medians(epochs, args.repeats)
    rates = {decode: images / s for decode, s in seconds.items()}
    print_table(f"Images/s ready on the GPU, {images} images an epoch, batch {args.batch_size}, "
                f"data.num_workers=auto ({loader_workers('auto')}), median of {args.repeats} epochs", [
                    {"decode": f"data.decode={decode}", "images/s": rate, "vs cpu": rate / rates["cpu"]}
                    for decode, rate in rates.items()])
    print(f"ratio gpu/cpu decode [images/s on the GPU]: {rates['gpu'] / rates['cpu']:.3f}")


def measure_loaders(args: argparse.Namespace) -> None:
    """The three training loaders' images/s on the same generated folder."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_mit67_jpegs(Path(tmp), args.images, args.classes)
        if args.policies:
            compare_policies(root, args)
            return
        datamodule = MIT67DataModule(
            str(root), num_classes=args.classes, channels=3, image_size=224, resize_size=256,
            batch_size=args.batch_size, num_workers=args.workers, persistent_workers=True,
        )
        datamodule.setup("fit")
        train_samples = datamodule.datasets["train"].samples
        transform = resize_crop_train(224, 256, IMAGENET_MEAN, IMAGENET_STD)
        folder = ImageFolder(str(root / "Images"), transform=transform)
        folder.samples = [(str(path), label) for path, label in train_samples]

        def loader(dataset: Dataset) -> DataLoader:
            return DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                              num_workers=args.workers, persistent_workers=args.workers > 0)

        loaders = {
            "ImageFolder (PIL)": loader(folder),
            "torchvision.io": loader(TensorDecodedImages(train_samples, transform)),
            "datamodule (read_image)": datamodule.train_dataloader(),
        }
        seconds = interleaved_medians(
            {name: lambda dl=dl: sum(1 for _ in dl) for name, dl in loaders.items()}, args.repeats)
    rates = {name: len(train_samples) / s for name, s in seconds.items()}
    baseline = rates["ImageFolder (PIL)"]
    print_table(f"Training loader, {len(train_samples)} images, batch {args.batch_size}, "
                f"median of {args.repeats} epochs", [
                    {"loader": name, "images/s": rate, "vs ImageFolder": rate / baseline}
                    for name, rate in rates.items()])
    print(f"ratio datamodule/ImageFolder [training loader]: "
          f"{rates['datamodule (read_image)'] / baseline:.3f} (target >= 1)")


if __name__ == "__main__":
    main()
