"""MIT Indoor Scenes (Quattoni & Torralba, CVPR 2009): 67 classes, official train/test lists."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive, download_url

from core.errors import DataError, MissingDataError
from datamodules.image_files import check_files_exist, is_clutter
from datamodules.image_folder import ImageFolderDataModule, Samples

IMAGES_URL = "http://groups.csail.mit.edu/vision/LabelMe/NewImages/indoorCVPR_09.tar"
LIST_URLS = {
    "TrainImages.txt": "https://web.mit.edu/torralba/www/TrainImages.txt",
    "TestImages.txt": "https://web.mit.edu/torralba/www/TestImages.txt",
}


def read_image_list(list_file: Path, images_dir: Path, class_to_idx: dict[str, int]) -> Samples:
    """Samples of a list file whose lines are `<class>/<file name>` relative to `images_dir`."""
    samples = []
    text = list_file.read_text(encoding="utf-8", errors="strict")
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip().replace("\\", "/")
        if not entry:
            continue
        class_name = entry.split("/", 1)[0]
        if "/" not in entry or class_name not in class_to_idx:
            raise DataError(
                f"{list_file}:{number}: {entry!r} is not <class>/<file> with a class folder "
                f"of {images_dir}. Is this the list file of this copy of MIT67?"
            )
        samples.append((images_dir / entry, class_to_idx[class_name]))
    if not samples:
        raise DataError(f"{list_file} lists no images: restore the list file of your MIT67 copy "
                        "(one <class>/<file> per line), or set data.download=true to fetch it.")
    return samples


class MIT67DataModule(ImageFolderDataModule):
    """`<root>/Images/<class>/<file>` with `TrainImages.txt` and `TestImages.txt` beside it."""

    def fetch(self) -> None:
        if not (self.root / "Images").is_dir():
            download_and_extract_archive(IMAGES_URL, download_root=str(self.root))
        for name, url in LIST_URLS.items():
            if not (self.root / name).is_file():
                download_url(url, str(self.root), filename=name)

    def find_samples(self) -> dict[str, Samples]:
        images_dir = self.root / "Images"
        missing = [p for p in (images_dir, *(self.root / n for n in LIST_URLS)) if not p.exists()]
        if missing:
            raise MissingDataError(
                f"MIT67 not found: {', '.join(map(str, missing))} missing. Expected "
                f"{self.root}/Images/<class>/<image> with TrainImages.txt and TestImages.txt "
                f"beside Images/ (from {IMAGES_URL} and web.mit.edu/torralba/www/). Set "
                "data.root to your copy, or data.download=true to download it there."
            )
        self.classes = sorted(d.name for d in images_dir.iterdir() if d.is_dir() and not is_clutter(d.name))
        class_to_idx = {name: i for i, name in enumerate(self.classes)}
        splits = {}
        for split, list_name in (("train", "TrainImages.txt"), ("test", "TestImages.txt")):
            splits[split] = read_image_list(self.root / list_name, images_dir, class_to_idx)
            check_files_exist(splits[split], str(self.root / list_name))
        return splits
