"""Unknown keys and group options, unset values and what a user's own classes must take: ConfigErrors
that name the key, list the accepted ones and suggest the nearest, before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import checks, training
from app.config_keys import accepted_keywords, check_target_keys, check_values_given, did_you_mean
from core.errors import ConfigError
from datamodules.voc import VOCDataModule
from tests.conftest import CONF_DIR, ROOT
from tests.run_py import run_py

NOT_GROUPS = ("debug", "hydra")
OPTIONS = sorted((str(p.parent.relative_to(CONF_DIR)), p.stem) for p in CONF_DIR.rglob("*.yaml")
                 if p.parent != CONF_DIR and not str(p.parent.relative_to(CONF_DIR)).startswith(NOT_GROUPS))
LEFT_TO_THE_USER = {("data", "image_folder"), ("data", "seg_folder")}  # data.root: ???
# options that belong to another task than the default: their group (or the option) -> that task
OTHER_TASK = {"loss_network": "style_net", ("model", "transformer_net"): "style_net",
              ("model", "multistyle_net"): "style_net", ("model", "adain"): "style_net"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=lambda v: str(v))
def test_every_config_option_gives_its_classes_only_arguments_they_take(make_config, group, option):
    other = OTHER_TASK.get(group) or OTHER_TASK.get((group, option))
    task = [f"task={other}"] if other else []
    cfg = make_config(*task, f"{group}='{option}'", fast=False)  # quoted: precision='32' is a name
    check_target_keys(cfg)
    if (group, option) not in LEFT_TO_THE_USER:  # the option's own node (its task may be another one)
        check_values_given(cfg, [group] if group in cfg else None)


def test_the_nearest_names_are_suggested_and_far_ones_are_not():
    near = did_you_mean("max_epoch", ["max_epochs", "devices"], "trainer.")
    assert near == " Did you mean trainer.max_epochs?"
    added = did_you_mean("gradient_clip_algoritm", ["gradient_clip_val"], "trainer.",
                         added=["gradient_clip_algorithm"])
    assert added.startswith(" Did you mean +trainer.gradient_clip_algorithm")
    assert did_you_mean("xyz", ["max_epochs"]) == ""


def test_a_classs_arguments_are_followed_through_the_keywords_it_hands_to_its_bases():
    accepted = accepted_keywords(VOCDataModule)
    assert {"root", "download", "train_split", "cat_max_ratio", "num_classes", "batch_size"} <= accepted
    assert accepted_keywords(lambda **anything: None) is None

    class KeepsItsKeywords:
        def __init__(self, width: int, **settings: object) -> None:
            self.settings = settings

    assert accepted_keywords(KeepsItsKeywords) is None, "keywords kept, not handed on: any may be right"


@pytest.mark.parametrize(("overrides", "message"), [
    (["task=style", "++data.batch_size=4"],
     r"data.batch_size \(given on the command line as `\+\+data.batch_size=4`\) is not an argument of "
     r"datamodules.style_images.StyleImagesDataModule.*Did you mean data.image_size\?.*content, image_size"),
    (["+optimizer.lrr=0.1"], r"optimizer.lrr .* torch.optim.Adam.*Did you mean optimizer.lr\?"),
    (["+trainer.max_epoch=3"], r"pytorch_lightning.Trainer.*Did you mean trainer.max_epochs"),
    (["++model.widht=3", "model=simple_cnn"], r"model.widht .*SimpleCNN, which `model` builds. It takes"),
])
def test_a_key_forced_in_that_its_class_does_not_take_is_named_with_the_nearest(make_config, overrides,
                                                                                message):
    with pytest.raises(ConfigError, match=message):
        checks.check_config(make_config(*overrides))


def test_values_left_to_the_user_are_named_together(make_config):
    together = (r"2 value\(s\) the run needs have no value:\n  data.root \(\?\?\? in "
                r"conf/data/image_folder.yaml\): "
                r"add data.root=.*\n  data.num_classes ")
    with pytest.raises(ConfigError, match=together):
        checks.check_config(make_config("data=image_folder"))


def own_config_folder(tmp_path: Path, **files: str) -> str:
    """A user's config folder holding `files` (`"data/x.yaml": text`), as a hydra.searchpath override."""
    for name, text in files.items():
        path = tmp_path / "conf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def test_a_data_config_without_the_keys_the_network_reads_is_named_with_the_contract(make_config, tmp_path):
    searchpath = own_config_folder(tmp_path, **{"data/unsized.yaml": (
        "_target_: examples.my_lab.data.ShapesDataModule\nchannels: 1\nimage_size: 32\n")})
    expected = r"num_classes is \$\{data.num_classes\}, but the config has no data.num_classes. A data config"
    with pytest.raises(ConfigError, match=expected):
        checks.check_config(make_config(searchpath, "data=unsized"))


