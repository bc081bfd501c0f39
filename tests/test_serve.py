"""`zsad serve`: the batching queue, and the HTTP API through FastAPI's test client."""
from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
from fastapi.testclient import TestClient  # noqa: E402

from zsad.api import load  # noqa: E402
from zsad.serve import ServeSettings, create_app  # noqa: E402
from zsad.serve.batching import BatchingQueue, QueueFullError  # noqa: E402


# ----------------------------------------------------------------------------- queue
def test_waiting_requests_share_forward_passes_and_get_their_own_results():
    calls = []

    def run_batch(items):
        calls.append(list(items))
        return [10 * item for item in items]

    async def scenario():
        queue = BatchingQueue(run_batch, max_batch=4, window_s=0.0, max_queue=16)
        queue.start()
        results = await asyncio.gather(*(queue.submit([i, i + 100]) for i in range(3)))
        await queue.stop()
        return queue, results

    queue, results = asyncio.run(scenario())
    assert results == [[0, 1000], [10, 1010], [20, 1020]]
    assert [len(c) for c in calls] == [4, 2] and queue.passes == 2 and queue.largest_batch == 4


def test_a_full_queue_refuses_at_once_and_a_failing_batch_does_not_stop_the_worker():
    release = threading.Event()

    def run_batch(items):
        if items == ["boom"]:
            raise RuntimeError("model failed")
        release.wait(timeout=30)
        return items

    async def scenario():
        queue = BatchingQueue(run_batch, max_batch=1, window_s=0.0, max_queue=2)
        queue.start()
        first = asyncio.ensure_future(queue.submit(["a"]))
        while queue.passes == 0:  # the worker has taken "a" and is blocked in run_batch
            await asyncio.sleep(0.001)
        waiting = asyncio.ensure_future(queue.submit(["b", "c"]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="2 images are waiting"):
            await queue.submit(["d"])
        release.set()
        assert await first == ["a"] and await waiting == ["b", "c"]
        with pytest.raises(RuntimeError, match="model failed"):
            await queue.submit(["boom"])
        assert await queue.submit(["e"]) == ["e"]
        await queue.stop()

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- HTTP
@pytest.fixture(scope="module")
def detector():
    import torch

    torch.manual_seed(0)
    return load("zeroshot", backbone="zsad-tiny", weights="random", image_size=64, device="cpu")


@pytest.fixture
def client(detector):
    app = create_app(detector, ServeSettings(max_files=3, max_image_pixels=300 * 300), {"method": "zeroshot", "pipeline_check": True})
    with TestClient(app) as test_client:
        yield test_client


def _png(size=(48, 40), colour=(200, 60, 30)) -> bytes:
    buffer = io.BytesIO()
    array = np.full((size[1], size[0], 3), 20, np.uint8)
    array[10:30, 10:30] = colour
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_info_and_page(client):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["method"] == "zeroshot" and info["image_size"] == 64 and len(info["colour_stops"]) == 11
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "colourbar" in page.text


def test_predict_scores_several_images_like_the_library(client, detector):
    files = [("file", ("a.png", _png(), "image/png")), ("file", ("b.png", _png((30, 50), (90, 200, 90)), "image/png"))]
    response = client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = detector.predict([Image.open(io.BytesIO(data)).convert("RGB") for _, (_, data, _) in files])
    assert [r["filename"] for r in body["results"]] == ["a.png", "b.png"]
    for result, prediction, size in zip(body["results"], expected, [(48, 40), (30, 50)]):
        assert result["score"] == pytest.approx(prediction.score, abs=1e-6)
        assert result["label"] == int(result["score"] >= body["threshold"])
        overlay = Image.open(io.BytesIO(base64.b64decode(result["overlay_png"])))
        assert overlay.format == "PNG" and overlay.size == size
    assert client.post("/predict?overlay=false", files=files[:1]).json()["results"][0]["overlay_png"] is None


def test_bad_uploads_get_a_clear_4xx_and_the_service_keeps_serving(client):
    truncated = _png((64, 64))[:60]
    cases = [
        ([("file", ("notes.png", b"hello, not an image", "image/png"))], 400, "notes.png: not a readable image"),
        ([("file", ("cut.png", truncated, "image/png"))], 400, "cut.png: not a readable image"),
        ([("file", ("empty.png", b"", "image/png"))], 400, "empty.png: empty upload"),
        ([("other", ("a.png", _png(), "image/png"))], 400, "multipart field 'file'"),
        ([("file", ("huge.png", _png((400, 300)), "image/png"))], 413, "huge.png: 400 x 300 pixels exceeds"),
        ([("file", (f"{i}.png", _png(), "image/png")) for i in range(4)], 413, "at most 3 images per request"),
    ]
    for files, status, message in cases:
        response = client.post("/predict", files=files)
        assert response.status_code == status, (message, response.text)
        assert message in response.json()["detail"]
    not_multipart = client.post("/predict", content=b"raw bytes", headers={"content-type": "application/octet-stream"})
    assert not_multipart.status_code == 400
    assert client.post("/predict", files=[("file", ("ok.png", _png(), "image/png"))]).status_code == 200


def test_request_size_limit(detector):
    app = create_app(detector, ServeSettings(max_request_bytes=1000))
    with TestClient(app) as client:
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, format="PNG")  # ~12 kB: noise does not compress
        response = client.post("/predict", files=[("file", ("a.png", buffer.getvalue(), "image/png"))])
    assert response.status_code == 413 and "exceeds the limit of 1000 bytes" in response.json()["detail"]


def test_a_full_queue_answers_503_with_retry_after(detector, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    original = detector.predict

    def slow_predict(images, **kwargs):
        entered.set()
        release.wait(timeout=30)
        return original(images, **kwargs)

    monkeypatch.setattr(detector, "predict", slow_predict)
    app = create_app(detector, ServeSettings(max_batch=1, max_queue=1, batch_window_ms=0, retry_after_s=3))
    files = [("file", ("a.png", _png(), "image/png"))]
    with TestClient(app) as client:
        answers = []
        workers = [threading.Thread(target=lambda: answers.append(client.post("/predict", files=files).status_code)) for _ in range(2)]
        workers[0].start()
        assert entered.wait(timeout=30)
        workers[1].start()
        deadline = time.monotonic() + 30
        while client.get("/health").json()["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = client.post("/predict", files=files)
        release.set()
        for worker in workers:
            worker.join(timeout=60)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
    assert "retry shortly" in refused.json()["detail"]
    assert answers == [200, 200]


def test_cli_serve_builds_the_app_binds_loopback_by_default_and_warns_otherwise(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from zsad.cli import app as cli

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kwargs: started.append((app, host, port)))
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "good.png").write_bytes(_png())
    tiny = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu"]
    result = CliRunner().invoke(cli, ["serve", *tiny, "--reference", str(tmp_path / "refs"), "--max-files", "2"])
    assert result.exit_code == 0, result.output
    served, host, port = started[0]
    assert (host, port) == ("127.0.0.1", 8080) and "reachable from the network" not in result.output
    with TestClient(served) as client:
        info = client.get("/info").json()
        assert info["references"] == 1 and info["limits"]["max_files"] == 2 and info["method"] == "zeroshot"
        assert client.post("/predict", files=[("file", ("a.png", _png(), "image/png"))]).status_code == 200
    exposed = CliRunner().invoke(cli, ["serve", *tiny, "--host", "0.0.0.0"])
    assert exposed.exit_code == 0 and started[1][1] == "0.0.0.0"
    assert "reachable from the network" in exposed.output
