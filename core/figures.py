"""Figures every layer may draw: colour palettes and colourised masks, overlays, legends, image grids."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


def voc_palette(num_classes: int) -> torch.Tensor:
    """Pascal VOC's colour map, (num_classes, 3) uint8: class 0 black, 1 maroon, 2 green, ..."""
    colours = torch.zeros(num_classes, 3, dtype=torch.uint8)
    for index in range(num_classes):
        value, rgb = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colours[index] = torch.tensor(rgb, dtype=torch.uint8)
    return colours


def dataset_palette(datamodule: object, num_classes: int) -> torch.Tensor:
    """The datamodule's own class colours (Cityscapes, ADE20K), or else Pascal VOC's colour map."""
    palette = getattr(datamodule, "palette", None)
    if palette is not None and len(palette) == num_classes:
        return torch.tensor(palette, dtype=torch.uint8)
    return voc_palette(num_classes)


def colourize(mask: torch.Tensor, palette: torch.Tensor, ignore_colour: int = 255) -> torch.Tensor:
    """(H, W) class indices -> (3, H, W) floats in [0, 1]; out-of-palette values (ignore) in white."""
    known = mask < len(palette)
    colours = palette[torch.where(known, mask, 0)].permute(2, 0, 1).float() / 255
    return torch.where(known, colours, torch.full_like(colours, ignore_colour / 255))


def overlay(
    image: torch.Tensor, mask: torch.Tensor, palette: torch.Tensor, alpha: float = 0.6
) -> torch.Tensor:
    """Blend a colourized mask over an RGB image in [0, 1]."""
    return (1 - alpha) * image + alpha * colourize(mask, palette)


def upscaled(grid: torch.Tensor, min_side: int) -> torch.Tensor:
    """(3, H, W) enlarged by the smallest whole factor that makes its longer side >= `min_side` (nearest)."""
    factor = math.ceil(min_side / max(grid.shape[-2:]))
    return F.interpolate(grid[None], scale_factor=factor, mode="nearest")[0] if factor > 1 else grid


def legend(names: dict[int, str], palette: torch.Tensor, width: int, ignore_index: int) -> torch.Tensor:
    """(3, h, width) floats: a colour swatch and the name of each class in `names`, in rows that fit."""
    font = ImageFont.load_default(size=14)
    entry = 20 + max(int(font.getlength(name)) for name in names.values()) + 16
    per_row = max(1, width // entry)
    rows = math.ceil(len(names) / per_row)
    strip = Image.new("RGB", (width, rows * 22 + 4), "white")
    pen = ImageDraw.Draw(strip)
    for position, (index, name) in enumerate(names.items()):
        x, y = (position % per_row) * entry + 4, (position // per_row) * 22 + 4
        colour = tuple(palette[index].tolist()) if index != ignore_index else (255, 255, 255)
        pen.rectangle((x, y, x + 14, y + 14), fill=colour, outline="black")
        pen.text((x + 20, y), name, fill="black", font=font)
    return torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1).float() / 255


def figure_to_image(figure: Any) -> np.ndarray:
    """A matplotlib figure rendered to an (H, W, 3) uint8 array."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def subplot_grid(count: int, cell_height: float) -> tuple[Any, np.ndarray]:
    """A near-square matplotlib grid for `count` images, 2 inches wide each, every axis hidden."""
    import matplotlib.pyplot as plt

    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(2 * cols, cell_height * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return figure, axes


def denormalize(images: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """Undo `Normalize(mean, std)` and clamp to [0, 1] for display."""
    if mean is None or std is None:
        return images.clamp(0, 1)
    mean = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


# Families with Chinese, Japanese and Korean glyphs (Debian's fonts-wqy-microhei and fonts-noto-cjk,
# macOS's and Windows' own), and the file names they come in, for a font cache built before they were.
CJK_FAMILIES = ("WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans CJK JP", "Noto Sans CJK SC",
                "Source Han Sans", "Droid Sans Fallback", "Hiragino Sans", "PingFang SC", "Microsoft YaHei",
                "Yu Gothic", "Malgun Gothic", "AppleGothic")
CJK_FILES = ("wqy-", "notosanscjk", "sourcehansans", "droidsansfallback", "hiragino", "pingfang", "msyh",
             "yugoth", "malgun", "applegothic")


def title_fonts() -> list[str]:
    """Matplotlib font families for text in any script: DejaVu Sans, then each installed CJK family
    (matplotlib falls back glyph by glyph along the list). A CJK font installed after matplotlib built
    its font cache is found among the system's fonts and added."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    if not set(CJK_FAMILIES) & {font.name for font in manager.ttflist}:
        for path in font_manager.findSystemFonts():
            if any(part in path.lower().rsplit("/", 1)[-1] for part in CJK_FILES):
                try:
                    manager.addfont(path)
                except (OSError, RuntimeError):  # a font file FreeType cannot read: not ours to fix
                    continue
    installed = {font.name for font in manager.ttflist}
    return ["DejaVu Sans", *(family for family in CJK_FAMILIES if family in installed)]



def drawable(text: str, families: list[str]) -> bool:
    """Whether every character of `text` has a glyph in one of the font `families` (else it would be
    drawn as an empty box)."""
    from matplotlib import font_manager, ft2font

    fonts = [ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties(family=family)))
             for family in families]
    return all(any(font.get_char_index(ord(character)) for font in fonts)
               for character in text if not character.isspace())


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(1 or 3, H, W) -> (3, H, W): grayscale repeated, colour kept (more channels: the first three)."""
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]


_COLOUR_MAPS: dict[str, torch.Tensor] = {}


def colour_map(values: torch.Tensor, name: str = "jet") -> torch.Tensor:
    """(H, W) values in [0, 1] -> (3, H, W) colours of matplotlib's colour map `name` (256 levels)."""
    if name not in _COLOUR_MAPS:
        import matplotlib

        table = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]
        _COLOUR_MAPS[name] = torch.from_numpy(table).float()
    table = _COLOUR_MAPS[name]
    levels = (values.clamp(0, 1) * 255).round().long().cpu()
    return table[levels].permute(2, 0, 1)


