"""Requests/s of `python run.py serve.model=...` with dynamic batching against one request at a time.

    python benchmarks/serving.py [--quick] [--repeats 3] [--clients 32] [--requests 20] [--cases ...]

Each case starts two servers of the same checkpoint (random weights, run.py's format) on localhost,
`serve.max_batch_size=16` (batch timeout 10 ms) and `serve.max_batch_size=1`, one model process each;
then `--clients` threads, each with its own connection, POST `--requests` PNG images each, all at once,
to one server and then the other, alternately, `--repeats` times (after a warm-up round). Every
answer must be a 200: an error or a lost request fails the run.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, machine_description, parse_args, print_table

CASES = {"mnist_cnn": ([], 28), "resnet18": (["model=resnet18", "data.image_size=64"], 64)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(checkpoint: Path, folder: Path, *overrides: str):
    """A server of `checkpoint` on a free port, up (GET /health) until the block ends."""
    import httpx

    port = free_port()
    log = (folder / f"server_{port}.log").open("w")
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), f"serve.model={checkpoint}",
                                f"serve.port={port}", *overrides], cwd=folder, stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, "PROJECT_ROOT": str(folder)},
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not healthy(httpx, url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((folder / f"server_{port}.log").read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def healthy(httpx, url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def load(url: str, images: list[bytes], clients: int, requests_each: int) -> float:
    """Requests/s of `clients` concurrent clients sending `requests_each` images each; any error raises."""
    import httpx

    errors: list[str] = []
    answered = [0] * clients
    start = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        with httpx.Client(timeout=300) as session:
            start.wait()
            for request in range(requests_each):
                image = images[(number + request) % len(images)]
                response = session.post(f"{url}/predict", content=image,
                                        headers={"content-type": "image/png"})
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                answered[number] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors or sum(answered) != clients * requests_each:
        raise RuntimeError(f"{len(errors)} error(s), {sum(answered)} of {clients * requests_each} answered: "
                           f"{errors[:3]}")
    return clients * requests_each / seconds


def png_images(side: int, count: int = 16) -> list[bytes]:
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(generator.integers(0, 256, (side, side), dtype=np.uint8)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def measure_case(name: str, folder: Path, clients: int, requests_each: int,
                 repeats: int) -> dict[str, object]:
    """Requests/s of the two servers of case `name`, alternately, the medians and their ratio."""
    from inference import run_config, write_checkpoint

    overrides, side = CASES[name]
    folder.mkdir(parents=True)
    checkpoint = write_checkpoint(run_config(overrides), folder)
    images = png_images(side)
    # requests may queue for minutes on a loaded machine: a 504 would drop them instead of timing them
    settings = {"batched": ["serve.max_batch_size=16", "serve.batch_timeout=0.01", "serve.timeout=900"],
                "one at a time": ["serve.max_batch_size=1", "serve.timeout=900"]}
    rates: dict[str, list[float]] = {key: [] for key in settings}
    with server(checkpoint, folder, *settings["batched"]) as batched, \
            server(checkpoint, folder, *settings["one at a time"]) as single:
        urls = {"batched": batched, "one at a time": single}
        for url in urls.values():
            load(url, images, clients, 2)  # warm-up: connections, first batches
        for _ in range(repeats):
            for key, url in urls.items():
                rates[key].append(load(url, images, clients, requests_each))
    batched_rate = statistics.median(rates["batched"])
    single_rate = statistics.median(rates["one at a time"])
    print(f"ratio batched/one-at-a-time [{name}, {clients} clients]: {batched_rate / single_rate:.2f} "
          f"({batched_rate:.1f} against {single_rate:.1f} requests/s)", flush=True)
    return {"case": f"{name} {side}px, {clients} clients x {requests_each} requests",
            "batched req/s": batched_rate, "max_batch_size=1 req/s": single_rate,
            "ratio": batched_rate / single_rate}


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    def extra(parser):
        parser.add_argument("--clients", type=int, default=32)
        parser.add_argument("--requests", type=int, default=20, help="requests per client")
        parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))

    args = parse_args(__doc__.splitlines()[0], extra, argv)
    # SIGTERM (e.g. `timeout`) ends the run through the finally blocks, which stop the servers
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    cases = ["mnist_cnn"] if args.quick and args.cases == list(CASES) else args.cases
    clients, requests_each = (4, 2) if args.quick else (args.clients, args.requests)
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure_case(name, Path(folder) / name, clients, requests_each, args.repeats)
                for name in cases]
    print(f"machine: {machine_description()}")
    print_table("Serving: requests/s, dynamic batching against one request at a time", rows)
    return rows


if __name__ == "__main__":
    main()
