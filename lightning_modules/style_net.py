"""Feed-forward style transfer: an image-to-image network trained with task=style's perceptual losses.

The loss network (VGG19, VGG16 or MobileNetV3 features) is frozen, evaluated, truncated after its
deepest used layer and kept out of checkpoints; AdaIN measures its losses with its own encoder.
Validation and test style whole held-out images in every evaluation style and report the Gatys
objective of the results (content, style, TV and their weighted total), so that runs and sweeps
compare on one number, and `loss`, the training objective on those images (the monitored metric).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, SumMetric

from core.errors import ConfigError
from lightning_modules.nets.layer_features import LayerFeatures
from lightning_modules.nets.loss_networks import build_loss_network
from lightning_modules.nets.transformer_net import style_weights_for
from lightning_modules.optimization import ParamGroups, configure_optimization
from lightning_modules.style_losses import (
    STYLE_LOSSES,
    LossWeights,
    mean_std,
    perceptual_losses,
    style_statistic,
)

CONTENT_TARGETS = ("content", "adain")
TERMS = ("content", "style", "tv", "total")
Statistic = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def quiet_design_warnings() -> None:
    """Silence Lightning's warning about what this task does by design: the loss network is in eval mode."""
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def as_constants(module: nn.Module) -> nn.Module:
    """A frozen module whose parameters and buffers are re-registered as non-persistent buffers: they
    move with the module to its device but are in no state dict (hence no checkpoint) and no optimizer."""
    for submodule in module.modules():
        for name, param in list(submodule._parameters.items()):
            if param is not None:
                del submodule._parameters[name]
                submodule.register_buffer(name, param.detach(), persistent=False)
        submodule._non_persistent_buffers_set.update(submodule._buffers)
    return module


def pick(statistic: Statistic, index: torch.Tensor) -> Statistic:
    """Rows `index` of a per-style statistic (a tensor, or a (mean, std) pair of tensors)."""
    if isinstance(statistic, tuple):
        return statistic[0][index], statistic[1][index]
    return statistic[index]


def stack(statistics: list[Statistic]) -> Statistic:
    """Per-style statistics (each with a batch of one) as one tensor (or pair) with a row per style."""
    if isinstance(statistics[0], tuple):
        return torch.cat([s[0] for s in statistics]), torch.cat([s[1] for s in statistics])
    return torch.cat(statistics)


@dataclass
class StyleTargets:
    """What each fixed (or evaluation) style is: its name, per layer its Gram matrix and its statistic
    for the training style loss, and (AdaIN) its code, the channel statistics AdaIN gives the content."""

    names: list[str]
    grams: dict[str, torch.Tensor]
    statistics: dict[str, Statistic]
    codes: tuple[torch.Tensor, torch.Tensor] | None


