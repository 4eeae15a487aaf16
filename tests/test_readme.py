"""The README as an executable specification: every command it shows is run exactly as written.

Every `python run.py ...` and `python benchmarks/...` command in the ```bash blocks of README.md and
benchmarks/README.md (`\\` continuations joined, `# comments` dropped, `a && b` split) is one test,
whose id is the command. Each runs as its own process (tests/run_py.py's `python`) from a scratch
copy of the repository (its tracked and non-ignored files; env `PROJECT_ROOT` = that copy), with only
a debug preset appended:
`debug=smoke` for run.py (conf/debug/smoke.yaml, with its per-task and per-search parts), `--quick`
for the benchmarks.

What the README shows as a path of the reader's machine is mapped to a fixture by PLACEHOLDERS:
one entry per README token: `"token": lambda fx: "what runs instead"` (e.g. `data.root=<a fixture>`),
or `"token": as_written("token", lambda fx: ...)` when the command can run as written once a fixture
is where it looks (data/, photos/). The lambdas write the fixtures through `Fixtures`: fake datasets
in their real on-disk format, photos, checkpoints made by an earlier README command. A new README
command with a new placeholder needs one new line there; a path-like value that no entry maps
fails its test, and so does any command that fails.
Two entries shrink a budget the README chose for a real run (trial and iteration counts); they say so.
Commands holding a SLOW token are marked `slow`: `pytest -m "not slow" tests/test_readme.py` runs the rest.

Pretrained weights (`model.weights=DEFAULT`, `weights_backbone=DEFAULT`, task=style's VGG19) come
from a fixture TORCH_HOME holding random-valued state dicts under the exact file names that
torchvision's weights enums download (`Weights.url`), written for whatever the composed config asks.
Commands that need GPUs (GPU_MARKERS) skip without enough CUDA devices; SLURM commands
(`hydra/launcher=submitit_slurm`, marked `slurm`) run on the cluster of `.ci/start_slurm.sh` and skip
without one (the launcher asks for GPUs only where trainer.accelerator does).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from app.compose import compose_config
from tests import slurm_cluster
from tests.classification_fakes import write_cifar10, write_image_folder, write_mit67
from tests.fakes import (
    write_fake_ade20k,
    write_fake_cityscapes,
    write_fake_pets,
    write_fake_seg_folder,
    write_fake_voc,
)
from tests.inference_helpers import write_labelled_digits
from tests.run_py import python
from tests.style_fakes import write_fake_coco, write_fake_coco_stuff, write_fake_video, write_fake_wikiart

ROOT = Path(__file__).resolve().parents[1]
README_FILES = ("README.md", "benchmarks/README.md")
MIT67_CLASSES = tuple(f"scene{i:02d}" for i in range(67))


def readme_commands() -> list[str]:
    """The runnable commands of the README files, in order, each once."""
    commands: list[str] = []
    for name in README_FILES:
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / name).read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                for part in re.sub(r"(^|\s)#.*$", "", line).split("&&"):
                    command = " ".join(part.split())
                    runnable = command.startswith(("python run.py", "python benchmarks/"))
                    if runnable and command not in commands:
                        commands.append(command)
    return commands


def random_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict of `model`'s shapes with random values (positive running variances)."""
    def fill(key: str, value: torch.Tensor) -> torch.Tensor:
        if not value.is_floating_point():
            return torch.zeros(value.shape, dtype=value.dtype)
        return torch.ones(value.shape) if key.endswith("running_var") else torch.randn(value.shape) * 0.01

    return {key: fill(key, value) for key, value in model.state_dict().items()}


