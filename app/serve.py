"""`serve.model=PATH`: a trained model (a checkpoint, model.onnx or model.pt) behind an HTTP endpoint,
with LitServe: POST /predict with an image, GET /health; dynamic batching across requests. A style network
answers with the image in the style `predict.*`'s style options choose."""

from __future__ import annotations

import base64
import contextlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from core.contracts import Preprocessing
from core.errors import CheckpointError, ConfigError

try:  # LitServe's base class when it is installed; the mode says how to install it otherwise
    from litserve import LitAPI
except ImportError:  # pragma: no cover
    LitAPI = object


@dataclass
class ServedModel:
    """A model ready to answer requests: its task, class names, preprocessing, and `results_of`, which maps a
    batch of `app.inputs.collate_inputs` to each image's result (class probabilities, or a stylised image)."""

    task: str
    classes: list[str]
    preprocessing: Preprocessing
    results_of: Callable[[dict[str, Any]], list[torch.Tensor]]
    description: str

    @classmethod
    def load(cls, path: str, overrides: Sequence[str], style: dict[str, Any]) -> ServedModel:
        """A checkpoint of a classify/segment/style_net run, or an exported model.onnx / model.pt (and
        model.json); a style network styles in the one style that `style` (`predict.*`'s options) chooses."""
        source = Path(path).expanduser()
        if source.suffix in (".onnx", ".pt"):
            return cls.exported(source, overrides, style)
        if source.suffix != ".ckpt" and not source.is_file():
            raise CheckpointError(f"serve.model={path}: no such file. Give a .ckpt of a classify, segment or "
                                  "style_net run, or an exported model.onnx / model.pt (and its model.json).")
        return cls.checkpoint(str(source), overrides, style)

    @classmethod
    def labelling(cls, task: str, classes: list[str], preprocessing: Preprocessing,
                  logits_of: Callable[[torch.Tensor], torch.Tensor], description: str) -> ServedModel:
        """A classify or segment model, answering with class probabilities."""
        from lightning_modules.inference import predict_batch

        def probabilities(batch: dict[str, Any]) -> list[torch.Tensor]:
            return predict_batch(batch, logits_of)["probabilities"]

        return cls(task, classes, preprocessing, probabilities, description)

    @classmethod
    def styling(cls, model: Any, style: dict[str, Any], preprocessing: Preprocessing) -> ServedModel:
        """A style network (an `app.stylize.StyleModel`), answering with the image in the chosen style."""
        from app.stylize import StylizeTask, style_choices

        choices = style_choices(style, model.network)
        if len(choices) > 1:
            raise ConfigError(f"serve.model: a request gets one image, and this network learned "
                              f"{len(choices)} styles ({', '.join(model.network.styles)}): choose one with "
                              "predict.style_index=K, or a blend with predict.style_weights=[...].")
        task = StylizeTask(model, choices).eval()
        return cls("style_net", [], preprocessing,
                   lambda batch: [images[0] for images in task.predict_step(batch, 0)["images"]],
                   model.description)

    @classmethod
    def checkpoint(cls, path: str, overrides: Sequence[str], style: dict[str, Any]) -> ServedModel:
        from app.stylize import StyleModel, refuse_style_options
        from app.trained_model import (
            PREDICTABLE_TASKS,
            build_from_checkpoint,
            class_names,
            load_checkpoint,
            style_names,
        )

        config, checkpoint = load_checkpoint(path, overrides, PREDICTABLE_TASKS)
        datamodule, module = build_from_checkpoint(config, checkpoint)
        if config.task_name == "style_net":
            net = module.network
            model = StyleModel.eager(net, style_names(checkpoint, getattr(net, "num_styles", 1)), path)
            return cls.styling(model, style, datamodule.inference_preprocessing())
        refuse_style_options(style, str(config.task_name))
        network = OmegaConf.select(config, "model.name") or str(config.model._target_).rsplit(".", 1)[-1]
        return cls.labelling(str(config.task_name), class_names(checkpoint, int(config.data.num_classes)),
                             datamodule.inference_preprocessing(), module.inference_logits,
                             f"{network} from {Path(path).name} ({module.inference_description()} inference)")

    @classmethod
    def exported(cls, path: Path, overrides: Sequence[str], style: dict[str, Any]) -> ServedModel:
        from app.predict import ExportedTask, exported_task_options
        from app.runtime import ExportedModel, model_info_path, read_model_info
        from app.stylize import StyleModel, refuse_style_options
        from app.trained_model import check_task

        model_info_path(path)  # a missing model.json is named before the model file is read
        try:
            model = ExportedModel(path)
        except CheckpointError:
            raise
        except Exception as err:  # onnxruntime / torch.jit name what is wrong with the file
            raise CheckpointError(f"serve.model={path} cannot be loaded: {type(err).__name__}: "
                                  f"{str(err)[:300]}. Export it again with export.format=...") from err
        info = read_model_info(path)
        check_task(info.task, overrides, str(path))
        if info.style is not None:
            return cls.styling(StyleModel.exported(model, info.style), style, info.preprocessing)
        refuse_style_options(style, info.task)
        task = ExportedTask(model, info.task, exported_task_options(info, overrides))
        return cls.labelling(info.task, list(info.classes), info.preprocessing, task.inference_logits,
                             f"{path.name} ({info.format})")