class StyleNetModule(pl.LightningModule):
    """Trains `net` (model=transformer_net, multistyle_net or adain) to style content images."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        loss_network: Mapping[str, Any] | None,
        content_layers: list[str],
        style_layers: Mapping[str, float] | Sequence[str],
        content_weight: float = 1.0,
        style_weight: float = 1e5,
        tv_weight: float = 0.0,
        style_loss: str = "gram",
        content_target: str = "content",
        scheduler: dict[str, Any] | None = None,
        param_groups: ParamGroups | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        quiet_design_warnings()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "param_groups"])
        self.param_groups = param_groups
        if style_loss not in STYLE_LOSSES:
            raise ConfigError(f"task.style_loss={style_loss!r}: choose gram (Gatys, Johnson) or mean_std "
                              "(AdaIN).")
        if content_target not in CONTENT_TARGETS:
            raise ConfigError(f"task.content_target={content_target!r}: choose content (the content image's "
                              "features) or adain (AdaIN's target features, model=adain only).")
        self.conditioning = getattr(net, "conditioning", "none")
        self.content_layers = list(content_layers)
        self.style_layers = (dict(style_layers) if isinstance(style_layers, Mapping)
                             else {layer: 1.0 for layer in style_layers})
        self.weights = LossWeights(content_weight, style_weight, tv_weight)
        self.style_kind = style_loss
        self.content_target = content_target
        layers = sorted({*self.content_layers, *self.style_layers})
        if loss_network is None:  # only running the trained network (predict, export, serve)
            self.loss_network = None
        elif self.conditioning == "style_image":
            self.check_adain(net, loss_network, layers)
            net.encoder.capture(sorted({*layers, net.layer}))
            self.loss_network: LayerFeatures | None = None
        else:
            if content_target == "adain":
                raise ConfigError("task.content_target=adain needs model=adain: only AdaIN has a target in "
                                  "feature space. Use task.content_target=content.")
            self.loss_network = as_constants(build_loss_network(**loss_network, layers=layers))
            self._ddp_params_and_buffers_to_ignore = [f"loss_network.{name}"
                                                      for name, _ in self.loss_network.named_buffers()]
        self.net = torch.compile(net) if compile else net
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({term: MeanMetric().set_dtype(torch.float64) for term in (*TERMS, "loss")})
            for stage in ("val", "test")
        })
        self.train_images = SumMetric()
        self._targets: StyleTargets | None = None
        self._logged: set[str] = set()  # stages whose metric objects are logged this epoch

    def check_adain(self, net: nn.Module, loss_network: Mapping[str, Any], layers: list[str]) -> None:
        """AdaIN measures its losses with its own encoder: the loss network must be that encoder."""
        encoder = net.encoder
        if str(loss_network.get("arch")).upper() != encoder.label.upper():
            raise ConfigError(
                f"model=adain measures its losses with its encoder ({encoder.label}), but the loss network "
                f"is {loss_network.get('arch')}: choose loss_network={encoder.label.lower()} "
                "(model.encoder_arch follows task.loss_network.arch unless set apart)."
            )
        deepest = encoder.all_names.index(net.layer)
        beyond = [layer for layer in layers if layer not in encoder.all_names[: deepest + 1]]
        if beyond:
            valid = ", ".join(encoder.all_names[: deepest + 1])
            raise ConfigError(f"task layers {beyond} are not in AdaIN's encoder, which ends at {net.layer}: "
                              f"choose layers up to {net.layer} ({valid}).")
        if self.content_target == "adain" and self.content_layers != [net.layer]:
            raise ConfigError(f"task.content_target=adain compares the result's {net.layer} features with "
                              f"AdaIN's target: set task.content_layers=[{net.layer}].")

    def measure(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss network's features of `image` at the task's layers."""
        network = self.loss_network if self.loss_network is not None else self.network.encoder
        return network(image)

    @property
    def network(self) -> nn.Module:
        """The trained network itself (unwrapped from torch.compile)."""
        return getattr(self.net, "_orig_mod", self.net)

    # -- style targets ---------------------------------------------------------------------------

    @torch.no_grad()
    def style_targets(self) -> StyleTargets:
        """The targets of the datamodule's styles, computed once on this module's device."""
        device = self.device
        if self._targets is not None and next(iter(self._targets.grams.values())).device == device:
            return self._targets
        datamodule = self.trainer.datamodule
        styles = datamodule.styles
        self.check_styles(datamodule)
        grams: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.style_layers}
        statistics: dict[str, list[Statistic]] = {layer: [] for layer in self.style_layers}
        codes = []
        for _, image in styles:
            image = image.to(device)
            features = self.measure(image)
            for layer in self.style_layers:
                grams[layer].append(style_statistic(features[layer], "gram"))
                statistics[layer].append(style_statistic(features[layer], self.style_kind))
            if self.conditioning == "style_image":
                codes.append(self.network.style_code(image))
        self._targets = StyleTargets(
            [name for name, _ in styles], {k: torch.cat(v) for k, v in grams.items()},
            {k: stack(v) for k, v in statistics.items()}, stack(codes) if codes else None,
        )
        return self._targets

    def check_styles(self, datamodule: Any) -> None:
        """The data's styles fit the network: as many as a multi-style network learns, one for Johnson's."""
        count = len(datamodule.styles)
        names = ", ".join(name for name, _ in datamodule.styles)
        if count == 0:
            raise ConfigError("The data gives no style image: set data.style (a file, skimage:<name> or a "
                              "list).")
        if datamodule.samples_styles and self.conditioning != "style_image":
            raise ConfigError("This data draws a new style image for every crop (a collection such as "
                              "WikiArt), which only model=adain can learn from: use model=adain, or give "
                              "fixed styles with data.style.")
        if self.conditioning == "none" and count != 1:
            raise ConfigError(f"model=transformer_net learns one style, and data.style names {count} "
                              f"({names}): give one style image, or use model=multistyle_net (with "
                              "model.num_styles) to learn several in one network.")
        if self.conditioning == "style_weights" and count != self.network.num_styles:
            raise ConfigError(f"model.num_styles={self.network.num_styles}, but data.style names {count} "
                              f"style image(s) ({names}): set model.num_styles={count}, or give "
                              f"{self.network.num_styles} images.")

    # -- styling ---------------------------------------------------------------------------------

    def stylize(self, content: torch.Tensor, style_index: torch.Tensor,
                code: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network's result for each content image in its style (an index into the fixed styles, or
        for AdaIN a style code), and AdaIN's target features (None for other networks)."""
        if self.conditioning == "none":
            return self.net(content), None
        if self.conditioning == "style_weights":
            return self.net(content, style_weights_for(style_index, self.network.num_styles)), None
        if code is None:
            code = pick(self.style_targets().codes, style_index)
        return self.network.transfer_with_target(content, *code)

    def objective(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The training objective's terms and total on a batch of crops, each with its style."""
        content = batch["content"]
        code = None
        if "style" in batch:  # a collection: each crop's own style image
            with torch.no_grad():
                style_features = self.measure(batch["style"])
            style_targets = {layer: style_statistic(style_features[layer], self.style_kind)
                             for layer in self.style_layers}
            code = mean_std(style_features[self.network.layer])
            index = torch.zeros(content.shape[0], dtype=torch.long, device=content.device)
        else:
            index = batch["style_index"]
            style_targets = {layer: pick(statistic, index)
                             for layer, statistic in self.style_targets().statistics.items()}
        output, adain_target = self.stylize(content, index, code)
        features = self.measure(output)
        return perceptual_losses(output, features, self.content_targets(content, adain_target, features),
                                 style_targets, self.style_layers, self.weights, self.style_kind)

    def content_targets(self, content: torch.Tensor, adain_target: torch.Tensor | None,
                        features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the content term compares the result's `features` with: the content image's, or AdaIN's
        target (made from the content padded to a multiple of 8: cut to the result's features)."""
        if self.content_target == "adain":
            height, width = features[self.network.layer].shape[-2:]
            return {self.network.layer: adain_target.detach()[..., :height, :width]}
        with torch.no_grad():
            features = self.measure(content)
        return {layer: features[layer] for layer in self.content_layers}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.objective(batch)
        size = batch["content"].shape[0]
        self.log("train/loss", losses["total"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log_dict({f"train/{term}_loss": losses[term] for term in ("content", "style", "tv")},
                      on_step=False, on_epoch=True, batch_size=size)
        self.train_images.update(size)
        if self.first_log_this_epoch("train"):  # a metric object, computed by Lightning at epoch end
            self.log("train/images", self.train_images, on_step=False, on_epoch=True)
        return losses["total"]

    def first_log_this_epoch(self, stage: str) -> bool:
        """Whether `stage`'s metric objects are yet to be logged this epoch (once is enough: logging them
        on every batch would move their state each time)."""
        first = stage not in self._logged
        self._logged.add(stage)
        return first

    def on_train_epoch_start(self) -> None:
        self._logged.discard("train")

    def on_validation_epoch_start(self) -> None:
        self._logged.discard("val")

    def on_test_epoch_start(self) -> None:
        self._logged.discard("test")

    def on_fit_start(self) -> None:
        self.style_targets()  # checks that the data's styles fit the network before the first step

    def on_test_start(self) -> None:
        self.style_targets()

    # -- evaluation ------------------------------------------------------------------------------

    def style_variants(self, content: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """`content` (1, 3, H, W) in each evaluation style, clamped to [0, 1]: (style name, image) pairs."""
        targets = self.style_targets()
        results = []
        for index, name in enumerate(targets.names):
            style_index = torch.full((content.shape[0],), index, dtype=torch.long, device=content.device)
            results.append((name, self.stylize(content, style_index)[0].clamp(0, 1)))
        return results

    def evaluate(self, batch: dict[str, Any], stage: str) -> None:
        """Update the stage's metrics with the Gatys objective (and the training objective) of the whole
        image in every evaluation style."""
        content = batch["content"]
        targets = self.style_targets()
        content_features = self.measure(content)
        gatys_content = {layer: content_features[layer] for layer in self.content_layers}
        metrics = self.metrics[stage]
        for index in range(len(targets.names)):
            style_index = torch.full((content.shape[0],), index, dtype=torch.long, device=content.device)
            output, adain_target = self.stylize(content, style_index)
            output = output.clamp(0, 1)
            features = self.measure(output)
            grams = {layer: gram[style_index] for layer, gram in targets.grams.items()}
            gatys = perceptual_losses(output, features, gatys_content, grams, self.style_layers, self.weights)
            for term in TERMS:
                metrics[term].update(gatys[term].detach())
            if self.style_kind == "gram" and self.content_target == "content":
                metrics["loss"].update(gatys["total"].detach())
            else:
                statistics = {layer: pick(s, style_index) for layer, s in targets.statistics.items()}
                adain = self.content_target == "adain"
                goal = self.content_targets(content, adain_target, features) if adain else gatys_content
                objective = perceptual_losses(output, features, goal, statistics, self.style_layers,
                                              self.weights, self.style_kind)
                metrics["loss"].update(objective["total"].detach())
        if self.first_log_this_epoch(stage):
            names = {"loss": "loss", **{term: f"{term}_loss" for term in TERMS}}
            self.log_dict({f"{stage}/{names[term]}": metric for term, metric in metrics.items()},
                          on_step=False, on_epoch=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluate(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        total_steps = self.trainer.estimated_stepping_batches
        batches = self.trainer.num_training_batches
        finite = batches != float("inf")
        steps_per_epoch = max(1, batches // self.trainer.accumulate_grad_batches) if finite else None
        return configure_optimization(self.network, self.optimizer, self.scheduler, total_steps=total_steps,
                                      steps_per_epoch=steps_per_epoch, param_groups=self.param_groups)
