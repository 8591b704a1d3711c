"""The real HTTP server in a subprocess: recommend, 4xx on bad input, hot reload under load, broken checkpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from onerec.io import atomic_path
from tests.serve.conftest import N_ITEMS, write_run

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One server for the module (starting one costs seconds); the reload test, which changes it, runs last."""
    tiny_run = tmp_path_factory.mktemp("serve") / "run"
    write_run(tiny_run, seed=0)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "onerec.cli", "serve", "--run", str(tiny_run), "--port", str(port),
         "--set", "serve.reload_poll_s=0.3", "--set", "serve.threads=1", "--set", "serve.max_body_bytes=20000"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("server never became ready")
    yield base, tiny_run
    proc.terminate()
    proc.wait(timeout=20)


def test_recommend_valid_distinct_items(server) -> None:
    """A recommendation holds n_items distinct known items; unknown history ids are listed as ignored."""
    base, _ = server
    r = httpx.post(f"{base}/v1/recommend", json={"history": ["v1", "v2", 3, "nope"], "n_items": 7,
                                                 "beam_size": 8, "exclude": ["v9"]}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 7 and len(set(body["items"])) == 7, body
    assert set(body["items"]) <= {f"v{i}" for i in range(N_ITEMS)} - {"v9"}, body["items"]
    assert body["ignored"] == ["3", "nope"] and not body["fallback"]
    empty = httpx.post(f"{base}/v1/recommend", json={"history": []}, timeout=30).json()
    assert empty["fallback"] and len(empty["items"]) == 10, "empty history must get the documented fallback"
    metrics = httpx.get(f"{base}/metrics").text
    assert 'onerec_requests_total{outcome="ok"}' in metrics and "onerec_request_latency_seconds_bucket" in metrics


def test_exclude_history_never_recommends_the_history(server) -> None:
    """With exclude_history the session holds no history item; without it the flag changes nothing else."""
    base, _ = server
    history = [f"v{i}" for i in range(40)]  # 40 of 60 items: a model that ignored the flag would hit one
    for flag in (True, False):
        r = httpx.post(f"{base}/v1/recommend", json={"history": history, "n_items": 8, "beam_size": 8,
                                                     "exclude_history": flag}, timeout=30)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert len(set(items)) == 8, items
        if flag:
            assert not set(items) & set(history), f"history items recommended: {set(items) & set(history)}"
    too_many = [f"v{i}" for i in range(N_ITEMS - 2)]
    r = httpx.post(f"{base}/v1/recommend", json={"history": too_many, "n_items": 5, "exclude_history": True},
                   timeout=30)
    assert r.status_code == 422 and "exclude_history" in r.text, r.text


@pytest.mark.parametrize(
    "payload, status",
    [
        (b"{not json", 422),
        (b'{"history": "v1"}', 422),
        (b'{"history": [1.5]}', 422),
        (b'{"history": ["v1"], "n_items": 0}', 422),
        (b'{"history": ["v1"], "n_items": 500}', 422),
        (b'{"history": ["v1"], "beam_size": -2}', 422),
        (b'{"history": ["v1"], "n_items": "3"}', 422),
        (b'{"history": ["v1"], "colour": "red"}', 422),
        (b'{"history": ["' + b"x" * 30000 + b'"]}', 413),
    ],
)
def test_bad_requests_get_4xx(server, payload: bytes, status: int) -> None:
    """Malformed JSON, wrong types, out-of-range values and oversized bodies are 4xx with a message."""
    base, _ = server
    r = httpx.post(f"{base}/v1/recommend", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status, (payload[:60], r.status_code, r.text)
    assert r.json()["detail"], "a 4xx must say what is wrong"


def test_hot_reload_under_load_and_broken_checkpoint(server) -> None:
    """A new checkpoint swaps in while requests run (none fail); a broken one is refused, the old keeps serving."""
    base, run = server
    v0 = httpx.get(f"{base}/readyz").json()["model_version"]
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{base}/v1/recommend", json={"history": ["v1", "v5"], "n_items": 5})
                if r.status_code != 200:
                    failures.append(r.text)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    write_run(run, seed=1)  # atomic writes, as the trainer does
    deadline = time.time() + 30
    while time.time() < deadline and httpx.get(f"{base}/readyz").json()["model_version"] == v0:
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    v1 = httpx.get(f"{base}/readyz").json()["model_version"]
    assert v1 != v0, "the new checkpoint was not picked up"
    assert not failures, failures[:3]

    with atomic_path(run / "model.safetensors") as tmp:
        tmp.write_bytes(b"garbage")
    refused = httpx.post(f"{base}/admin/reload", timeout=30)
    assert refused.status_code == 409, refused.text
    r = httpx.post(f"{base}/v1/recommend", json={"history": ["v1"], "n_items": 3}, timeout=30)
    assert r.status_code == 200 and r.json()["model_version"] == v1, r.text
