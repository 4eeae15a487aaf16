"""The training recipes: each composes as documented and runs end to end on fake data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from app import build as app_build
from app import training
from tests.classification_fakes import write_cifar10, write_mit67


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """A TORCH_HOME holding random ResNet-50 weights under the file name torchvision downloads."""
    home = tmp_path / "torch_home"
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    url = torchvision.models.ResNet50_Weights.DEFAULT.url
    torch.save(torchvision.models.resnet50().state_dict(), checkpoints / Path(url).name)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return home


@pytest.mark.slow
def test_cifar10_recipe_is_the_reference_recipe_and_runs(make_config, tmp_path):
    root = write_cifar10(tmp_path / "cifar")
    cfg = make_config("experiment=cifar10_resnet18_recipe", f"data.root={root}",
                      "data.verify_checksums=false", "data.val_size=20", "data.batch_size=8",
                      "data.num_workers=0", "logger=none",
                      "trainer.max_epochs=2", "scheduler.warmup_epochs=1", "task.ema.warmup_epochs=1")
    assert cfg.augment.policy == "trivialaugment" and cfg.augment.random_erasing == 0.1
    assert (cfg.task.mixup_alpha, cfg.task.cutmix_alpha, cfg.task.label_smoothing) == (0.2, 1.0, 0.1)
    assert cfg.task.ema.decay == 0.9998 and cfg.optimizer.nesterov and cfg.param_groups.norm_weight_decay == 0
    metrics = training.train(cfg)
    assert "test/acc" in metrics
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert "current_model_state" in checkpoint  # the EMA's averaged and trained weights


@pytest.mark.slow
def test_mit67_finetune_recipe_unfreezes_its_pretrained_backbone_and_runs(make_config, tmp_path, torch_home):
    root = write_mit67(tmp_path / "mit67")
    cfg = make_config("experiment=mit67_resnet50_finetune", f"data.root={root}", "data.num_classes=3",
                      "data.batch_size=4", "data.num_workers=0", "data.image_size=64", "data.resize_size=72",
                      "augment.eval_resize_size=72", "augment.eval_crop_size=64", "logger=none",
                      "trainer.max_epochs=2", "scheduler.warmup_epochs=1",
                      "task.unfreeze_backbone_at_epoch=1", "task.ema.warmup_epochs=1")
    assert cfg.model.weights == "DEFAULT" and cfg.param_groups.backbone_lr_mult == 0.1
    assert cfg.augment.random_resized_crop and cfg.param_groups.bias_weight_decay == 0
    datamodule, module, trainer = app_build.build(cfg)
    trainer.fit(module, datamodule=datamodule)
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert groups["backbone/other"]["initial_lr"] == pytest.approx(1e-4)
    assert groups["head/other"]["initial_lr"] == pytest.approx(1e-3)
    assert module.net.model.conv1.weight.requires_grad  # unfrozen at epoch 1


@pytest.mark.parametrize("experiment", ["cifar10_resnet18_recipe", "mit67_resnet50_finetune"])
def test_recipes_build_their_datamodule_module_and_trainer(make_config, experiment):
    # model.weights=null: the ImageNet weights are loaded by the slow end-to-end test above
    cfg = make_config(f"experiment={experiment}", "logger=none", "model.weights=null")
    datamodule, module, _ = app_build.build(cfg)
    assert datamodule.augment.policy == "trivialaugment" and module.mix is not None
    assert module.ema["decay"] is not None and module.label_smoothing == 0.1


def test_a_warmup_as_long_as_the_training_says_so_and_runs(make_config):
    cfg = make_config("scheduler=cosine", "scheduler.warmup_epochs=1", "logger=none")
    with pytest.warns(UserWarning, match="warm-up .* lasts the whole training"):
        training.train(cfg)


README_COMMANDS = [  # README.md, Classification > Training recipes, as written (plus debug=smoke)
    "augment=trivialaugment augment.random_erasing=0.1 task.mixup_alpha=0.2 task.cutmix_alpha=1.0 "
    "task.label_smoothing=0.1",
    "optimizer=sgd param_groups.norm_weight_decay=0 scheduler=cosine scheduler.scheduler.warmup_fraction=0 "
    "scheduler.warmup_epochs=2 task.ema.decay=0.999",
]


@pytest.mark.parametrize("command", README_COMMANDS)
def test_readme_training_recipe_commands_run(make_config, command):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"python run.py {command}" in readme
    metrics = training.train(make_config(*command.split(), "logger=none"))
    assert "test/acc" in metrics
