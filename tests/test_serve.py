"""Serving over HTTP: upload checks (every bad request gets its 4xx), a real server started on localhost
answering like `predict`, bad requests that leave it serving, a bounded load test, refusals at start."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.uploads import ImageUploads
from tests.inference_helpers import (
    digits_classifier,
    run_in_process,
    small_unet,
    write_digit_test_pngs,
    write_scene_pngs,
)
from tests.run_py import run_py

ROOT = Path(__file__).resolve().parents[1]


def png_bytes(size: tuple[int, int] = (28, 28), mode: str = "L", value: int = 120) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A few hundred bytes that claim 20000 x 20000 pixels (a 1-bit PNG of zeros)."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


BAD_REQUESTS = {  # name: (content, headers or files, status, words of the message)
    "not an image": (b"hello, not a picture", {"content-type": "image/png"}, 400, "not an image"),
    "truncated image": (png_bytes((64, 64), "RGB", 7)[:-40], {"content-type": "image/png"}, 400,
                        "truncated or corrupt"),
    "decompression bomb": (bomb_png(), {"content-type": "image/png"}, 413, "decompression bomb"),
    "empty body": (b"", {"content-type": "application/octet-stream"}, 400, "empty body"),
    "wrong content type": (b'{"image": 1}', {"content-type": "application/json"}, 415,
                           "application/json is not an image upload"),
    "too many pixels": (png_bytes((100, 100)), {"content-type": "image/png"}, 413,
                        "100x100 = 10,000 pixels, more than serve.max_image_pixels=4,096"),
    "multipart without a file": (None, {"files": {"note": (None, "no file")}}, 400, "holds no file"),
}


def send(client: httpx.Client, url: str, case: tuple) -> httpx.Response:
    content, headers, _, _ = case
    if content is None:
        return client.post(url, **headers)
    return client.post(url, content=content, headers=headers)


class Echo:
    """An ASGI app standing in for LitServe: answers with the JSON body it received."""

    async def __call__(self, scope, receive, send):
        message = await receive()
        body = message["body"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def uploads_client() -> httpx.Client:
    """The upload checks in front of `Echo`, through starlette's test client (no server, no model)."""
    from starlette.testclient import TestClient

    return TestClient(ImageUploads(Echo(), max_image_pixels=4096, max_request_bytes=2**20))


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_each_bad_upload_gets_its_4xx_and_a_message(name):
    case = BAD_REQUESTS[name]
    response = send(uploads_client(), "/predict", case)
    assert response.status_code == case[2]
    assert case[3] in response.json()["detail"]


def test_raw_and_multipart_uploads_reach_the_model_as_the_same_bytes_with_the_query_options():
    image = png_bytes()
    client = uploads_client()
    raw = client.post("/predict?top_k=3&format=json", content=image, headers={"content-type": "image/png"})
    form = client.post("/predict", files={"image": ("a.png", image, "image/png")})
    assert raw.status_code == form.status_code == 200
    assert base64.b64decode(raw.json()["image"]) == image == base64.b64decode(form.json()["image"])
    assert raw.json()["top_k"] == "3" and raw.json()["format"] == "json" and "top_k" not in form.json()


