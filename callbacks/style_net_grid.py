"""The held-out images styled by the network in training: content | one result per style, each epoch."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from callbacks.figure_logging import image_loggers, log_figure  # noqa: E402

Row = tuple[str, torch.Tensor, list[tuple[str, torch.Tensor]]]  # name, content, (style, result) pairs


def stylized_grid(rows: list[Row]) -> plt.Figure:
    """One row per content image: the content, then its result in each style, titled."""
    columns = 1 + max(len(results) for _, _, results in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.4 * columns, 2.4 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for (name, content, results), row in zip(rows, axes, strict=True):
        for ax, (title, image) in zip(row, [(name, content), *results], strict=False):
            ax.imshow(image[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.set_title(title, fontsize=8)
    figure.tight_layout()
    return figure


class StyleNetGrid(pl.Callback):
    """After each validation (and the test) the first `num_images` held-out images of the data, in
    every evaluation style, as one figure: to every logger that takes images and to
    `<run dir>/validation/epoch<N>.png` (`test.png`). Drawn by the global rank 0 only, from the
    dataset itself, so that it shows the same images however many processes share the evaluation."""

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = num_images

    @torch.no_grad()
    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str, file_name: str) -> None:
        """Style the first images of `split`, save the figure as `file_name` and log it."""
        if not trainer.is_global_zero or self.num_images <= 0:
            return
        dataset = trainer.datamodule.datasets[split]
        rows = []
        for index in range(min(self.num_images, len(dataset))):
            item = dataset[index]
            content = item["content"].unsqueeze(0).to(pl_module.device)
            rows.append((item["name"], content, pl_module.style_variants(content)))
        if not rows:
            return
        figure = stylized_grid(rows)
        folder = Path(trainer.default_root_dir) / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder / file_name, dpi=100)
        if image_loggers(trainer):
            log_figure(trainer, f"{split}/stylized", figure)
        plt.close(figure)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.draw(trainer, pl_module, "val", f"epoch{trainer.current_epoch:03d}.png")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.draw(trainer, pl_module, "test", "test.png")
