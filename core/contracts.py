"""What crosses a boundary between layers or processes: the checkpoint keys, how a new image becomes a
network input (`Preprocessing`), how a segmentation network's outputs become per-pixel logits
(`SegmentationInference`, decided here for checkpoints and exports alike), an export's `model.json`
(`ModelInfo`, with a schema version), and how an Optuna trial and its sweep job find each other."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import CheckpointError, ConfigError

CHECKPOINT_KEY = "visionlab_config"  # the resolved run config (a plain dict) inside every checkpoint
CLASSES_KEY = "visionlab_classes"  # the datamodule's class names, read from the data at training
PRUNED_KEY = "visionlab_pruned"  # a pruned network's layer shapes (and how it was pruned): rebuilds it

STYLES_KEY = "visionlab_styles"  # a style network's learned styles' names, in the order it learned them

# model.json's schema. 1: files written before the version was stored (segmentation's `stride` may be null);
# 2: `schema_version` stored, the task options resolved (a slide export always names its stride);
# 3: `style` (`StyleNetwork`) for the style networks of task=style_net.
MODEL_INFO_VERSION = 3


@dataclass(frozen=True)
class Preprocessing:
    """How a new image becomes a network input: read in colour `mode` ("RGB" or "L"), resized (`resize`:
    None keeps the size, an int sets the shorter side, (height, width) both), centre-cropped to
    `center_crop` (or not, when None), scaled to [0, 1] and normalised with `mean` and `std`."""

    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | tuple[int, int] | None = None
    center_crop: int | None = None

    def __post_init__(self) -> None:
        channels = {"RGB": 3, "L": 1}.get(self.mode)
        if channels is None:
            raise ValueError(f"Preprocessing mode {self.mode!r}: use RGB or L.")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not len(self.mean) == len(self.std) == channels:
            raise ValueError(f"Preprocessing of {self.mode} images needs {channels} mean and std values, "
                             f"got {list(self.mean)} and {list(self.std)}.")
        if isinstance(self.resize, Sequence):
            object.__setattr__(self, "resize", tuple(int(side) for side in self.resize))

    def to_json(self) -> dict[str, Any]:
        """JSON values, as `model.json` stores them."""
        resize = list(self.resize) if isinstance(self.resize, tuple) else self.resize
        return {"mode": self.mode, "resize": resize, "center_crop": self.center_crop,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Preprocessing:
        """The preprocessing `to_json` wrote."""
        return cls(mode=str(data["mode"]), mean=data["mean"], std=data["std"], resize=data.get("resize"),
                   center_crop=data.get("center_crop"))


@dataclass(frozen=True)
class SegmentationInference:
    """`task.inference` (whole or slide), `task.crop_size`, `task.stride` and `task.tta`, checked and with
    the stride resolved: what test and predict do with a checkpoint's network or an exported one."""

    inference: str = "whole"
    crop_size: int | None = None
    stride: int | None = None
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @classmethod
    def from_task(cls, options: Mapping[str, Any]) -> SegmentationInference:
        """From `task.*` options (a run config's or model.json's `task_options`): a null stride becomes two
        thirds of the crop; a ConfigError names an option that cannot work."""
        inference = options.get("inference") or "whole"
        crop_size, stride = options.get("crop_size"), options.get("stride")
        tta = options.get("tta") or {}
        if inference not in ("whole", "slide"):
            raise ConfigError(f"task.inference={inference!r}: use whole or slide.")
        for key, value in (("crop_size", crop_size), ("stride", stride)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"task.{key}={value!r}: give a whole number of pixels > 0 (or null).")
        if inference == "slide" and crop_size is None:
            raise ConfigError("task.inference=slide needs task.crop_size (the window side in pixels).")
        if crop_size is not None and stride is None:
            stride = default_stride(crop_size)
        if inference == "slide" and stride > crop_size:
            raise ConfigError(
                f"task.stride={stride} is larger than task.crop_size={crop_size}: windows {stride} px apart "
                f"would leave stripes of {stride - crop_size} px between them that no window predicts. Give "
                f"task.stride={crop_size} or less (null: two thirds of the window, "
                f"{default_stride(crop_size)}).")
        scales = tuple(float(scale) for scale in (tta.get("scales") or [1.0]))
        if any(scale <= 0 for scale in scales):
            raise ConfigError(f"task.tta.scales={list(scales)}: every scale must be > 0.")
        return cls(str(inference), crop_size, stride, bool(tta.get("flip", False)), scales)

    def task_options(self) -> dict[str, Any]:
        """The options as `task.*` keys (what model.json stores and the command line overrides)."""
        return {"inference": self.inference, "crop_size": self.crop_size, "stride": self.stride,
                "tta": {"flip": self.flip, "scales": list(self.scales)}}

    def logits_options(self) -> dict[str, Any]:
        """Keyword arguments of `lightning_modules.inference.segment_logits`."""
        return {"inference": self.inference, "crop_size": self.crop_size, "stride": self.stride,
                "flip": self.flip, "scales": list(self.scales)}

    def describe(self) -> str:
        """In words, e.g. `whole` or `slide (crop 256, stride 170) + flip`."""
        words = self.inference
        if self.inference == "slide":
            words += f" (crop {self.crop_size}, stride {self.stride})"
        if self.flip:
            words += " + flip"
        if self.scales != (1.0,):
            words += f" + scales {list(self.scales)}"
        return words