class Fixtures:
    """The scratch repository, its fixture data and TORCH_HOME; each fixture is written once, on demand."""

    def __init__(self, workspace: Path, outside: Path) -> None:
        self.workspace = workspace  # the scratch copy: cwd and PROJECT_ROOT of every command
        self.outside = outside      # where absolute README paths (/data, /photos) are mapped
        self.torch_home = outside / "torch_home"
        self.made: dict[str, Path] = {}

    def once(self, name: str, write: Callable[[Path], object], root: Path | None = None) -> Path:
        """Path of fixture `name`, written by `write(path)` the first time."""
        if name not in self.made:
            path = root or self.outside / name
            write(path)
            self.made[name] = path
        return self.made[name]

    def mit67(self) -> Path:
        return self.once("mit67", lambda p: write_mit67(p, MIT67_CLASSES, train_per_class=2,
                                                        test_per_class=1))

    def photos_by_class(self) -> Path:
        classes = ("beach", "city", "forest", "mountain", "snow")
        return self.once("photos", lambda p: write_image_folder(p, classes=classes, per_class=10))

    def segmentation_root(self) -> Path:
        """One root holding VOCdevkit/VOC2012 and oxford-iiit-pet, as the README's `/data` would."""
        return self.once("data", lambda p: (write_fake_voc(p), write_fake_pets(p)))

    def seg_folder(self) -> Path:
        return self.once("mine", lambda p: write_fake_seg_folder(p, num_classes=5))

    def in_data_dir(self, name: str, write: Callable[[Path], object]) -> Path:
        """A dataset in the workspace's data/ (`paths.data_dir`), for commands that give no data.root."""
        return self.once(name, write, self.workspace / "data")

    def cifar10(self) -> Path:
        """CIFAR-10's files with more training images than the config's 5000 held out for validation."""
        return self.once("cifar10", lambda p: write_cifar10(p, per_batch=1100), self.workspace / "data")

    def image(self, relative: str, seed: int) -> str:
        """A photo-like RGB image written at `relative` inside the workspace; returns `relative`."""
        def write(path: Path) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)

        self.once(relative, write, self.workspace / relative)
        return relative

    def finished_run(self, task: str, command: str) -> Path:
        """A finished run of `task` in the workspace (made by the README command `command` if needed)."""
        runs = self.workspace / "outputs" / task / "runs"
        finished = sorted(p for p in runs.glob("*") if (p / "checkpoints" / "last.ckpt").is_file())
        if not finished:
            run_command(self, command)
            return self.finished_run(task, command)
        return finished[0].relative_to(self.workspace)

    def classify_run(self) -> Path:
        return self.finished_run("classify", "python run.py")

    def segment_run(self) -> Path:
        return self.finished_run("segment", "python run.py task=segment")

    def onnx_export(self) -> Path:
        """The classifier exported by the README's export command (run first if needed)."""
        exported = sorted((self.workspace / "outputs" / "classify" / "runs").glob("*/export/model.onnx"))
        if not exported:
            checkpoint = self.classify_run() / "checkpoints" / "last.ckpt"
            run_command(self, f"python run.py export.format=onnx ckpt_path={checkpoint}")
            return self.onnx_export()
        return exported[0].relative_to(self.workspace)

    def style_net_run(self, network: str, command: str) -> Path:
        """A finished task=style_net run whose network class is `network` (made by the README command
        `command` if needed)."""
        runs = self.workspace / "outputs" / "style_net" / "runs"
        for run in sorted(runs.glob("*")):
            finished = (run / "checkpoints" / "last.ckpt").is_file()
            if finished and OmegaConf.load(run / "config_resolved.yaml").model._target_.endswith(network):
                return run.relative_to(self.workspace)
        run_command(self, command)
        return self.style_net_run(network, command)

    def style_checkpoint(self, network: str = "TransformerNet") -> Path:
        """The last checkpoint of the README's training command of `network` (a class name)."""
        commands = {
            "TransformerNet": "python run.py task=style_net",
            "MultiStyleNet": "python run.py task=style_net model=multistyle_net "
                             "data.style=[a.jpg,b.jpg,c.jpg]",
            "AdaINNet": "python run.py task=style_net model=adain data=wikiart data.root=/data/wikiart "
                        "data.content=/data/coco/train2014"}
        return self.style_net_run(network, commands[network]) / "checkpoints" / "last.ckpt"

    def style_onnx_export(self) -> Path:
        """The Johnson network exported by the README's export command (run first if needed)."""
        runs = self.workspace / "outputs" / "style_net" / "runs"
        exported = sorted(runs.glob("*/export/model.onnx"))
        if not exported:
            run_command(self, "python run.py export.format=onnx "  # as written: its placeholder maps it
                              "ckpt_path=outputs/style_net/runs/<run>/checkpoints/last.ckpt")
            return self.style_onnx_export()
        return exported[0].relative_to(self.workspace)

    def best_checkpoint(self) -> Path:
        return next((self.workspace / self.classify_run() / "checkpoints").glob("epoch*.ckpt"))

    def pretrained(self, arch: str, weights: str) -> None:
        """torchvision's file for `arch`'s `weights`, random-valued, in the fixture TORCH_HOME."""
        import torchvision

        enum = torchvision.models.get_model_weights(arch).verify(weights)
        target = self.torch_home / "hub" / "checkpoints" / Path(enum.url).name
        if target.exists():
            return
        options: dict[str, object] = {}
        if arch in torchvision.models.list_models(module=torchvision.models.segmentation):
            options = {"weights_backbone": None, "num_classes": len(enum.meta["categories"])}
            options |= {} if arch.startswith("lraspp") else {"aux_loss": True}
        with torch.device("meta"):
            model = torchvision.models.get_model(arch, weights=None, **options)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(random_state_dict(model), target)


