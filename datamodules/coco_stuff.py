"""COCO-Stuff 164k (Caesar et al. 2018): COCO 2017's images with per-pixel labels of 171 thing and stuff
classes, as cocostuff's stuffthingmaps PNGs (raw ids 0-181, of which 11 unused; 255 unlabelled), mapped
to train ids 0..170 as MMSegmentation's COCOStuffDataset does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from core.errors import MissingDataError
from datamodules.segmentation import Pairs, SegmentationDataModule
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

COCO_STUFF_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee',
    'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard',
    'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
    'teddy bear', 'hair drier', 'toothbrush', 'banner', 'blanket', 'branch', 'bridge', 'building-other',
    'bush', 'cabinet', 'cage', 'cardboard', 'carpet', 'ceiling-other', 'ceiling-tile', 'cloth', 'clothes',
    'clouds', 'counter', 'cupboard', 'curtain', 'desk-stuff', 'dirt', 'door-stuff', 'fence', 'floor-marble',
    'floor-other', 'floor-stone', 'floor-tile', 'floor-wood', 'flower', 'fog', 'food-other', 'fruit',
    'furniture-other', 'grass', 'gravel', 'ground-other', 'hill', 'house', 'leaves', 'light', 'mat', 'metal',
    'mirror-stuff', 'moss', 'mountain', 'mud', 'napkin', 'net', 'paper', 'pavement', 'pillow', 'plant-other',
    'plastic', 'platform', 'playingfield', 'railing', 'railroad', 'river', 'road', 'rock', 'roof', 'rug',
    'salad', 'sand', 'sea', 'shelf', 'sky-other', 'skyscraper', 'snow', 'solid-other', 'stairs', 'stone',
    'straw', 'structural-other', 'table', 'tent', 'textile-other', 'towel', 'tree', 'vegetable', 'wall-brick',
    'wall-concrete', 'wall-other', 'wall-panel', 'wall-stone', 'wall-tile', 'wall-wood', 'water-other',
    'waterdrops', 'window-blind', 'window-other', 'wood',
)
# The raw ids of COCO's 91 thing categories that COCO never annotated (their ids minus one).
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
USED_IDS = tuple(i for i in range(182) if i not in UNUSED_IDS)
SPLITS = {"train": "train2017", "val": "val2017"}


def stuffthingmaps_label_map(ignore_index: int = 255) -> torch.Tensor:
    """Lookup table raw id -> train id: the 171 used ids in order -> 0..170, everything else ignored."""
    table = torch.full((256,), ignore_index, dtype=torch.long)
    table[list(USED_IDS)] = torch.arange(len(USED_IDS))
    return table


class COCOStuffDataModule(SegmentationDataModule):
    """`<root>/annotations/{train2017,val2017}/*.png` (stuffthingmaps_trainval2017.zip) labelling the COCO
    images of `<image_root>/{train2017,val2017}/*.jpg` (default `<root>/images`, cocostuff's layout; a
    COCO folder shared with data=coco works too). Trains on train2017, validates and tests on val2017."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, root: str, image_root: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.root = Path(root).expanduser()
        self.image_root = Path(image_root).expanduser() if image_root else self.root / "images"

    def allowed_mask_values(self) -> list[int]:
        return [*USED_IDS, 255]

    def split_pairs(self, split: str) -> Pairs:
        """(image, stuffthingmap) pairs of `train2017` or `val2017`, one per map."""
        maps = self.root / "annotations" / split
        images = self.image_root / split
        if not maps.is_dir() or not images.is_dir():
            missing = maps if not maps.is_dir() else images
            raise MissingDataError(
                f"COCO-Stuff folder {missing} does not exist. data=coco_stuff reads <root>/annotations/"
                "{train2017,val2017}/*.png (stuffthingmaps_trainval2017.zip unzipped into "
                "<root>/annotations) and the COCO 2017 images in <root>/images/{train2017,val2017}/*.jpg (or "
                "data.image_root/{train2017,val2017}): set data.root (and data.image_root)."
            )
        return [(images / f"{mask.stem}.jpg", mask) for mask in sorted(maps.glob("*.png"))]

    def build_datasets(self) -> dict[str, Dataset]:
        self.classes = list(COCO_STUFF_CLASSES)
        val = self.split_pairs(SPLITS["val"])
        pairs = {"train": self.split_pairs(SPLITS["train"]), "val": val, "test": val}
        return self.file_datasets(pairs, stuffthingmaps_label_map(self.ignore_index))
