"""`talkgs serve --ray`: sessions on two CPU workers that a local Ray instance places and restarts.

One Ray instance for the module (two units of the `talkgs_cpu_worker` resource), a front started
as `talkgs serve RUN --ray ADDRESS` on it, headless Chromium as one client and Python WebRTC
peers (talkgs.serve.client) as the others; a worker is killed with `ray.kill` and Ray restarts it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import numpy as np
import pytest

from talkgs.serve.cluster import CPU_RESOURCE, worker_plan
from tests.test_serve import TOKEN, _free_port, _Loop, _speech, start_server

ray = pytest.importorskip("ray", reason="--ray needs ray (pip install 'talkgs[cluster]')")

MAX_SESSIONS = 2  # per worker


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance offering two CPU workers' resource."""
    ray.init(include_dashboard=False, num_cpus=2, resources={"talkgs_cpu_worker": 2}, namespace="talkgs",
             logging_level="WARNING", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def front(cluster, live_run):
    port = _free_port()
    cmd = [sys.executable, "-m", "talkgs", "serve", str(live_run), "--ray", cluster, "--ray-workers", "2",
           "--device", "cpu", "--port", str(port), "--token", TOKEN, "--max-sessions", str(MAX_SESSIONS),
           "--max-batch", "8", "--idle-timeout-s", "6"]
    proc, lines = start_server(cmd, 180)
    loop = _Loop()
    state = {"url": f"http://127.0.0.1:{port}", "proc": proc, "log": lines, "head": live_run.name, "loop": loop,
             "clients": {}}
    try:
        yield state
    finally:
        async def stop():
            for c in state["clients"].values():
                await c.close()
            if "browser" in state:
                await state["browser"].__aexit__(None, None, None)
        try:
            loop.run(stop(), timeout=30)
        finally:
            loop.close()
        proc.terminate()
        assert proc.wait(30) == 143, "".join(lines)
        assert not any("Traceback" in ln for ln in lines), "".join(lines)


async def _status(url):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/api/status", headers={"X-Talkgs-Token": TOKEN}) as r:
            return await r.json()


async def _until(cond, timeout_s: float, what: str, period_s: float = 0.1):
    t0 = time.monotonic()
    while not (v := await cond()):
        assert time.monotonic() - t0 < timeout_s, what
        await asyncio.sleep(period_s)
    return v


def _client(front, offset_s, **kw):
    from talkgs.serve.client import LiveClient

    return LiveClient(front["url"], front["head"], _speech(4.0, offset_s=offset_s), token=TOKEN, **kw)


def test_sessions_spread_over_the_workers_and_a_full_cluster_refuses(front, tmp_path_factory):
    """The page, through the Ray front: its session streams and its figures name its worker; the
    next session lands on the other worker (the one with more free places); once both workers
    hold --max-sessions, the next offer is refused with 503 and one line."""
    from talkgs.media import write_wav
    from talkgs.serve.client import Refused
    from talkgs.serve.webrtc import restrict_ice_addresses
    from tests.cdp import Browser, find_chromium

    restrict_ice_addresses("127.0.0.1")
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (`make test` installs Debian's package: apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("ray-browser")
    mic = tmp / "mic.wav"
    write_wav(mic, np.concatenate([_speech(4.0, offset_s=0.3), np.zeros(16000, np.float32)]), 16000)
    flags = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={mic}"]
    url = front["url"]

    async def scenario():
        b = Browser(binary, tmp / "profile", flags)
        await b.__aenter__()
        front["browser"] = b
        page = front["page"] = await b.open(f"{url}/?token={TOKEN}")
        await page.wait_for("window.talkgs && talkgs.heads && talkgs.heads.length === 1")
        await page.eval("document.getElementById('mic').click()")
        await page.wait_for("talkgs.state === 'connected' && talkgs.firstFrame !== null && talkgs.worker", timeout_s=60)
        shown = await page.eval("talkgs.shown")
        await page.wait_for(f"talkgs.shown >= {shown + 25} && document.getElementById('st-server').textContent"
                            ".startsWith('worker ')", timeout_s=60)
        out = {"page_worker": await page.eval("talkgs.worker"),
               "figure": await page.eval("document.getElementById('st-server').textContent")}
        cs = front["clients"]
        for k, name in enumerate(("b", "c", "d")):
            cs[name] = _client(front, 1.0 + k)
            await cs[name].connect()
        try:
            await _client(front, 0.5, reconnect=False).connect()
            out["fifth"] = None
        except Refused as e:
            out["fifth"] = (e.status, str(e))
        out["status"] = await _status(url)
        await _until(lambda: asyncio.sleep(0, all(len(c.video) >= 10 for c in cs.values())), 60, "frames")
        return out

    out = front["loop"].run(scenario(), timeout=240)
    cs = front["clients"]
    assert out["figure"].startswith(f"worker {out['page_worker']}:"), out["figure"]
    assert cs["b"].worker != out["page_worker"], (cs["b"].worker, out["page_worker"])
    workers = [out["page_worker"]] + [c.worker for c in cs.values()]
    assert sorted(workers) == ["w0", "w0", "w1", "w1"], workers
    status, line = out["fifth"]
    assert status == 503 and "full" in line and "\n" not in line, out["fifth"]
    st = out["status"]
    assert [(w["worker"], w["up"], w["sessions"]) for w in st["workers"]] == [("w0", True, 2), ("w1", True, 2)], st
    assert sorted(s["worker"] for s in st["sessions"]) == ["w0", "w0", "w1", "w1"] and st["refused"] == 1


def test_a_killed_worker_s_sessions_reconnect_on_the_other_and_ray_restarts_it(front):
    """ray.kill on the worker serving the page and a Python client: both learn it from the front
    and are served by the other worker within 10 s (frames again, the page's figures name the new
    worker); Ray starts the killed worker again and the front places sessions there again."""
    url, page, cs = front["url"], front["page"], front["clients"]

    async def scenario():
        doomed = await page.eval("talkgs.worker")
        other = "w1" if doomed == "w0" else "w0"
        # The other worker keeps one free place: its clients leave; one client stays with the page.
        stay = next(c for c in cs.values() if c.worker == doomed)
        for name, c in list(cs.items()):
            if c is not stay:
                await c.close()
                del cs[name]
        await _until(lambda: _sessions_on(url, other, 0), 15, "the other worker's clients did not leave")
        st = await _status(url)
        actor = ray.get_actor(next(w["actor"] for w in st["workers"] if w["worker"] == doomed), namespace="talkgs")
        n_frames = len(stay.video)
        t_kill = time.monotonic()
        ray.kill(actor, no_restart=False)
        await _until(lambda: asyncio.sleep(0, bool(stay.reconnects) and stay.worker == other), 10,
                     "the Python client did not reconnect on the other worker")
        await page.wait_for(f"talkgs.worker === '{other}' && talkgs.state === 'connected'", timeout_s=10)
        t_page = time.monotonic() - t_kill
        shown = await page.eval("talkgs.shown")
        await page.wait_for(f"talkgs.shown >= {shown + 25}", timeout_s=60)
        await _until(lambda: asyncio.sleep(0, len(stay.video) >= n_frames + 25), 60, "no frames after reconnecting")
        new_frames = stay.frame_indices(conn=len(stay.conns) - 1)
        messages = await page.eval("talkgs.messages.map(m => m.msg)")
        st = await _until(lambda: _restarted(url, doomed), 120, "Ray did not restart the killed worker")
        return {"t_page": t_page, "new_frames": new_frames, "messages": messages, "status": st, "doomed": doomed,
                "reconnect": stay.reconnects[0]}

    out = front["loop"].run(scenario(), timeout=300)
    assert out["t_page"] < 10 and out["reconnect"]["t_connected"] - out["reconnect"]["t_lost"] < 10, out
    assert out["new_frames"].size >= 25 and np.all(np.diff(out["new_frames"]) > 0)
    assert any("stopped" in m or "restarted" in m for m in out["messages"]) and out["messages"][-1] == "Reconnected.", out["messages"]
    w = next(w for w in out["status"]["workers"] if w["worker"] == out["doomed"])
    assert w["up"] and w["restarts"] == 1, out["status"]


async def _sessions_on(url, worker, n):
    st = await _status(url)
    return sum(s["worker"] == worker for s in st["sessions"]) == n


async def _restarted(url, worker):
    st = await _status(url)
    w = next(w for w in st["workers"] if w["worker"] == worker)
    return st if w["up"] and w["restarts"] >= 1 else None


def test_ray_without_ray_installed_is_refused_in_one_line(live_run):
    """`--ray` where `import ray` fails: one line naming what to install, exit 2, before loading;
    --ray-workers or --workers-per-gpu without --ray, --workers-per-gpu with --device cpu or out of
    range, and two addresses are refused in one line too."""
    code = ("import sys; sys.modules['ray'] = None; from talkgs.cli import main; "
            f"sys.argv = ['talkgs', 'serve', {str(live_run)!r}, '--ray']; sys.exit(main())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("talkgs:") and "pip install 'talkgs[cluster]'" in lines[0], lines
    cases = ((["--ray-workers", "2"], "--ray-workers needs --ray"), (["--ray", "a:1", "b:2"], "at most one"),
             (["--workers-per-gpu", "2"], "--workers-per-gpu needs --ray"),
             (["--ray", "--device", "cpu", "--workers-per-gpu", "2"], "--workers-per-gpu shares GPUs"),
             (["--ray", "--workers-per-gpu", "0"], "--workers-per-gpu must be in [1, 16], got 0"))
    for args, says in cases:
        r = subprocess.run([sys.executable, "-m", "talkgs", "serve", str(live_run), *args], capture_output=True,
                           text=True, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and says in lines[0], r.stderr


def test_worker_plan_puts_w_workers_on_each_gpu_each_taking_1_over_w_of_it():
    total = {"CPU": 64.0, "GPU": 4.0, "memory": 1e12}
    assert worker_plan(total, False, 0, 1) == (4, {"num_gpus": 1}, "1 GPU")
    n, opts, unit = worker_plan(total, False, 0, 2)
    assert (n, opts, unit) == (8, {"num_gpus": 0.5}, "1/2 GPU")
    assert n * opts["num_gpus"] == total["GPU"]  # exactly fills the cluster's GPUs
    n, opts, unit = worker_plan(total, False, 0, 3)
    assert n == 12 and n * opts["num_gpus"] <= total["GPU"] and unit == "1/3 GPU"
    # --ray-workers fixes the count; each still takes its 1/W share.
    assert worker_plan(total, False, 3, 1) == (3, {"num_gpus": 1}, "1 GPU")
    assert worker_plan(total, False, 3, 2) == (3, {"num_gpus": 0.5}, "1/2 GPU")
    # A cluster without GPUs gets no GPU worker (RayPool then refuses in one line).
    assert worker_plan({"CPU": 8.0}, False, 0, 2)[0] == 0


def test_worker_plan_for_cpu_workers_takes_the_cpu_resource_whatever_workers_per_gpu():
    total = {"CPU": 8.0, "GPU": 2.0, CPU_RESOURCE: 3.0}
    want = (3, {"num_cpus": 0, "resources": {CPU_RESOURCE: 1}}, f"1 {CPU_RESOURCE}")
    assert worker_plan(total, True, 0, 1) == want
    assert worker_plan(total, True, 0, 4) == want  # auto's fallback to CPU ignores --workers-per-gpu
    assert worker_plan(total, True, 5, 1)[0] == 5
    assert worker_plan({"CPU": 8.0}, True, 0, 1)[0] == 0
