"""Knowledge distillation: the loss against hand-computed values and torch's kl_div, the frozen teacher
on the student's own (mixed) batch, what is checkpointed, and the teachers that are refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from app.teacher import teacher_mismatch
from core.errors import CheckpointError, ConfigError
from lightning_modules.classification import ClassificationModule
from lightning_modules.distillation import Distillation, distill_options, distillation_loss
from lightning_modules.nets.mnist_cnn import MNISTCNN
from lightning_modules.nets.unet import UNet
from lightning_modules.segmentation import SegmentationModule
from tests.inference_helpers import digits_classifier, read_checkpoint_keys, run_in_process, small_unet
from tests.run_py import python


def test_distillation_loss_matches_a_hand_computed_kl_at_two_temperatures():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax: (3/4, 1/4)
    at_1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.130812
    assert distillation_loss(student, teacher, 1.0).item() == pytest.approx(at_1, rel=1e-6)
    p = math.sqrt(3) / (math.sqrt(3) + 1)  # softmax of (ln 3 / 2, 0)
    at_2 = 4 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))  # T^2 x KL = 0.145363
    assert distillation_loss(student, teacher, 2.0).item() == pytest.approx(at_2, rel=1e-6)
    assert at_1 == pytest.approx(0.130812, abs=1e-6) and at_2 == pytest.approx(0.145363, abs=1e-6)


def test_distillation_loss_equals_torchs_batchmean_kl_div_times_t_squared():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    expected = F.kl_div(F.log_softmax(student / 3, 1), F.softmax(teacher / 3, 1), reduction="batchmean") * 9
    assert distillation_loss(student, teacher, 3.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_pixel_distillation_leaves_ignored_pixels_out_and_an_all_ignored_batch_gives_zero():
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(2, 4, 3, 3, generator=generator)
    teacher = torch.randn(2, 4, 3, 3, generator=generator)
    valid = torch.zeros(2, 3, 3, dtype=torch.bool)
    valid[0, 1, 2] = valid[1, 0, 0] = True
    picked = lambda t: torch.stack([t[0, :, 1, 2], t[1, :, 0, 0]])  # noqa: E731
    expected = distillation_loss(picked(student), picked(teacher), 2.0)
    assert distillation_loss(student, teacher, 2.0, valid).item() == pytest.approx(expected.item(), rel=1e-6)
    changed = teacher.clone()
    changed[0, :, 0, 0] += 5  # an ignored pixel
    assert distillation_loss(student, changed, 2.0, valid) == distillation_loss(student, teacher, 2.0, valid)
    assert distillation_loss(student, teacher, 2.0, torch.zeros_like(valid)).item() == 0.0


def test_the_loss_weighs_the_task_loss_by_one_minus_alpha_and_the_teacher_by_alpha():
    teacher = nn.Linear(4, 3)
    distillation = Distillation(teacher, temperature=2.0, alpha=0.25)
    images, student_logits = torch.randn(5, 4), torch.randn(5, 3)
    task_loss = torch.tensor(1.5)
    expected = 0.75 * 1.5 + 0.25 * distillation_loss(student_logits, teacher(images).detach(), 2.0)
    got = distillation.loss(task_loss, images, student_logits, lambda output: output)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def classifier(**options) -> ClassificationModule:
    return ClassificationModule(MNISTCNN(1, 10, 28), num_classes=10, optimizer=torch.optim.Adam, **options)


def test_the_teacher_sees_the_students_mixed_batch_frozen_in_eval_mode_and_stays_out_of_the_checkpoint():
    student = classifier(mixup_alpha=1.0, distill={"teacher": "t.ckpt", "alpha": 0.5})
    teacher = MNISTCNN(1, 10, 28).train()
    student.attach_teacher(Distillation(teacher, 4.0, 0.5))
    seen = {}
    student.net.register_forward_hook(lambda m, i, o: seen.__setitem__("student", i[0]))
    teacher.register_forward_hook(lambda m, i, o: seen.__setitem__("teacher", (i[0], torch.is_grad_enabled(),
                                                                                m.training)))
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    student.log = lambda *args, **kwargs: None
    student.log_dict = lambda *args, **kwargs: None
    student.training_step((images, labels), 0)["loss"].backward()
    teacher_input, grad_enabled, training = seen["teacher"]
    assert torch.equal(teacher_input, seen["student"]) and not torch.equal(teacher_input, images)  # mixed
    assert not grad_enabled and not training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None for p in student.net.parameters())
    assert not any("teacher" in key for key in student.state_dict())
    assert student.hparams.distill == {"teacher": "t.ckpt", "temperature": 4.0, "alpha": 0.5}


def test_segmentation_distils_per_pixel_without_the_ignored_ones():
    student = SegmentationModule(UNet(1, 3, depth=1, base_width=4), num_classes=3, optimizer=torch.optim.Adam)
    teacher = UNet(1, 3, depth=1, base_width=4)
    student.attach_teacher(Distillation(teacher, 2.0, 1.0))  # alpha 1: the teacher's term alone
    images = torch.randn(2, 1, 8, 8)
    target = torch.full((2, 8, 8), 255)
    target[:, :4] = 1
    loss = student.training_loss(images, student(images), target)
    with torch.no_grad():
        expected = distillation_loss(student.net(images), teacher(images), 2.0, target != 255)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(("options", "match"), [({"temperature": 0}, "temperature=0"),
                                                 ({"alpha": 1.5}, "alpha=1.5")])
def test_a_nonpositive_temperature_or_an_alpha_outside_zero_one_is_refused(options, match):
    with pytest.raises(ConfigError, match=match):
        distill_options(options)


def test_a_teacher_of_other_class_names_is_refused_with_both_lists():
    distillation = Distillation(nn.Identity(), 4.0, 0.5, classes=["cat", "dog"], source="t.ckpt")
    with pytest.raises(ConfigError, match=r"trained on classes \(cat, dog\).*has \(dog, cat\)"):
        distillation.check_classes(["dog", "cat"])
    distillation.check_classes(["cat", "dog"])


@pytest.mark.parametrize(("change", "reason"), [
    ({"task_name": "segment"}, "trained for task=segment and this run is task=classify"),
    ({"data": {"num_classes": 5}}, "5 classes where this run has 10"),
    ({"data": {"channels": 3}}, "3 input channels where this run has 1"),
])
def test_a_teacher_of_another_task_other_classes_or_other_channels_is_refused_with_the_reason(change, reason):
    student = OmegaConf.create({"task_name": "classify", "data": {"num_classes": 10, "channels": 1}})
    teacher = OmegaConf.merge(student, change)
    assert reason in teacher_mismatch(teacher, student)
    assert teacher_mismatch(student, student) is None


def test_distilling_a_simple_cnn_from_a_trained_mnist_cnn_in_bf16_checkpoints_the_student_alone(
        tmp_path, tmp_path_factory):
    teacher, _ = digits_classifier(tmp_path_factory.getbasetemp())
    metrics = run_in_process(tmp_path, "model=simple_cnn", f"task.distill.teacher={teacher}",
                             "task.distill.temperature=2", "precision=bf16-mixed", "debug=smoke")
    assert metrics["test/acc"] >= 0 and metrics["cost/parameters"] < 1_000_000  # the student's, not both
    keys, hparams = read_checkpoint_keys(next((tmp_path / "checkpoints").glob("epoch*.ckpt")))
    assert keys and all(key.startswith(("net.", "train_", "val_", "test_")) for key in keys)
    assert hparams["distill"]["teacher"] == str(teacher)


def test_a_segmentation_teacher_for_a_classifier_stops_the_run_with_the_reason(tmp_path, tmp_path_factory):
    teacher = small_unet(tmp_path_factory.getbasetemp())
    with pytest.raises(CheckpointError, match="trained for task=segment and this run is task=classify"):
        run_in_process(tmp_path, f"task.distill.teacher={teacher}", "debug=smoke")


@pytest.mark.slow
@pytest.mark.ddp
def test_distillation_trains_on_two_ddp_processes_each_with_its_own_teacher(tmp_path, tmp_path_factory):
    teacher, _ = digits_classifier(tmp_path_factory.getbasetemp())
    done = python("run.py", "trainer=ddp", "debug=smoke", "model=simple_cnn",
                  f"task.distill.teacher={teacher}", f"paths.log_dir={tmp_path}", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next((tmp_path / "classify" / "runs").iterdir())
    keys, _ = read_checkpoint_keys(run_dir / "checkpoints" / "last.ckpt")
    assert keys and not any("teacher" in key for key in keys)
    assert "test/acc" in json.loads((run_dir / "metrics.json").read_text())
