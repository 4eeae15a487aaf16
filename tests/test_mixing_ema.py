"""Batch MixUp/CutMix and the weights' exponential moving average (EMA)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from app import training
from core.errors import ConfigError
from lightning_modules.classification import ClassificationModule, batch_mixing
from lightning_modules.ema import ExponentialMovingAverage, reference_decay
from tests.conftest import compose_config

NUM_CLASSES = 5


def constant_images(batch: int = 6, size: int = 16) -> torch.Tensor:
    """Image i is filled with the value i, so every output pixel tells which image it came from."""
    return torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 3, size, size).clone()


def test_mixup_targets_are_convex_combinations_of_the_images_and_labels():
    torch.manual_seed(0)
    images, labels = constant_images(), torch.tensor([0, 1, 2, 3, 4, 0])
    mixed, targets = batch_mixing(NUM_CLASSES, mixup_alpha=0.2, cutmix_alpha=0.0)(images, labels)
    assert targets.shape == (6, NUM_CLASSES)
    assert torch.allclose(targets.sum(dim=1), torch.ones(6))
    assert (targets >= 0).all()
    lam = targets[1, 1].item()  # image 1 (label 1) mixed with image 0 (label 0), the batch rolled by one
    assert 0 < lam < 1
    assert torch.allclose(targets[1, 0], torch.tensor(1 - lam))
    assert torch.allclose(mixed[1], torch.full_like(mixed[1], lam * 1 + (1 - lam) * 0))


def test_cutmix_label_weights_equal_the_pasted_area():
    torch.manual_seed(3)
    images, labels = constant_images(size=32), torch.tensor([0, 1, 2, 3, 4, 0])
    for _ in range(5):
        mixed, targets = batch_mixing(NUM_CLASSES, mixup_alpha=0.0, cutmix_alpha=1.0)(images, labels)
        pasted = (mixed[2] == 1).float().mean().item()  # image 2 receives a box of image 1
        assert (mixed[2] == 2).float().mean().item() == pytest.approx(1 - pasted)
        assert targets[2, 1].item() == pytest.approx(pasted)
        assert targets[2, 2].item() == pytest.approx(1 - pasted)


def test_both_alphas_choose_cutmix_with_the_switch_probability():
    mix = batch_mixing(NUM_CLASSES, mixup_alpha=0.2, cutmix_alpha=1.0, switch_prob=0.25)
    assert [type(t).__name__ for t in mix.transforms] == ["MixUp", "CutMix"]
    assert mix.p == [0.75, 0.25]
    assert batch_mixing(NUM_CLASSES, 0.0, 0.0) is None
    with pytest.raises(ConfigError):
        batch_mixing(NUM_CLASSES, -1.0, 0.0)


def test_soft_target_loss_is_label_smoothed_cross_entropy_and_metrics_use_the_dominant_label():
    module = ClassificationModule(nn.Identity(), NUM_CLASSES, torch.optim.SGD, label_smoothing=0.1)
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0, 0.3]])
    target = torch.tensor([[0.0, 0.7, 0.3, 0.0, 0.0]])
    smoothed = 0.9 * target + 0.1 / NUM_CLASSES
    expected = -(smoothed * F.log_softmax(logits, dim=1)).sum()
    assert module.compute_loss(logits, target).item() == pytest.approx(expected.item())
    assert module.metric_target(target).tolist() == [1]
    assert module.metric_target(torch.tensor([3])).tolist() == [3]


class ConstantGradient(pl.LightningModule):
    """One weight w with loss w (gradient 1): plain SGD at lr 1 takes w_k = w_0 - k."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.validated: list[float] = []

    def training_step(self, batch, batch_idx):
        return self.w.sum()

    def validation_step(self, batch, batch_idx):
        self.validated.append(self.w.item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def fit_constant_gradient(ema: ExponentialMovingAverage, steps: int, epochs: int = 1) -> ConstantGradient:
    model = ConstantGradient()
    loader = DataLoader(TensorDataset(torch.zeros(steps, 1)), batch_size=1)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[ema], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(model, loader, loader)
    return model


def test_ema_weights_equal_the_closed_form_and_are_the_ones_validated():
    decay, steps = 0.9, 7
    model = fit_constant_gradient(ExponentialMovingAverage(decay), steps)
    # e_1 = w_1 (the first update copies), e_n = d e_(n-1) + (1 - d) w_n with w_n = -n:
    # e_n = -n + d (1 - d^(n-1)) / (1 - d)
    closed_form = -steps + decay * (1 - decay ** (steps - 1)) / (1 - decay)
    assert model.validated == [pytest.approx(closed_form)]
    assert model.w.item() == pytest.approx(closed_form)  # fit ends with the averaged weights


def test_ema_every_n_steps_and_warmup_epochs():
    decay = 0.5
    # Updates after steps 1, 4, 7 (step_idx 0, 3, 6): e = w_1, then .5 e + .5 w_4, then .5 e + .5 w_7.
    model = fit_constant_gradient(ExponentialMovingAverage(decay, every_n_steps=3), steps=7)
    assert model.validated == [pytest.approx(0.5 * (0.5 * -1 + 0.5 * -4) + 0.5 * -7)]
    # During the warm-up epoch the average restarts at every update: it is the weights themselves,
    # and the first update after it copies them again (w_5), as torchvision's reference does.
    model = fit_constant_gradient(ExponentialMovingAverage(decay, warmup_epochs=1), steps=4, epochs=2)
    assert model.validated[0] == pytest.approx(-4)
    assert model.validated[1] == pytest.approx(0.5 ** 3 * -5 + sum(0.5 ** (9 - n) * -n for n in range(6, 9)))


def test_reference_decay_adjustment_matches_torchvisions_formula():
    # torchvision: alpha = (1 - 0.99998) * 8 GPUs * 128 images * 32 steps / 600 epochs
    assert reference_decay(0.99998, 128, 8, 32, 600) == pytest.approx(1 - 2e-5 * 8 * 128 * 32 / 600)
    assert reference_decay(0.9, 512, 8, 32, 1) == 0.0  # alpha capped at 1


def test_ema_settings_are_checked():
    with pytest.raises(ConfigError, match="decay"):
        ExponentialMovingAverage(1.5)
    with pytest.raises(ConfigError, match="every_n_steps"):
        ExponentialMovingAverage(0.9, every_n_steps=0)


EMA_RUN = ["trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.deterministic=true",
           "logger=none", "task.ema.decay=0.9", "task.mixup_alpha=0.2", "task.cutmix_alpha=1.0",
           "scheduler=none"]  # resumed for more epochs than it began with: no one-cycle (fixed length)


def accuracy_of(cfg, state_dict: dict) -> float:
    """Test accuracy of `cfg`'s network with `state_dict`, by hand: no Trainer, no callbacks."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    module = instantiate(cfg.task, net=instantiate(cfg.model), optimizer=None)
    module.load_state_dict(state_dict)
    module.eval()
    with torch.no_grad():
        batches = list(datamodule.test_dataloader())[:2]  # debug=smoke tests 2 batches
        correct = sum((module(x).argmax(1) == y).sum().item() for x, y in batches)
    return correct / sum(len(y) for _, y in batches)


def test_checkpoints_keep_both_weights_test_uses_the_average_and_resume_continues_it(tmp_path):
    whole = compose_config(["debug=smoke", *EMA_RUN], tmp_path / "whole")
    metrics = training.train(whole)
    checkpoints = tmp_path / "whole" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    averaged, trained = last["state_dict"], last["current_model_state"]
    assert set(averaged) == set(trained)
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)
    assert last["averaging_state"]["n_averaged"].item() == 8  # 2 epochs x 4 steps

    best = torch.load(next(checkpoints.glob("epoch*.ckpt")), weights_only=False)
    assert metrics["test/acc"] == pytest.approx(accuracy_of(whole, best["state_dict"]))

    training.train(compose_config(["debug=smoke", *EMA_RUN, "trainer.max_epochs=1"], tmp_path / "resumed"))
    training.train(compose_config(["debug=smoke", *EMA_RUN, "ckpt_path=last"], tmp_path / "resumed"))
    again = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert again["averaging_state"]["n_averaged"].item() == 8
    for key in ("state_dict", "current_model_state"):
        for name, value in last[key].items():
            assert torch.allclose(again[key][name].float(), value.float(), atol=1e-6), (key, name)


@pytest.mark.slow
def test_digits_classifier_with_the_full_recipe_still_learns_to_95_percent(make_config):
    metrics = training.train(make_config(
        "augment=trivialaugment", "task.mixup_alpha=0.2", "task.cutmix_alpha=1.0", "task.ema.decay=0.98",
        "data.image_size=16",
        "trainer.enable_progress_bar=false", "~callbacks.rich_model_summary", "~callbacks.rich_progress_bar",
        "trainer.accelerator=cpu", "logger=none", fast=False,
    ))
    assert metrics["test/acc"] >= 0.95  # held-out digits, evaluated with the averaged weights