def as_written(token: str, write: Callable[[Fixtures], object]) -> Callable[[Fixtures], str]:
    """A placeholder that runs as written once `write` has put its fixture where the command looks."""
    def mapped(fx: Fixtures) -> str:
        write(fx)
        return token

    return mapped


# README token -> what runs instead (writing the fixture it names). One line per placeholder.
PLACEHOLDERS: dict[str, Callable[[Fixtures], str]] = {
    "data.root=/data/mit67": lambda fx: f"data.root={fx.mit67()}",
    "data.root=/datasets/mit67": lambda fx: f"data.root={fx.mit67()}",
    "data.root=/photos": lambda fx: f"data.root={fx.photos_by_class()}",
    "data.root=/data": lambda fx: f"data.root={fx.segmentation_root()}",
    "data.root=/data/mine": lambda fx: f"data.root={fx.seg_folder()}",
    "data.root=/data/cityscapes": lambda fx: f"data.root={fx.once('cityscapes', write_fake_cityscapes)}",
    "data.root=/data/ade20k": lambda fx: f"data.root={fx.once('ade20k', write_fake_ade20k)}",
    "data.root=/data/cocostuff": lambda fx: f"data.root={fx.once('cocostuff', write_fake_coco_stuff)}",
    "data.root=/data/coco": lambda fx: f"data.root={fx.once('coco', write_fake_coco)}",
    "data.content=/data/coco/train2014":
        lambda fx: f"data.content={fx.once('coco', write_fake_coco) / 'train2014'}",
    "data.root=/data/wikiart": lambda fx: f"data.root={fx.once('wikiart', write_fake_wikiart)}",
    "data=cifar10": as_written("data=cifar10", lambda fx: fx.cifar10()),
    "data=voc": as_written("data=voc", lambda fx: fx.in_data_dir("voc", write_fake_voc)),
    "data=pets": as_written("data=pets", lambda fx: fx.in_data_dir("pets", write_fake_pets)),
    # the fake CIFAR-10 files are not the official ones, whose checksums torchvision checks first
    "data.download=true": lambda fx: "data.download=true data.verify_checksums=false",
    "data.content=photos/": as_written("data.content=photos/", lambda fx: fx.image("photos/street.jpg", 1)),
    "data.style=starry_night.jpg": lambda fx: "data.style=" + fx.image("starry_night.jpg", 2),
    "data.style=[a.jpg,b.jpg]": lambda fx: f"data.style=[{fx.image('a.jpg', 3)},{fx.image('b.jpg', 4)}]",
    "data.style=[a.jpg,b.jpg,c.jpg]":
        lambda fx: f"data.style=[{fx.image('a.jpg', 3)},{fx.image('b.jpg', 4)},{fx.image('c.jpg', 5)}]",
    "data.style=mosaic.jpg": lambda fx: "data.style=" + fx.image("mosaic.jpg", 6),
    "ckpt_path=outputs/classify/runs/<run>/checkpoints/last.ckpt":
        lambda fx: f"ckpt_path={fx.classify_run() / 'checkpoints' / 'last.ckpt'}",
    "hydra.run.dir=outputs/classify/runs/2025-01-31_12-00-00-000000":
        lambda fx: f"hydra.run.dir={fx.classify_run()}",
    "ckpt_path=/path/to/epoch007.ckpt": lambda fx: f"ckpt_path={fx.best_checkpoint()}",
    "ckpt_path=outputs/segment/runs/<run>/checkpoints/last.ckpt":
        lambda fx: f"ckpt_path={fx.segment_run() / 'checkpoints' / 'last.ckpt'}",
    "predict.input=photos/": as_written("predict.input=photos/", lambda fx: fx.image("photos/street.jpg", 1)),
    "predict.input=digits_by_class/": as_written("predict.input=digits_by_class/", lambda fx: fx.once(
        "digits_by_class", write_labelled_digits, fx.workspace / "digits_by_class")),
    "visualize.model=vgg19": as_written("visualize.model=vgg19",
                                        lambda fx: fx.pretrained("vgg19", "DEFAULT")),
    "predict.model=outputs/classify/runs/<run>/export/model.onnx":
        lambda fx: f"predict.model={fx.onnx_export()}",
    "task.distill.teacher=outputs/classify/runs/<run>/checkpoints/last.ckpt":
        lambda fx: f"task.distill.teacher={fx.classify_run() / 'checkpoints' / 'last.ckpt'}",
    "serve.model=outputs/classify/runs/<run>/checkpoints/last.ckpt":
        lambda fx: f"serve.model={fx.classify_run() / 'checkpoints' / 'last.ckpt'}",
    "serve.model=outputs/classify/runs/<run>/export/model.onnx": lambda fx: f"serve.model={fx.onnx_export()}",
    "serve.port=8000": lambda fx: f"serve.port={free_port()}",  # a smoke-tested server stops by itself
    "ckpt_path=outputs/style_net/runs/<run>/checkpoints/last.ckpt":
        lambda fx: f"ckpt_path={fx.style_checkpoint()}",
    "ckpt_path=outputs/style_net/runs/<multistyle>/checkpoints/last.ckpt":
        lambda fx: f"ckpt_path={fx.style_checkpoint('MultiStyleNet')}",
    "ckpt_path=outputs/style_net/runs/<adain>/checkpoints/last.ckpt":
        lambda fx: f"ckpt_path={fx.style_checkpoint('AdaINNet')}",
    "outputs/style_net/runs/<run>/checkpoints/last.ckpt": lambda fx: str(fx.style_checkpoint()),
    "predict.input=clip.mp4": as_written("predict.input=clip.mp4", lambda fx: fx.once(
        "clip.mp4", write_fake_video, fx.workspace / "clip.mp4")),
    "predict.style=mosaic.jpg": lambda fx: "predict.style=" + fx.image("mosaic.jpg", 6),
    "predict.model=outputs/style_net/runs/<run>/export/model.onnx":
        lambda fx: f"predict.model={fx.style_onnx_export()}",
    "serve.model=outputs/style_net/runs/<run>/export/model.onnx":
        lambda fx: f"serve.model={fx.style_onnx_export()}",
    # budgets of real runs: a smoke run takes two trials / three evaluations through the same code
    "hydra.sweeper.n_trials=10": lambda fx: "hydra.sweeper.n_trials=2",
    "task.evaluations=500": lambda fx: "task.evaluations=3",
}
# Tokens that need CUDA; the device count a command needs is trainer.devices x trainer.num_nodes.
GPU_MARKERS = ("trainer.accelerator=gpu", "strategy=fsdp", "precision=16-mixed", "export.format=tensorrt",
               "data.decode=gpu")
