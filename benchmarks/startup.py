"""Start-up: wall time of `python run.py --help`, and from the command to the first training step.

The first-step time of `python run.py` (digits, small CNN, default callbacks and logger, on the
CPU) is compared with a plain script that imports torch, loads the same digits, builds the same
network and starts one Adam step. Both print the time at which their first step starts; the
process is stopped there. Each figure is the median of `--repeats` runs after one warm-up run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, machine_description, median_seconds, parse_args, print_table
from first_step import MARKER

PLAIN_SCRIPT = f"""
import time
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from lightning_modules.nets.mnist_cnn import MNISTCNN

digits = load_digits()
x = torch.tensor(digits.images[:64], dtype=torch.float32).unsqueeze(1) / 16.0
x = F.interpolate(x, size=28, mode="bilinear", align_corners=False)
y = torch.tensor(digits.target[:64])
net = MNISTCNN(1, 10, 28)
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
print("{MARKER}", f"{{time.time():.6f}}", flush=True)
optimizer.zero_grad()
F.cross_entropy(net(x), y).backward()
optimizer.step()
"""


def seconds_to_first_step(command: list[str]) -> float:
    """Seconds from launching `command` to the time it prints after MARKER; the process is then stopped."""
    start = time.time()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if line.startswith(MARKER):
                return float(line.split()[-1]) - start
    finally:
        process.kill()
        process.wait()
    raise RuntimeError(f"{' '.join(command)} exited without printing {MARKER!r}.")


def median_to_first_step(command: list[str], repeats: int, warmup: int = 1) -> float:
    """Median of `seconds_to_first_step` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        seconds_to_first_step(command)
    return statistics.median(seconds_to_first_step(command) for _ in range(repeats))


def imports_torch(command: list[str]) -> bool:
    """Whether `command` (a python invocation) imports torch, from `python -X importtime`."""
    result = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    return any(line.rstrip().endswith("| torch") for line in result.stderr.splitlines())


def main() -> None:
    """Measure and print the start-up figures and the first-step ratio."""
    args = parse_args(__doc__.splitlines()[0])
    warmup = 0 if args.quick else 1
    if args.quick:
        args.repeats = 1
    print(f"Machine: {machine_description()}")
    help_command = [sys.executable, "run.py", "--help"]
    help_seconds = median_seconds(
        lambda: subprocess.run(help_command, cwd=ROOT, capture_output=True, check=True), args.repeats, warmup
    )
    python_seconds = median_seconds(
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.repeats, warmup
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_command = [
            sys.executable, "run.py", "trainer.accelerator=cpu", f"hydra.run.dir={tmp}",
            "+callbacks.first_step._target_=benchmarks.first_step.FirstStepTime",
        ]
        framework = median_to_first_step(run_command, args.repeats, warmup)
    plain = median_to_first_step([sys.executable, "-c", PLAIN_SCRIPT], args.repeats, warmup)
    print_table(f"Start-up, median of {args.repeats} runs after {warmup} warm-up run(s)", [
        {"measure": "python -c pass", "seconds": python_seconds},
        {"measure": "python run.py --help", "seconds": help_seconds},
        {"measure": "plain script: command to first step", "seconds": plain},
        {"measure": "python run.py: command to first step", "seconds": framework},
    ])
    print(f"run.py --help imports torch: {'yes' if imports_torch(help_command) else 'no'}")
    print(f"ratio plain/framework [command to first step]: {plain / framework:.3f}")


if __name__ == "__main__":
    main()
