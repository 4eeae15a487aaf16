"""Prediction writers: Lightning callbacks that write each image's result once, whichever process ran it.

Lightning's predict loop gives each process a distinct share of the inputs (no padding
repeats), so per-image files are written by the process that predicted them; the CSV,
contact sheet and summaries are gathered on rank 0.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter
from rich.console import Console
from rich.table import Table
from rich.text import Text

from callbacks.figure_logging import tensorboard_writer
from core.figures import drawable, overlay, subplot_grid, title_fonts, voc_palette
from datamodules.image_files import read_image
from lightning_modules.metrics import ClassificationReport, report_metrics


def gather(items: list[Any]) -> list[Any]:
    """Every process's `items`, concatenated (just `items` without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    parts: list[list[Any]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


class PredictionWriter(BasePredictionWriter):
    """What every task's writer shares: the inputs, the run directory, the skipped files. Each input's result
    is the predict step's `result_key` entry for it."""

    result_key = "probabilities"

    def __init__(self, output_dir: str | Path, paths: Sequence[Path], names: Sequence[str],
                 classes: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.paths = list(paths)
        self.names = list(names)
        self.classes = list(classes)
        self.skipped: list[tuple[int, str]] = []
        self.written = 0
        self.metrics: dict[str, float] = {}  # scores for metrics.json (rank 0), beside the run's costs

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        self.skipped += prediction["skipped"]
        for index, result in zip(prediction["index"], prediction[self.result_key], strict=True):
            self.write_one(index, result)
            self.written += 1

    def write_one(self, index: int, result: Any) -> None:
        """Write or keep the result of input `index`."""
        raise NotImplementedError

    def local_results(self) -> list[Any]:
        """This process's share of the run-wide results, gathered from every process at the end."""
        raise NotImplementedError

    def finish(self, trainer: pl.Trainer, results: list[Any]) -> None:
        """Rank 0, with every process's `local_results`: write the run-wide files."""
        raise NotImplementedError

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # collectives: every process calls them, in the same order
        results = gather(self.local_results())
        skipped = sorted(gather(self.skipped))
        written = sum(gather([self.written]))
        self.gathered_skipped = skipped
        if trainer.is_global_zero:
            self.finish(trainer, results)
            if skipped:
                lines = "\n".join(f"{self.paths[i]}: {error}" for i, error in skipped)
                (self.output_dir / "skipped.txt").write_text(lines + "\n")
                listed = "\n  ".join(str(self.paths[i]) for i, _ in skipped[:20])
                print(f"Skipped {len(skipped)} unreadable file(s), listed in "
                      f"{self.output_dir / 'skipped.txt'}:\n  {listed}")
            print(f"Predicted {written} image(s); results in {self.output_dir}")


class ClassificationWriter(PredictionWriter):
    """`predictions.csv` (path, top-k classes and probabilities) and a contact sheet of the first images."""

    def __init__(self, output_dir: str | Path, paths: Sequence[Path], names: Sequence[str],
                 classes: Sequence[str], top_k: int = 5, contact_sheet_images: int = 16) -> None:
        super().__init__(output_dir, paths, names, classes)
        self.top_k = min(top_k, len(classes))
        self.contact_sheet_images = contact_sheet_images
        self.rows: list[tuple[int, list[int], list[float]]] = []

    def write_one(self, index: int, probabilities: torch.Tensor) -> None:
        top = probabilities.topk(self.top_k)
        self.rows.append((index, top.indices.tolist(), top.values.tolist()))

    def local_results(self) -> list[Any]:
        return self.rows

    def finish(self, trainer: pl.Trainer, results: list[Any]) -> None:
        rows = sorted(results)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "predictions.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["path", "name", "index", *(f"{kind}{k}" for k in range(1, self.top_k + 1)
                                                      for kind in ("class", "prob"))])
            for index, classes, probs in rows:
                top = (value for c, p in zip(classes, probs, strict=True)
                       for value in (self.classes[c], f"{p:.6f}"))
                writer.writerow([str(self.paths[index]), self.names[index], index, *top])
        if rows and self.contact_sheet_images:
            self.contact_sheet(rows[: self.contact_sheet_images], trainer)
        if rows:
            self.report(rows)

    def report(self, rows: list[tuple[int, list[int], list[float]]]) -> None:
        """With every input in a folder named by a class: the classification report of the top-1 classes,
        printed as scikit-learn prints it, in `classification_report.txt`; its scores in `self.metrics`."""
        folders = [self.paths[index].parent.name for index, _, _ in rows]
        labelled = sum(folder in self.classes for folder in folders)
        if labelled < len(rows):
            if labelled:
                print(f"No classification report: {len(rows) - labelled} of {len(rows)} inputs are not in a "
                      f"folder named by a class ({', '.join(self.classes[:5])}, ...).")
            return
        scores = report_metrics(len(self.classes))
        scores.update(torch.tensor([classes[0] for _, classes, _ in rows]),
                      torch.tensor([self.classes.index(folder) for folder in folders]))
        report = ClassificationReport.from_computed(scores.compute(), self.classes)
        averages, per_class = report.metrics("predict", "predict_per_class")
        self.metrics = {"predict/acc": report.accuracy, **averages, **per_class}
        (self.output_dir / "classification_report.txt").write_text(report.text())
        print(f"Classification report (labels from the input folders' names):\n{report.text()}")

    def contact_sheet(self, rows: list[tuple[int, list[int], list[float]]], trainer: pl.Trainer) -> None:
        """The first images titled with their top-1 class and probability: PNG and TensorBoard."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fonts = title_fonts()
        figure, axes = subplot_grid(len(rows), cell_height=2.3)
        for ax, (index, classes, probs) in zip(axes.flat, rows, strict=False):
            ax.imshow(read_image(self.paths[index], "RGB").permute(1, 2, 0).numpy())
            name, predicted = self.names[index][-18:], self.classes[classes[0]]
            # what no installed font can draw is named by what predictions.csv holds beside it
            name = name if drawable(name, fonts) else f"#{index}"
            predicted = predicted if drawable(predicted, fonts) else f"class {classes[0]}"
            ax.set_title(f"{name}\n{predicted} ({probs[0]:.2f})", fontsize=8, fontfamily=fonts)
        figure.tight_layout()
        figure.savefig(self.output_dir / "contact_sheet.png", dpi=80)
        writer = tensorboard_writer(trainer)
        if writer is not None:
            writer.add_figure("predict/contact_sheet", figure)
        plt.close(figure)


class SegmentationWriter(PredictionWriter):
    """Per image: a palette PNG mask at the image's size, an overlay, optionally `.npy` probabilities;
    `class_fractions.csv`: each class's share of all predicted pixels."""

    def __init__(self, output_dir: str | Path, paths: Sequence[Path], names: Sequence[str],
                 classes: Sequence[str], save_probabilities: bool = False,
                 overlay_alpha: float = 0.5) -> None:
        super().__init__(output_dir, paths, names, classes)
        self.save_probabilities = save_probabilities
        self.overlay_alpha = overlay_alpha
        self.palette = voc_palette(max(len(classes), 1))
        self.pixel_counts = torch.zeros(len(classes), dtype=torch.long)

    def target(self, folder: str, index: int, suffix: str) -> Path:
        """`<run dir>/<folder>/<input's relative name><suffix>`, its folder created."""
        path = self.output_dir / folder / (self.names[index] + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_one(self, index: int, probabilities: torch.Tensor) -> None:
        mask = probabilities.argmax(0)
        self.pixel_counts += torch.bincount(mask.flatten(), minlength=len(self.classes))
        palette_mask = Image.fromarray(mask.to(torch.uint8).numpy(), mode="P")
        palette_mask.putpalette(self.palette.flatten().tolist())
        palette_mask.save(self.target("masks", index, ".png"))
        image = read_image(self.paths[index], "RGB").float() / 255
        if image.shape[-2:] == mask.shape:  # a resizing preprocessing has no overlay at the image's size
            blended = overlay(image, mask, self.palette, self.overlay_alpha)
            pixels = (blended * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(self.target("overlays", index, ".png"))
        if self.save_probabilities:
            np.save(self.target("probabilities", index, ".npy"), probabilities.numpy().astype(np.float32))

    def local_results(self) -> list[Any]:
        return [self.pixel_counts]

    def finish(self, trainer: pl.Trainer, results: list[Any]) -> None:
        counts = sum(results, torch.zeros_like(self.pixel_counts))
        fractions = counts.double() / max(int(counts.sum()), 1)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        table = Table(title="Predicted class pixel fractions")
        table.add_column("class")
        table.add_column("fraction", justify="right")
        with open(self.output_dir / "class_fractions.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["class", "pixels", "fraction"])
            for name, count, fraction in zip(self.classes, counts.tolist(), fractions.tolist(), strict=True):
                writer.writerow([name, count, f"{fraction:.6f}"])
                table.add_row(Text(name), f"{fraction:.4f}")  # a class name as given, not rich markup
        Console().print(table)


class StyleWriter(PredictionWriter):
    """`stylized/<name>.png` per image at the size it was styled at, or `stylized/<style>/<name>.png` per
    image and style when a run styles in several (each of a multi-style network's learned styles)."""

    result_key = "images"

    def __init__(self, output_dir: str | Path, paths: Sequence[Path], names: Sequence[str],
                 labels: Sequence[str | None]) -> None:
        super().__init__(output_dir, paths, names, [])
        self.labels = list(labels)

    def target(self, label: str | None, index: int) -> Path:
        """`<run dir>/stylized/[<style>/]<input's relative name>.png`, its folder created."""
        path = self.output_dir / "stylized" / (label or "") / f"{self.names[index]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_one(self, index: int, result: list[torch.Tensor]) -> None:
        for label, image in zip(self.labels, result, strict=True):
            pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(self.target(label, index))

    def local_results(self) -> list[Any]:
        return []

    def finish(self, trainer: pl.Trainer, results: list[Any]) -> None:
        styles = [label for label in self.labels if label]
        where = f"{self.output_dir / 'stylized'}" + (f"/<style>/ ({', '.join(styles)})" if styles else "")
        print(f"Styled images are in {where}")