# Commands that take tens of seconds even as smoke runs on 2 CPU cores: ImageNet-size networks at
# 224 px, several processes, a sweep of style jobs (each loads VGG19), 512 px style transfer, servers
# (model processes started fresh), VGG19's filters, ten 256 px reconstructions, and the benchmarks
# (whose --quick runs both sides).
SLURM = "hydra/launcher=submitit_slurm"  # commands run as jobs of the local cluster: marked `slurm`
SLOW = ("model=resnet50", "experiment=mit67", "deeplabv3", "efficientnet", "trainer.devices=",
        "-m task=style", "data.image_size=512", "python benchmarks/", "serve.model=", "visualize.model=",
        "style_reconstructions data.", SLURM)
PATH_LIKE = re.compile(r"^(/|~|.*<|.*\.(jpg|jpeg|png|ckpt|pth|pt)$|.*/$)")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unmapped_paths(tokens: list[str]) -> list[str]:
    """Tokens whose value looks like a path of the README reader's machine and that no entry maps."""
    def values(token: str) -> list[str]:
        value = token.split("=", 1)[1] if "=" in token else ""
        return value.strip("[]").split(",")

    return [t for t in tokens if t not in PLACEHOLDERS and any(PATH_LIKE.match(v) for v in values(t))]


def skip_reason(command: str) -> str | None:
    """Why `command` cannot run here (no GPUs, no SLURM), or None."""
    tokens = command.split()
    count = {key: int(t.split("=")[1]) for t in tokens for key in ("devices", "num_nodes")
             if t.startswith(f"trainer.{key}=")}
    if SLURM in tokens and slurm_cluster.unavailable():
        return f"SLURM command: {slurm_cluster.unavailable()}"
    needs = count.get("devices", 1) * count.get("num_nodes", 1)
    if any(marker in tokens for marker in GPU_MARKERS) and torch.cuda.device_count() < needs:
        return f"needs {needs} CUDA device(s), found {torch.cuda.device_count()}"
    return None


