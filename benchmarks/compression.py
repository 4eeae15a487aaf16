"""What compression buys, side by side in one run: baseline vs distilled student vs pruned vs INT8.

    python benchmarks/compression.py [--quick] [--repeats 5] [--cases digits scenes] [--epochs 5]

Cases: the digits classifier (mnist_cnn, the teacher; student simple_cnn) and a UNet on digit scenes
(base width 16, depth 3, the teacher; student base width 8, depth 2). Each network is trained by
run.py itself (same seed and epochs); the student once alone and once distilled from the baseline;
the baseline pruned at 0.3, 0.5 and 0.7 of its channels (magnitude) and fine-tuned; the baseline and
the 0.5-pruned network quantised to static INT8. Every row: parameters, MACs, ONNX file size,
onnxruntime (CPU) latency at batch 1 and 32 (interleaved medians), test accuracy / mIoU.
`--quick`: the digits case, one epoch of two batches, pruning at 0.5 only (checks the script runs).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from common import interleaved_medians, machine_description, parse_args, print_table

QUIET = ["trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null",
         "callbacks.rich_progress_bar=null", "trainer.accelerator=cpu", "logger=none"]
# the UNet learning test's recipe (tests/test_run_segment.py): background weighted down, one cycle
SCENES_RECIPE = ["optimizer.lr=3e-3", "scheduler=onecycle", "task.class_weights=[0.2,1,1,1,1,1,1,1,1,1,1]"]
CASES = {  # name: (baseline overrides, student overrides, metric, image side); digits at the 28 px measured
    "digits": (["data.image_size=28"], ["model=simple_cnn", "data.image_size=28"], "test/acc", 28),
    "scenes": (["task=segment", "model.depth=3", "model.base_width=16", *SCENES_RECIPE],
               ["task=segment", "model.depth=2", "model.base_width=8", *SCENES_RECIPE], "test/miou", 32),
}
QUICK = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]


def run(folder: Path, *overrides: str) -> dict[str, Any]:
    """run.py's `run` in this process, writing into `folder`; its metrics.json."""
    import run as run_py
    from app.compose import compose_config

    folder.mkdir(parents=True, exist_ok=True)
    run_py.run(compose_config([*QUIET, *overrides], folder))
    return json.loads((folder / "metrics.json").read_text())


def best(folder: Path) -> Path:
    return sorted((folder / "checkpoints").glob("epoch*.ckpt"))[-1]


def onnx_latencies(models: dict[str, Path], channels: int, side: int, batch_sizes: list[int],
                   repeats: int) -> dict[str, dict[int, float]]:
    """Median seconds per batch of each ONNX file through onnxruntime, all files interleaved."""
    import torch

    from app.runtime import ExportedModel

    sessions = {name: ExportedModel(path) for name, path in models.items()}
    seconds: dict[str, dict[int, float]] = {name: {} for name in models}
    for size in batch_sizes:
        images = torch.randn(size, channels, side, side)
        timed = interleaved_medians({name: (lambda s=s, x=images: s(x)) for name, s in sessions.items()},
                                    repeats=repeats)
        for name, value in timed.items():
            seconds[name][size] = value
    return seconds


def measure_case(name: str, folder: Path, epochs: int, fine_tune: int, quick: bool, repeats: int,
                 batch_sizes: list[int]) -> list[dict[str, object]]:
    """Train, distil, prune, export and quantise one case; one row per model, and the ratios printed."""
    baseline_overrides, student_overrides, metric, side = CASES[name]
    budget = [f"trainer.max_epochs={epochs}", *(QUICK if quick else [])]
    task = [o for o in baseline_overrides if o.startswith("task=")]
    runs: dict[str, dict[str, Any]] = {"baseline": run(folder / "baseline", *baseline_overrides, *budget)}
    teacher = best(folder / "baseline")
    runs["student alone"] = run(folder / "student", *student_overrides, *budget)
    runs["student distilled"] = run(folder / "distilled", *student_overrides, *budget,
                                    f"task.distill.teacher={teacher}")
    tuning = [f"trainer.max_epochs={fine_tune}", *(QUICK if quick else [])]
    ratios = (0.5,) if quick else (0.3, 0.5, 0.7)
    for ratio in ratios:
        runs[f"pruned {ratio}"] = run(folder / f"pruned{ratio}", *task, f"compress.prune.ratio={ratio}",
                                      f"ckpt_path={teacher}", *tuning)
    files, scores = {}, {}
    sources = [("baseline", "baseline"), ("student alone", "student"), ("student distilled", "distilled"),
               *((f"pruned {r}", f"pruned{r}") for r in ratios)]
    for row, source in sources:
        quantize = row in ("baseline", "pruned 0.5")
        export = folder / f"export_{source}"
        run(export, *task, "export.format=onnx", f"ckpt_path={best(folder / source)}",
            *(["export.quantize=int8"] if quantize else []))
        files[row] = export / "export" / "model.onnx"
        scores[row] = runs[row][metric]
        if quantize:
            int8 = json.loads((export / "export" / "model.json").read_text())["int8"]
            label = "INT8" if row == "baseline" else "pruned 0.5 + INT8"
            files[label] = export / "export" / "model.int8.onnx"
            scores[label] = int8["verification"]["int8_score"]
            runs[label] = {**runs[row], "agreement": int8["verification"]["agreement"], "mode": int8["mode"]}
    channels = 1
    latency = onnx_latencies(files, channels, side, batch_sizes, repeats)
    rows = []
    for row, path in files.items():
        costs = runs[row]
        rows.append({"case": f"{name}: {row}", "parameters": costs["cost/parameters"],
                     "MACs": costs["cost/macs"], "file KiB": path.stat().st_size / 1024,
                     **{f"batch {b} ms": latency[row][b] * 1000 for b in batch_sizes},
                     metric: scores[row], "agreement": costs.get("agreement", "")})
    first, last = batch_sizes[0], batch_sizes[-1]
    report = {
        "pruned 0.5 params / baseline": (runs["pruned 0.5"]["cost/parameters"]
                                         / runs["baseline"]["cost/parameters"]),
        f"pruned 0.5 {metric} / baseline": scores["pruned 0.5"] / max(scores["baseline"], 1e-9),
        f"INT8 speed-up at batch {last}": latency["baseline"][last] / latency["INT8"][last],
        f"INT8 speed-up at batch {first}": latency["baseline"][first] / latency["INT8"][first],
        "INT8 agreement": runs["INT8"]["agreement"],
        f"distilled - alone ({metric})": scores["student distilled"] - scores["student alone"],
    }
    for key, value in report.items():
        print(f"ratio {key} [{name}]: {value:.4g}", flush=True)
    print_table(f"Compression: {name}", rows)  # each case's table as soon as it is measured
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    def extra(parser):
        parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
        parser.add_argument("--epochs", type=int, default=5, help="training epochs of each network")
        parser.add_argument("--fine-tune", type=int, default=2, help="fine-tuning epochs after pruning")
        parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])

    args = parse_args(__doc__.splitlines()[0], extra, argv)
    epochs, fine_tune = (1, 1) if args.quick else (args.epochs, args.fine_tune)
    cases = ["digits"] if args.quick and args.cases == list(CASES) else args.cases
    batch_sizes = [1, 2] if args.quick else args.batch_sizes
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in cases:
            rows += measure_case(name, Path(folder) / name, epochs, fine_tune, args.quick, args.repeats,
                                 batch_sizes)
    print(f"machine: {machine_description()}")
    print_table("Compression: cost, onnxruntime latency, quality (agreement: INT8 vs float)", rows)
    return rows


if __name__ == "__main__":
    main()
