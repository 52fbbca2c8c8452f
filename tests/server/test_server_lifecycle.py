"""The queue bound (503 + Retry-After), cancelling the jobs of clients that went away, SIGTERM
draining the work in flight and exiting 0, and the refusal to listen beyond loopback without auth."""
import signal
import subprocess
import threading
import time

import pytest
import requests

from server_process import SDRT, ServerProcess
from sdrt.server.serve import check_exposure, is_loopback

LONG = {"prompt": "a red circle", "steps": 150, "width": 512, "height": 512, "n_iter": 16}  # minutes of work
SHORT = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64}


def _background(server, payload, **kw):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", server.post("txt2img", payload, **kw)))
    t.start()
    return t, out


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def small_queue():
    s = ServerProcess("--queue-size", "1").wait_ready()
    yield s
    assert s.terminate() == 0


def test_a_full_queue_answers_503_with_retry_after(small_queue):
    s = small_queue
    running, out_a = _background(s, LONG, timeout=900)
    s.wait_busy()
    waiting, out_b = _background(s, SHORT)
    assert _wait(lambda: s.get("progress").json()["queue_length"] == 1)
    refused = s.post("txt2img", SHORT)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["detail"]
    s.post("interrupt")
    running.join(60)
    waiting.join(60)
    assert out_a["r"].status_code == 200 and out_b["r"].status_code == 200  # both queued jobs answered
    assert len(out_b["r"].json()["images"]) == 1


def test_a_client_that_disconnects_cancels_its_job(small_queue):
    s = small_queue
    # running: the client gives up after 2 s; the worker stops the job at its next step
    with pytest.raises(requests.ReadTimeout):
        s.post("txt2img", LONG, timeout=(5, 2))
    assert _wait(lambda: s.get("progress").json()["state"]["job"] == "", timeout=20)
    # queued: a waiting job whose client left is dropped without running
    running, out = _background(s, LONG, timeout=900)
    s.wait_busy()
    with pytest.raises(requests.ReadTimeout):
        s.post("txt2img", SHORT, timeout=(5, 1))
    assert _wait(lambda: s.get("progress").json()["queue_length"] == 0, timeout=10)
    assert s.get("progress").json()["state"]["job"] == "txt2img"  # the other job still runs
    s.post("interrupt")
    running.join(60)
    assert out["r"].status_code == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_drains_the_work_in_flight_and_exits_0(sig):
    s = ServerProcess().wait_ready()
    t, out = _background(s, {**SHORT, "steps": 40, "width": 128, "height": 128})
    s.wait_busy()
    assert s.terminate(sig=sig) == 0
    t.join(60)
    assert out["r"].status_code == 200 and len(out["r"].json()["images"]) == 1  # finished, not dropped
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{s.url}/health/live", timeout=5)


@pytest.mark.parametrize("args", [["--host", "0.0.0.0"], ["--listen"]])
def test_listening_beyond_loopback_needs_auth(args):
    r = subprocess.run([SDRT, "serve", "--port", "1", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--api-auth" in r.stderr and "--insecure-no-auth" in r.stderr


def test_an_unknown_start_model_stops_before_serving(tmp_path):
    r = subprocess.run([SDRT, "serve", "--port", "1", "--model", "../outside.safetensors"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--model" in r.stderr and "--models-dir" in r.stderr
    r = subprocess.run([SDRT, "serve", "--port", "1", "--models-dir", str(tmp_path), "--model", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nope" in r.stderr


def test_exposure_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    check_exposure("127.0.0.1", has_auth=False, insecure=False)
    check_exposure("0.0.0.0", has_auth=True, insecure=False)
    check_exposure("0.0.0.0", has_auth=False, insecure=True)
    with pytest.raises(ValueError, match="--api-auth"):
        check_exposure("10.0.0.1", has_auth=False, insecure=False)


def test_basic_auth_on_every_route():
    import webuiapi

    s = ServerProcess("--api-auth", "alice:s3cret,bob:pw:with:colons", auth=("alice", "s3cret")).wait_ready()
    try:
        for path in ("/sdapi/v1/progress", "/sdapi/v1/sd-models", "/docs", "/openapi.json", "/health/live"):
            r = requests.get(s.url + path, timeout=10)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic"), path
            assert requests.get(s.url + path, auth=("alice", "wrong"), timeout=10).status_code == 401
            assert requests.get(s.url + path, auth=("mallory", "s3cret"), timeout=10).status_code == 401
            assert requests.get(s.url + path, auth=("bob", "pw:with:colons"), timeout=10).status_code == 200
        assert requests.post(f"{s.api}/txt2img", json=SHORT, timeout=60).status_code == 401
        api = webuiapi.WebUIApi(host="127.0.0.1", port=s.port, username="alice", password="s3cret")
        assert len(api.txt2img(prompt="a red circle", steps=2, width=64, height=64).images) == 1
    finally:
        assert s.terminate() == 0
