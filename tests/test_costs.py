"""What a model costs: parameters, MACs/FLOPs against hand counts, the network summary, metrics.json."""

from __future__ import annotations

import json

import torch
from torch import nn

from app.costs import compute_at, cost_lines, parameter_counts, readable
from callbacks.network_summary import NetworkModelSummary
from callbacks.throughput import Throughput, batch_images
from lightning_modules.classification import ClassificationModule
from tests.inference_helpers import digits_classifier, run_in_process


def test_macs_and_flops_of_a_conv_and_a_linear_layer_match_a_hand_count():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    costs = compute_at(net, (1, 2, 8, 8))
    conv = 8 * 8 * 4 * (2 * 3 * 3)  # output pixels x output channels x (input channels x kernel)
    linear = 4 * 8 * 8 * 10
    assert costs["cost/macs"] == conv + linear
    assert costs["cost/flops"] == 2 * (conv + linear)
    assert compute_at(net, (3, 2, 8, 8))["cost/macs"] == 3 * (conv + linear)  # the batch counts


def test_parameter_counts_separate_frozen_parameters_and_count_shared_ones_once():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, shared, nn.Linear(3, 2))
    net[2].weight.requires_grad_(False)
    counts = parameter_counts(net)
    assert counts == {"cost/parameters": 12 + 8, "cost/trainable_parameters": 12 + 2}


def test_readable_figures_use_decimal_prefixes_and_binary_ones_for_bytes():
    assert readable(1_234_567) == "1.23 M" and readable(999) == "999"
    assert readable(3 * 2**20, "B") == "3 MiB"
    lines = cost_lines({"cost/parameters": 2000, "cost/trainable_parameters": 1000, "cost/macs": 5e6,
                        "cost/flops": 1e7, "cost/input_shape": "1x1x28x28"})
    assert lines == ["2 k parameters (1 k trainable)", "5 M MACs = 10 M FLOPs per forward at 1x1x28x28"]


def test_the_network_summary_lists_the_networks_layers_with_flops_and_no_metric_objects():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 28 * 28, 10))
    module = ClassificationModule(net, num_classes=10, optimizer=torch.optim.Adam)
    module.example_input_array = torch.zeros(1, 1, 28, 28)
    summary = NetworkModelSummary(module, max_depth=2)
    assert summary.layer_names == ["net", "net.0", "net.1", "net.2"]
    conv, linear = 28 * 28 * 4 * 9, 4 * 28 * 28 * 10
    assert summary.total_flops == 2 * (conv + linear)
    assert [sum(counts.values()) for counts in summary.flop_counts.values()] == [
        2 * (conv + linear), 2 * conv, 0, 2 * linear]


def test_images_are_counted_in_every_tasks_batches_and_an_uncounted_run_has_no_rate():
    images = torch.zeros(3, 3, 8, 8)
    assert batch_images((images, torch.zeros(3))) == 3  # classify, segment
    assert batch_images({"images": images, "names": ["a", "b", "c"]}) == 3  # predict
    assert batch_images({"content": images, "name": ["a", "b", "c"]}) == 3  # task=style_net
    throughput = Throughput()
    throughput.seconds["train"] = 2.0  # batches ran, but none of their images were counted
    assert throughput.images_per_second("train") is None
    throughput.images["train"] = 8
    assert throughput.images_per_second("train") == 4.0


def test_a_training_run_writes_its_costs_to_metrics_json(tmp_path_factory):
    _, metrics = digits_classifier(tmp_path_factory.getbasetemp())
    assert metrics["cost/parameters"] == metrics["cost/trainable_parameters"] > 300_000  # 16 px: 315 k
    assert metrics["cost/macs"] * 2 == metrics["cost/flops"] and metrics["cost/input_shape"] == "1x1x16x16"
    assert metrics["cost/checkpoint_bytes"] > 4 * metrics["cost/parameters"]  # float32 weights at least
    assert metrics["cost/peak_memory_bytes"] > 50 * 2**20
    assert metrics["cost/peak_memory_kind"] == "cpu_peak_rss" and metrics["cost/train_images_per_s"] > 0


def test_an_export_run_reports_the_files_size_and_its_inference_speed(tmp_path, tmp_path_factory):
    checkpoint, trained = digits_classifier(tmp_path_factory.getbasetemp())
    run_in_process(tmp_path, "export.format=onnx", f"ckpt_path={checkpoint}", "debug=smoke")
    costs = json.loads((tmp_path / "metrics.json").read_text())
    assert costs["cost/export_bytes"] == (tmp_path / "export" / "model.onnx").stat().st_size
    assert costs["cost/macs"] == trained["cost/macs"] and costs["cost/inference_images_per_s"] > 0