def mask_png(mask: torch.Tensor, classes: int) -> bytes:
    """A palette PNG of class indices (Pascal VOC colours), as `predict` writes masks."""
    from PIL import Image

    from core.figures import voc_palette

    image = Image.fromarray(mask.to(torch.uint8).numpy(), mode="P")
    image.putpalette(voc_palette(max(classes, 1)).flatten().tolist())
    return png_bytes(image)


def image_png(image: torch.Tensor) -> bytes:
    """An RGB PNG of a (3, H, W) image in [0, 1], as `predict` writes stylised images."""
    from PIL import Image

    return png_bytes(Image.fromarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()))


def png_bytes(image: Any) -> bytes:
    """A PIL image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class ImageAPI(LitAPI):
    """LitServe's API for one image per request: decoded and preprocessed as `predict` does, batched
    with other requests (images of one size predicted together, never padded), answered per request."""

    def __init__(self, model_path: str, overrides: Sequence[str], top_k: int, threads: int,
                 max_batch_size: int = 1, batch_timeout: float = 0.0, style: dict[str, Any] | None = None
                 ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.model_path = model_path
        self.overrides = list(overrides)
        self.top_k = top_k
        self.threads = threads
        self.style = dict(style or {})

    def setup(self, device: str) -> None:
        from datamodules.transforms import preprocessing_transform

        torch.set_num_threads(self.threads)
        self.model = ServedModel.load(self.model_path, self.overrides, self.style)
        self.transform = preprocessing_transform(self.model.preprocessing)

    def decode_request(self, request):  # noqa: ANN001 - LitServe reads the annotation as the request type
        """The JSON that app.uploads.ImageUploads made of the upload: the image, preprocessed."""
        from datamodules.image_files import read_image

        image = read_image(base64.b64decode(request["image"]), self.model.preprocessing.mode)
        return {"image": self.transform(image), "format": request.get("format"),
                "top_k": int(request.get("top_k") or self.top_k)}

    def batch(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        from app.inputs import collate_inputs

        samples = [{"index": i, "image": x["image"], "error": None} for i, x in enumerate(inputs)]
        return {**collate_inputs(samples), "requests": inputs}

    def predict(self, x: dict[str, Any]) -> Any:
        single = "requests" not in x
        batch = self.batch([x]) if single else x
        with torch.inference_mode():  # one size at a time: an answer never depends on its batch mates
            results = self.model.results_of(batch)
        outputs = list(zip(results, batch["requests"], strict=True))
        return outputs[0] if single else outputs

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: tuple[torch.Tensor, dict[str, Any]]) -> Any:
        from fastapi import Response

        probabilities, request = output
        classes = self.model.classes
        if self.model.task == "style_net":
            return Response(content=image_png(probabilities), media_type="image/png")
        if self.model.task == "classify":
            top = probabilities.topk(min(max(request["top_k"], 1), len(classes)))
            return {"predictions": [{"class": classes[i], "index": i, "probability": p}
                                    for i, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)]}
        mask = probabilities.argmax(0)
        if request["format"] == "json":
            counts = torch.bincount(mask.flatten(), minlength=len(classes)).tolist()
            return {"height": mask.shape[0], "width": mask.shape[1],
                    "class_fractions": {name: count / mask.numel() for name, count in zip(classes, counts,
                                                                                           strict=True)}}
        return Response(content=mask_png(mask, len(classes)), media_type="image/png")


def check_serve_options(options: DictConfig) -> None:
    """Numbers the server needs, in range."""
    for key, low in (("port", 1024), ("workers", 1), ("max_batch_size", 1), ("max_image_pixels", 1),
                     ("max_request_bytes", 1), ("top_k", 1)):
        value = options.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"serve.{key}={value!r}: give a whole number >= {low}"
                              + (" (ports below 1024 need root)" if key == "port" else "") + ".")
    if not isinstance(options.batch_timeout, int | float) or options.batch_timeout < 0:
        raise ConfigError(f"serve.batch_timeout={options.batch_timeout!r}: seconds to wait for a batch to "
                          "fill, >= 0.")


def serve(cfg: DictConfig) -> None:
    """Load the model once here (a model that does not load stops the start), then LitServe's server."""
    from app.overrides import command_line_overrides
    from app.stylize import style_options

    options = cfg.serve
    check_serve_options(options)
    try:
        import litserve
    except ImportError as err:
        raise ConfigError("serve.model needs LitServe: pip install litserve python-multipart") from err
    from app.uploads import ImageUploads

    overrides = [o for o in command_line_overrides() if not o.startswith("serve.")]
    style = style_options(cfg.predict)
    model = ServedModel.load(str(options.model), overrides, style)
    threads = max(1, (os.cpu_count() or 1) // int(options.workers))
    api = ImageAPI(str(Path(options.model).expanduser().resolve()), overrides, int(options.top_k), threads,
                   max_batch_size=int(options.max_batch_size), batch_timeout=float(options.batch_timeout),
                   style=style)
    check = SmokeTest(model) if options.smoke_test else None
    server = litserve.LitServer(
        api, accelerator=str(options.accelerator), workers_per_device=int(options.workers),
        timeout=float(options.timeout), enable_shutdown_api=check is not None, middlewares=[(ImageUploads, {
            "max_image_pixels": int(options.max_image_pixels),
            "max_request_bytes": int(options.max_request_bytes)})])
    host = str(options.host)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{options.port}"
    answer = {"classify": "top-k classes as JSON", "style_net": "the image in its style, as PNG"}.get(
        model.task, "a palette PNG mask (?format=json: class fractions as JSON)")
    what = f"{len(model.classes)} classes" if model.classes else "styling"
    print(f"Serving {model.description}, task={model.task}, {what}, on {url}\n"
          f"  POST {url}/predict with an image -> {answer}; GET {url}/health\n"
          f"  workers {options.workers}, dynamic batching up to {options.max_batch_size} requests within "
          f"{options.batch_timeout} s\n"
          f"  try: curl -X POST --data-binary @photo.png -H 'Content-Type: image/png' {url}/predict\n"
          f"   or: curl -F image=@photo.png {url}/predict", flush=True)
    if check is not None:
        check.start(url)
    server.run(host=host, port=int(options.port), generate_client_file=False,
               num_api_servers=options.get("api_servers"), log_level=str(options.log_level))
    if check is not None and check.failure:
        raise ConfigError(f"serve.smoke_test: {check.failure}")


class SmokeTest:
    """`serve.smoke_test=true`: once /health answers, POST one blank image, print the answer, and stop the
    server through LitServe's shutdown endpoint (a start-up check for CI and containers)."""

    def __init__(self, model: ServedModel) -> None:
        import secrets

        import litserve.server

        self.model = model
        self.failure: str | None = None
        self.token = secrets.token_urlsafe(16)
        os.environ["LIT_SHUTDOWN_API_KEY"] = self.token
        litserve.server.SHUTDOWN_API_KEY = self.token  # read once, when LitServe was imported

    def start(self, url: str) -> None:
        import logging
        import threading

        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
        threading.Thread(target=self.run, args=(url,), daemon=True).start()

    def run(self, url: str) -> None:
        import time

        import httpx
        from PIL import Image

        buffer = io.BytesIO()
        Image.new(self.model.preprocessing.mode, (32, 32), 128).save(buffer, format="PNG")
        deadline = time.monotonic() + 600
        try:
            while not self.healthy(httpx, url):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url}/health did not answer within 600 s")
                time.sleep(0.5)
            answer = httpx.post(f"{url}/predict", content=buffer.getvalue(), timeout=120,
                                headers={"content-type": "image/png"})
            shown = answer.text[:300] if "json" in answer.headers.get("content-type", "") else (
                f"{answer.headers.get('content-type')}, {len(answer.content)} bytes")
            print(f"Smoke test: POST /predict -> {answer.status_code} {shown}", flush=True)
            if answer.status_code != 200:
                self.failure = f"POST /predict answered {answer.status_code}: {answer.text[:300]}"
        except Exception as err:  # whatever went wrong, the server must still be stopped
            self.failure = f"{type(err).__name__}: {err}"
        finally:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{url}/shutdown", headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    @staticmethod
    def healthy(httpx: Any, url: str) -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False