def prepared(fx: Fixtures, command: str) -> list[str]:
    """The argv that runs `command`: placeholders mapped, the debug preset appended, weights in place."""
    tokens = shlex.split(command)
    missing = unmapped_paths(tokens)
    assert not missing, f"no fixture maps {missing}: add a line to PLACEHOLDERS in {Path(__file__).name}"
    mapped = " ".join(PLACEHOLDERS[t](fx) if t in PLACEHOLDERS else t for t in tokens[1:])
    argv = [sys.executable, *mapped.split()]
    if tokens[1] != "run.py":
        return [*argv, "--quick"]
    argv.append("debug=smoke")
    place_pretrained_weights(fx, argv[2:])
    return argv


def first_values(overrides: list[str]) -> list[str]:
    """The overrides of a sweep's first job (`-m` dropped, each swept key at its first value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([o for o in overrides if o != "-m"])
    return [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override()
            else o.input_line for o in parsed]


def place_pretrained_weights(fx: Fixtures, overrides: list[str]) -> None:
    """Random weights files for whatever torchvision weights the composed config of `overrides` asks."""
    from lightning_modules.nets.torchvision_classifier import is_weights_file
    from lightning_modules.nets.torchvision_segmenter import backbone_name

    if any(o.startswith(("predict.input=", "export.format=")) for o in overrides):
        return  # a trained model's own weights, no download (and run.py composes its stored task first)
    cwd = Path.cwd()
    os.chdir(fx.workspace)  # where the command runs: relative paths (hydra.searchpath) start there
    try:
        cfg = compose_config(first_values(overrides), fx.outside / "composed")
    finally:
        os.chdir(cwd)
    model, wanted = cfg.model, []
    name = model.get("name") or ("vgg19" if model._target_.endswith("VGGFeatures") else None)
    if name is not None:
        wanted.append((name, model.get("weights")))
    if model.get("weights_backbone"):
        wanted.append((backbone_name(name), model.weights_backbone))
    loss_network = OmegaConf.select(cfg, "task.loss_network")  # task=style_net's (and AdaIN's encoder)
    if loss_network:
        wanted.append((loss_network.arch, loss_network.weights))
    for arch, weights in wanted:
        if weights and not is_weights_file(weights):
            fx.pretrained(arch, weights)


def run_command(fx: Fixtures, command: str) -> subprocess.CompletedProcess:
    """Run `command` as the README test does; fail with its output's tail unless it succeeds."""
    env = {**os.environ, "PROJECT_ROOT": str(fx.workspace), "TORCH_HOME": str(fx.torch_home)}
    done = python(*prepared(fx, command)[1:], cwd=fx.workspace, env=env, timeout=900)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    """A scratch copy of the repository (tracked and not-ignored files) and the fixture folder."""
    workspace = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for relative in filter(None, listed.split("\0")):
        if (ROOT / relative).is_file():
            (workspace / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, workspace / relative)
    return Fixtures(workspace, tmp_path_factory.mktemp("fixtures"))


def test_the_readmes_show_commands_and_the_extraction_joins_continuations():
    commands = readme_commands()
    assert "python run.py" in commands
    assert not [c for c in commands if "\\" in c or "#" in c]


def parametrized(commands: list[str]) -> list[object]:
    """One pytest parameter per command, id = the command, marked `slow` when it holds a SLOW token."""
    def marks(command: str) -> list[pytest.MarkDecorator]:
        slow = [pytest.mark.slow] if any(token in command for token in SLOW) else []
        return slow + ([pytest.mark.slurm] if SLURM in command.split() else [])

    return [pytest.param(command, id=command, marks=marks(command)) for command in commands]


@pytest.mark.parametrize("command", parametrized(readme_commands()))
def test_readme_command_runs_as_written(fixtures: Fixtures, command: str) -> None:
    reason = skip_reason(command)
    if reason:
        pytest.skip(reason)
    done = run_command(fixtures, command)
    if command.startswith("python benchmarks/"):
        assert "ratio" in done.stdout, "every benchmark prints its ratio (benchmarks/README.md)"