def default_stride(crop_size: int) -> int:
    """The stride of a null `task.stride`: two thirds of the window (MMSegmentation's 512/341 ratio)."""
    return max(1, crop_size * 2 // 3)


def stride_follows_crop(task_options: Any, overridden: Sequence[str]) -> None:
    """A `task.crop_size` given on the command line without a `task.stride` slides at two thirds of the
    new window, whatever stride was stored (for a checkpoint's config and an export's options alike)."""
    if "task.crop_size" in overridden and "task.stride" not in overridden and "stride" in task_options:
        task_options["stride"] = None


# The inputs of a style network's inference graph after the content images, by its conditioning.
STYLE_INPUTS: dict[str, tuple[str, ...]] = {
    "none": (),                                        # Johnson et al.: the one style it learned
    "style_weights": ("style_weights",),               # multi-style: (S,) weights over its S learned styles
    "style_image": ("styles", "style_weights", "alpha"),  # AdaIN: (S, 3, h, w) style images, (S,) weights, ()
}


@dataclass(frozen=True)
class StyleNetwork:
    """What a trained style network (task=style_net) takes beside content images in [0, 1]: its
    `conditioning` (a key of `STYLE_INPUTS`), the names of the styles it learned (one for Johnson et al.'s
    network, one per style for a multi-style one, none for AdaIN, which takes style images), the
    smallest image side it takes, and (AdaIN) the smallest style image side."""

    conditioning: str
    styles: tuple[str, ...]
    min_size: int
    style_min_size: int | None = None

    def __post_init__(self) -> None:
        if self.conditioning not in STYLE_INPUTS:
            raise ValueError(f"Style conditioning {self.conditioning!r}: use one of "
                             f"{', '.join(STYLE_INPUTS)}.")
        object.__setattr__(self, "styles", tuple(str(name) for name in self.styles))

    @property
    def inputs(self) -> tuple[str, ...]:
        """The inference graph's inputs after the images."""
        return STYLE_INPUTS[self.conditioning]

    def to_json(self) -> dict[str, Any]:
        """JSON values, as `model.json` stores them (with the graph's inputs, for runtimes)."""
        return {"conditioning": self.conditioning, "styles": list(self.styles), "min_size": self.min_size,
                "style_min_size": self.style_min_size, "inputs": list(self.inputs)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StyleNetwork:
        """The style network `to_json` wrote."""
        return cls(str(data["conditioning"]), tuple(data["styles"]), int(data["min_size"]),
                   data.get("style_min_size"))


@dataclass(frozen=True)
class ModelInfo:
    """An export's `model.json`: all that a runtime needs beside the network file (classes, preprocessing,
    the task's inference options, how the file was made and verified)."""

    task: str
    format: str
    file: str
    classes: list[str]
    num_classes: int
    channels: int
    input_size: list[int] | None
    preprocessing: Preprocessing
    ignore_index: int | None
    task_options: dict[str, Any]
    checkpoint: str
    opset: int | None
    input_name: str
    output_name: str
    dynamic_axes: list[str]
    verification: dict[str, Any]
    versions: dict[str, str]
    int8: dict[str, Any] | None = None  # the INT8 file beside it and its verification (export.quantize=int8)
    tensorrt: dict[str, Any] | None = None  # the engine cache and its verification (export.format=tensorrt)
    style: StyleNetwork | None = None  # task=style_net: what the network takes beside the images
    schema_version: int = MODEL_INFO_VERSION

    def to_json(self) -> dict[str, Any]:
        """JSON values; `mean` and `std` also at the top level, where version 1 put them for runtimes."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["preprocessing"] = self.preprocessing.to_json()
        values["style"] = None if self.style is None else self.style.to_json()
        return {"schema_version": self.schema_version, **values, "mean": list(self.preprocessing.mean),
                "std": list(self.preprocessing.std)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> ModelInfo:
        """The `model.json` at `source` (version 1 to 3), or a CheckpointError saying what is wrong."""
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > MODEL_INFO_VERSION:
            raise CheckpointError(f"{source} has schema_version {version!r}; this visionlab reads versions 1 "
                                  f"to {MODEL_INFO_VERSION}. Update visionlab, or export the model again.")
        fields = [field for field in dataclasses.fields(cls) if field.name != "schema_version"]
        required = [field.name for field in fields if field.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise CheckpointError(f"{source} lacks {', '.join(missing)}: it was not written by "
                                  "`python run.py export.format=...`. Export the model again.")
        values = {field.name: data[field.name] for field in fields if field.name in data}
        try:
            values["preprocessing"] = Preprocessing.from_json(data["preprocessing"])
            if data.get("style") is not None:
                values["style"] = StyleNetwork.from_json(data["style"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: its preprocessing or style network cannot be read ({err}). "
                                  "Export the model again.") from err
        return cls(**values, schema_version=version)


@dataclass(frozen=True)
class SweepJob:
    """Which Hydra job of which sweep runs an Optuna trial. The sweeper records it on the trial (as user
    attributes, in the study's storage) before launching the job; the job's pruning callback finds its
    trial by it. Together they are unique, also across resumed studies (each sweep has its own folder)."""

    sweep_dir: str
    job_num: int

    def user_attrs(self) -> dict[str, str | int]:
        """The trial's user attributes that record this job."""
        return {"hydra_sweep_dir": self.sweep_dir, "hydra_job_num": self.job_num}

    @classmethod
    def of_trial(cls, user_attrs: dict[str, object]) -> SweepJob | None:
        """The job a trial's user attributes record, if any."""
        if "hydra_sweep_dir" not in user_attrs or "hydra_job_num" not in user_attrs:
            return None
        return cls(str(user_attrs["hydra_sweep_dir"]), int(user_attrs["hydra_job_num"]))


PRUNED_AT_EPOCH = "pruned_at_epoch"  # the user attribute a job sets on its trial when it prunes it