def test_a_task_that_does_not_take_what_run_py_passes_every_task_is_refused(make_config, tmp_path):
    searchpath = own_config_folder(tmp_path, **{"task/bare.yaml": (
        "# @package _global_\ndefaults:\n  - /data: digits\n  - /model: mnist_cnn\n  - /augment: basic\n"
        "task_name: bare\n"
        "monitor: {metric: val/acc, mode: max}\n"
        "task:\n  _target_: tests.test_config_keys.TaskWithoutOptimizer\n"
        "  num_classes: ${data.num_classes}\n")})
    with pytest.raises(ConfigError, match=r"task._target_=tests.test_config_keys.TaskWithoutOptimizer does "
                                          r"not take optimizer, param_groups: run.py passes every task net"):
        checks.check_config(make_config(searchpath, "task=bare"))


class TaskWithoutOptimizer:
    """A user's task whose constructor lacks arguments run.py passes every task."""

    def __init__(self, net: object, num_classes: int, scheduler: object = None, compile: bool = False
                 ) -> None:
        self.net = net


def test_a_constructor_argument_without_a_default_that_the_config_omits_is_named(make_config, tmp_path):
    searchpath = own_config_folder(tmp_path, **{"model/widthless.yaml": (
        "_target_: examples.my_lab.nets.TinyNet\nin_channels: ${data.channels}\n")})
    with pytest.raises(ConfigError, match=r"TinyNet needs num_classes, which `model` does not give: add "
                                          r"model.num_classes"):
        checks.check_config(make_config(searchpath, "model=widthless"))


def test_a_target_that_cannot_be_imported_says_how_to_make_it_importable(make_config):
    with pytest.raises(ConfigError, match=r"model._target_=my_lab.nets.Missing cannot be imported.*pip"):
        checks.check_config(make_config("model._target_=my_lab.nets.Missing"))


@pytest.mark.parametrize(("overrides", "expected"), [
    (["optimizer=adamm"], ["optimizer=adamm: the optimizer group has no option adamm. Did you mean "
                           "optimizer=adam or optimizer=adamw? Its options: adam, adamw, lbfgs, sgd"]),
    (["optimizer.lrr=0.1"], ["`optimizer` has no key lrr. Did you mean optimizer.lr? Its keys: lr, "
                             "weight_decay.", "torch.optim.AdamW also takes amsgrad, betas"]),
    (["trainer.max_epoch=3"], ["`trainer` has no key max_epoch. Did you mean trainer.max_epochs"]),
    (["-m", "optimiser=adam,sgd"], ["top level of the config has no key optimiser. Did you mean optimizer?"]),
    (["optimizer.lr=["], ["optimizer.lr=[: Hydra cannot read this override"]),
])
def test_a_command_line_that_does_not_compose_is_one_config_error_with_exit_2(tmp_path, overrides, expected):
    done = run_py(tmp_path, *overrides, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    printed = " ".join(done.stderr.replace("│", " ").split())
    assert "╭─ ConfigError" in done.stderr and "Traceback" not in done.stderr
    for text in expected:
        assert text in printed
    assert not list(tmp_path.rglob("config_resolved.yaml")), "no run started"


@pytest.mark.slow
def test_the_example_task_of_a_users_own_package_learns_the_shapes_on_held_out_images(make_config):
    metrics = training.train(make_config(
        f"hydra.searchpath=[file://{ROOT / 'examples' / 'conf'}]", "task=focal", "trainer.max_epochs=5",
        "logger=none", "trainer.enable_progress_bar=false", "~callbacks.rich_model_summary",
        "~callbacks.rich_progress_bar", "trainer.accelerator=cpu", fast=False,
    ))
    assert metrics["test/acc"] >= 0.8  # three shapes: chance is 1/3