def heatmap_overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """A (H, W) map in [0, 1] in the jet colour map blended over an image (1 or 3, H, W) in [0, 1]."""
    return (1 - alpha) * to_rgb(image).cpu() + alpha * colour_map(heat)


def captioned_grid(tiles: list[torch.Tensor], captions: list[str], columns: int, min_tile: int = 96,
                   font_size: int = 12, padding: int = 4) -> torch.Tensor:
    """Tiles ((1 or 3, h, w) in [0, 1], one size) in rows of `columns`, each captioned below: (3, H, W).

    Small tiles are enlarged (nearest) by a whole factor to at least `min_tile` pixels; a caption line
    too long for its tile is cut.
    """
    factor = math.ceil(min_tile / max(tiles[0].shape[-2:]))  # as upscaled(), on the small uint8 tiles
    tiles = [np.repeat(np.repeat(to_uint8(to_rgb(tile.cpu())), factor, 0), factor, 1) for tile in tiles]
    height, width = tiles[0].shape[:2]
    font = ImageFont.load_default(size=font_size)
    lines = max((caption.count("\n") + 1 for caption in captions), default=0)
    strip = lines * (font_size + 3) + 4 if lines else 0
    rows = math.ceil(len(tiles) / columns)
    canvas = Image.new("RGB", (columns * (width + padding) + padding,
                               rows * (height + strip + padding) + padding), "white")
    pen = ImageDraw.Draw(canvas)
    for index, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        row, column = divmod(index, columns)
        x, y = padding + column * (width + padding), padding + row * (height + strip + padding)
        canvas.paste(Image.fromarray(tile), (x, y))
        fitted = "\n".join(_fit(line, font, width - 2) for line in caption.split("\n"))
        pen.multiline_text((x + 1, y + height + 2), fitted, fill="black", font=font, spacing=3)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) floats in [0, 1] -> (H, W, C) uint8 (clamped, rounded)."""
    return (image.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def _fit(text: str, font: Any, width: int) -> str:
    while text and font.getlength(text) > width:
        text = text[:-1]
    return text