def test_a_model_that_does_not_load_stops_the_start_with_a_clean_error(tmp_path):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "model.onnx").write_bytes(b"not onnx")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.onnx").write_bytes(b"not onnx either")
    (tmp_path / "broken" / "model.json").write_text(json.dumps({"task": "classify", "classes": ["a"]}))
    for model, words in ((tmp_path / "missing.ckpt", "No checkpoint file"),
                         (tmp_path / "bare" / "model.onnx", "model.json is missing"),
                         (tmp_path / "broken" / "model.onnx", "cannot be loaded")):
        done = run_py(tmp_path, f"serve.model={model}", check=False, env={"COLUMNS": "400"})
        message = " ".join(re.sub(r"[│╭╮╰╯─]", " ", done.stderr).split())
        assert done.returncode == 2 and words in message and "Traceback" not in done.stderr, done.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(tmp_path: Path, model: Path, *overrides: str):
    """`python run.py serve.model=MODEL` on a free localhost port, until /health answers; stopped with
    Ctrl-C (SIGINT) afterwards, its process group killed if it does not stop."""
    port = free_port()
    log = (tmp_path / f"server_{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), f"serve.model={model}", f"serve.port={port}", *overrides],
        cwd=tmp_path, env={**os.environ, "PROJECT_ROOT": str(tmp_path)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, (tmp_path / f"server_{port}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /health in 300 s"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield url, (tmp_path / f"server_{port}.log")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def predicted_rows(run_dir: Path) -> dict[str, list[str]]:
    with open(run_dir / "predictions.csv") as file:
        return {row["path"]: [row[f"class{k}"] for k in (1, 2, 3)] + [row["prob1"]]
                for row in csv.DictReader(file)}


@pytest.mark.slow
def test_a_served_classifier_answers_like_predict_refuses_bad_requests_and_survives_a_load_test(
        tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    labels = write_digit_test_pngs(tmp_path / "digits")
    paths = sorted(labels)[:40]
    run_in_process(tmp_path / "predict", f"predict.input={tmp_path / 'digits'}", f"ckpt_path={checkpoint}",
                   "predict.top_k=3", "debug=smoke")
    expected = predicted_rows(tmp_path / "predict")
    with server(tmp_path, checkpoint, "serve.max_batch_size=8", "serve.batch_timeout=0.005",
                "serve.max_image_pixels=4096") as (url, log):
        curl = f"curl -X POST --data-binary @photo.png -H 'Content-Type: image/png' {url}/predict"
        assert curl in log.read_text()
        with httpx.Client(timeout=60) as client:
            assert client.get(f"{url}/health").text == "ok"
            for index, path in enumerate(paths):
                data = Path(path).read_bytes()
                if index % 2:
                    response = client.post(f"{url}/predict?top_k=3", files={"image": ("x.png", data)})
                else:
                    response = client.post(f"{url}/predict?top_k=3", content=data,
                                           headers={"content-type": "image/png"})
                top = response.json()["predictions"]
                assert [p["class"] for p in top] == expected[path][:3]
                assert top[0]["probability"] == pytest.approx(float(expected[path][3]), abs=2e-6)
            for name, case in BAD_REQUESTS.items():
                response = send(client, f"{url}/predict", case)
                assert response.status_code == case[2] and case[3] in response.json()["detail"], name
            assert client.post(f"{url}/predict", content=Path(paths[0]).read_bytes(),
                               headers={"content-type": "image/png"}).status_code == 200
        answers, errors = load_test(url, paths, clients=32, requests_each=20)
        assert not errors and len(answers) == 32 * 20
        assert all(expected[path][0] == top1 for path, top1 in answers)


def load_test(url: str, paths: list[str], clients: int, requests_each: int) -> tuple[list, list]:
    """`clients` threads, each with its own connection, sending `requests_each` images in turn."""
    answers: list[tuple[str, str]] = []
    errors: list[str] = []
    images = {path: Path(path).read_bytes() for path in paths}

    def client_loop(number: int) -> None:
        with httpx.Client(timeout=120) as client:
            for request in range(requests_each):
                path = paths[(number * requests_each + request) % len(paths)]
                try:
                    response = client.post(f"{url}/predict", content=images[path],
                                           headers={"content-type": "image/png"})
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                        continue
                    answers.append((path, response.json()["predictions"][0]["class"]))
                except httpx.HTTPError as err:
                    errors.append(repr(err))

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return answers, errors


@pytest.mark.slow
def test_a_served_unet_returns_predicts_masks_as_png_and_class_fractions_as_json(tmp_path, tmp_path_factory):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    scenes = write_scene_pngs(tmp_path / "scenes", sizes=(32, 40))
    run_in_process(tmp_path / "predict", "task=segment", f"predict.input={tmp_path / 'scenes'}",
                   f"ckpt_path={checkpoint}", "debug=smoke")
    with server(tmp_path, checkpoint, "task=segment", "serve.batch_timeout=0.05") as (url, _), \
            httpx.Client(timeout=60) as client:
        for scene in scenes:
            response = client.post(f"{url}/predict", content=scene.read_bytes(),
                                   headers={"content-type": "image/png"})
            assert response.headers["content-type"] == "image/png"
            served = np.array(Image.open(io.BytesIO(response.content)))
            predicted = np.array(Image.open(tmp_path / "predict" / "masks" / f"{scene.name}.png"))
            assert np.array_equal(served, predicted)
            fractions = client.post(f"{url}/predict?format=json", content=scene.read_bytes(),
                                    headers={"content-type": "image/png"}).json()
            counts = np.bincount(predicted.flatten(), minlength=11) / predicted.size
            assert (fractions["height"], fractions["width"]) == predicted.shape
            assert np.allclose(list(fractions["class_fractions"].values()), counts)
