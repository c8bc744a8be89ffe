"""`talkgs serve --ray`: live sessions spread over workers that Ray places and supervises.

Each worker is a Ray actor (:class:`Worker`) holding one device: the heads, the batch loop and a
:class:`talkgs.serve.app.SessionHost`, the same one the single-process server runs. A worker
terminates the WebRTC media of its sessions itself (the browser talks to the worker's host
directly); the front (:class:`RayPool` behind :class:`talkgs.serve.app.LiveServer`: page, token,
API) only signals: it hands an offer to a worker by a Ray call and returns the worker's answer.

- Resources: a worker takes one GPU (``num_gpus=1``), or 1/W of one with ``--workers-per-gpu W``
  (W workers, each its own process and batch loop, share each GPU; :func:`worker_plan`); CPU
  workers (``--device cpu``) take one unit of the custom resource ``talkgs_cpu_worker`` (a local
  instance is started with as many as ``--ray-workers``; the nodes of a cluster declare theirs:
  ``ray start --resources '{"talkgs_cpu_worker": 2}'``).
- Placement: every worker reports its load twice a second (:meth:`SessionHost.load`: sessions,
  the device's busy share, the sessions' frame rates and lost frames); a new session goes to a
  worker whose sessions keep up (none under 24 frames/s, no frame lost since its previous
  report) if there is one, and among those to the one with the most free places, counted as the
  fewer of ``--max-sessions`` minus its sessions and the sessions its device can still add at its
  measured busy share per session. When every worker that is up is full, the offer is refused
  (503).
- Failure: a worker's death reaches the front as a ``RayActorError`` on its next report (or as a
  new incarnation once Ray restarted it, ``max_restarts=-1``); its sessions become ``lost``, the
  page (long poll on ``/api/watch``) and :class:`talkgs.serve.client.LiveClient` offer again and
  land on another worker.

Ray is imported only here, and only when ``--ray`` is given (``pip install 'talkgs[cluster]'``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import importlib.util
import logging
import secrets
import time
from pathlib import Path

from talkgs.errors import TalkgsError
from talkgs.serve.app import Refusal

log = logging.getLogger("talkgs.serve")

NAMESPACE = "talkgs"
CPU_RESOURCE = "talkgs_cpu_worker"
"""The custom Ray resource a CPU worker takes (one unit each)."""
REPORT_S = 0.5  # each worker's load report period
HOLD_FPS = 24.0  # a session below this many frames per second is behind real time (25)
REPORT_TIMEOUT_S = 5.0  # a report later than this takes the worker out of placement (not its sessions)
INSTALL = "pip install 'talkgs[cluster]'"


def worker_plan(total: dict, cpu: bool, ray_workers: int, workers_per_gpu: int = 1) -> tuple[int, dict, str]:
    """The workers to start on a cluster offering ``total`` (``ray.cluster_resources()``): their
    number (``ray_workers``, or else one per unit of the CPU resource / ``workers_per_gpu`` per GPU),
    each one's Ray actor options and the unit it takes, as shown to the user."""
    if cpu:
        n = ray_workers or int(total.get(CPU_RESOURCE, 0))
        return n, {"num_cpus": 0, "resources": {CPU_RESOURCE: 1}}, f"1 {CPU_RESOURCE}"
    # Several batch loops per GPU keep it busier than one (bench/serve.py --processes, docs/serve.md).
    n = ray_workers or int(total.get("GPU", 0)) * workers_per_gpu
    return n, {"num_gpus": 1 / workers_per_gpu}, "1 GPU" if workers_per_gpu == 1 else f"1/{workers_per_gpu} GPU"


def ray_missing() -> bool:
    """Ray cannot be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("ray") is None
    except (ImportError, ValueError):
        return True


class Worker:
    """One device's sessions in a Ray actor (``ray.remote`` is applied by :class:`RayPool`)."""

    def __init__(self, cfg, name: str, front_node: str):
        import ray

        from talkgs.commands.serve import is_loopback
        from talkgs.serve.app import SessionHost, load_heads
        from talkgs.serve.webrtc import restrict_ice_addresses

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
        log.setLevel(logging.INFO if cfg.verbose else logging.WARNING)
        self.name = name
        self.node = ray.util.get_node_ip_address()
        self.incarnation = secrets.token_hex(6)
        heads = load_heads(cfg)
        self.device = str(next(iter(heads.values())).device)
        # Media from the address the browser reaches: the front's on its node, this node's elsewhere.
        if self.node == front_node or cfg.host in ("0.0.0.0", "::"):
            restrict_ice_addresses(cfg.host)
        else:
            restrict_ice_addresses(self.node)
        self.host = SessionHost(heads, cfg.max_sessions, cfg.max_batch, cfg.idle_timeout_s, name=name)
        self._started: asyncio.Future | None = None

    async def _ready(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self.host.start())
        await asyncio.shield(self._started)

    async def load(self) -> dict:
        await self._ready()
        return {**self.host.load(), "incarnation": self.incarnation, "node": self.node, "device": self.device,
                "cpu_s": time.process_time()}

    async def heads(self) -> list[dict]:
        return self.host.heads_info()

    async def offer(self, head: str, sdp: str) -> dict:
        await self._ready()
        try:
            return await self.host.offer(head, sdp)
        except Refusal as e:  # crosses Ray as a plain answer
            return {"error": e.message, "status": e.status}

    async def close(self, sid: str) -> bool:
        return await self.host.close(sid)

    async def status(self) -> dict:
        return self.host.status()

    async def stop(self) -> None:
        await self.host.stop()


@dataclasses.dataclass(eq=False)
class _WorkerRef:
    name: str
    actor_name: str  # the Ray actor's name in the namespace "talkgs"
    actor: object
    up: bool = False
    incarnation: str | None = None
    report: dict | None = None
    t_report: float = 0.0
    restarts: int = 0
    reserved: int = 0  # offers on their way to it
    error: str | None = None
    sessions: set = dataclasses.field(default_factory=set)  # the ids the front placed on it
    losing: bool = False  # its sessions lost frames since its previous report


class RayPool:
    """The front's view of the workers: placement, sessions, their loss (see module docstring)."""

    def __init__(self, cfg):
        if ray_missing():
            raise TalkgsError(f"--ray needs Ray ({INSTALL})")
        import ray

        self.cfg = cfg
        self.address = cfg.ray[0] if cfg.ray else None
        gpus_here = 0
        if self.address is None and cfg.device != "cpu":
            import torch

            gpus_here = torch.cuda.device_count()
        cpu = cfg.device == "cpu" or (self.address is None and gpus_here == 0)
        init = {"namespace": NAMESPACE, "logging_level": logging.WARNING, "log_to_driver": bool(cfg.verbose)}
        if self.address is not None:
            ray.init(address=self.address, **init)
        else:
            res = {CPU_RESOURCE: max(cfg.ray_workers, 1)} if cpu else {}
            ray.init(include_dashboard=False, resources=res, **init)
        total = ray.cluster_resources()
        if not cpu and cfg.device == "auto" and total.get("GPU", 0) < 1:
            cpu = True
        n, opts, self.unit = worker_plan(total, cpu, cfg.ray_workers, cfg.workers_per_gpu)
        if n < 1:
            raise TalkgsError("the Ray cluster offers no GPU; for CPU workers give --device cpu and start its nodes "
                              f"with ray start --resources '{{\"{CPU_RESOURCE}\": N}}'")
        self.total = total
        # Runs by absolute path: a worker's working directory is not the front's.
        wcfg = dataclasses.replace(cfg, runs=tuple(Path(r).resolve() for r in cfg.runs),
                                   device="cpu" if cpu else "cuda")
        front = ray.util.get_node_ip_address()
        tag = f"{front}:{cfg.port}"
        actor = ray.remote(Worker)
        names = [f"talkgs-serve-{tag}-w{k}" for k in range(n)]
        self.workers = [_WorkerRef(f"w{k}", name, actor.options(name=name, max_restarts=-1, max_concurrency=1000, **opts)
                                   .remote(wcfg, f"w{k}", front)) for k, name in enumerate(names)]
        self.sessions: dict[str, _WorkerRef] = {}
        self._placed: dict[str, float] = {}
        self._ended: collections.OrderedDict[str, tuple[str, str | None]] = collections.OrderedDict()
        self._events: dict[str, asyncio.Event] = {}
        self._monitors: list[asyncio.Task] = []
        self._heads: list[dict] = []
        self.warm_up_s: float | None = None

    @property
    def n_workers(self) -> int:
        return len(self.workers)

    def describe(self) -> str:
        where = f"cluster at {self.address}" if self.address else "local instance"
        return f"{where} ({self.total.get('CPU', 0):g} CPUs, {self.total.get('GPU', 0):g} GPUs)"

    def per_worker(self) -> str:
        return self.unit

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        t0 = time.monotonic()
        self._monitors = [asyncio.create_task(self._monitor(w), name=f"monitor-{w.name}") for w in self.workers]
        t_said = t0
        while not all(w.up for w in self.workers):
            if time.monotonic() - t_said > 30:
                t_said = time.monotonic()
                print(f"[serve] waiting for {sum(not w.up for w in self.workers)} of {len(self.workers)} worker(s), "
                      f"each needing {self.unit} (`ray status` shows what the cluster has free)", flush=True)
            dead = [w for w in self.workers if w.error and not w.up]
            if dead and any("creation task" in (w.error or "") or "__init__" in (w.error or "") for w in dead):
                raise TalkgsError(f"worker {dead[0].name} failed to start: {dead[0].error}")
            await asyncio.sleep(0.2)
        self._heads = await self.workers[0].actor.heads.remote()
        self.warm_up_s = time.monotonic() - t0

    async def stop(self) -> None:
        for t in self._monitors:
            t.cancel()
        up = [w for w in self.workers if w.up]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.actor.stop.remote() for w in up), return_exceptions=True), 5.0)
        except asyncio.TimeoutError:
            pass

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            try:
                ray.kill(w.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        ray.shutdown()

    # ------------------------------------------------------------------ reports and loss
    async def _monitor(self, w: _WorkerRef) -> None:
        from ray.exceptions import RayActorError

        while True:
            t_ask = time.monotonic()
            try:
                ref = w.actor.load.remote()
                rep = await (asyncio.wait_for(ref, REPORT_TIMEOUT_S) if w.incarnation else ref)
            except asyncio.TimeoutError:
                w.up = False  # late: no new sessions there until it answers again
                continue
            except RayActorError as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if w.error != msg:
                    log.warning("worker %s: %s", w.name, msg)
                w.error, w.up = msg, False
                self._lose(w, "the worker serving this session stopped; reconnecting to another")
                await asyncio.sleep(REPORT_S)
                continue
            if w.incarnation is not None and rep["incarnation"] != w.incarnation:
                w.restarts += 1
                self._lose(w, "the worker serving this session restarted; reconnecting")
                log.warning("worker %s is back (restart %d)", w.name, w.restarts)
            same = w.report is not None and w.report["incarnation"] == rep["incarnation"]
            w.losing = same and rep["lost_frames"] > w.report["lost_frames"]
            w.incarnation, w.report, w.t_report, w.up, w.error = rep["incarnation"], rep, t_ask, True, None
            for sid in w.sessions - set(rep["sessions"]):
                if self._placed[sid] < t_ask:
                    self._end(sid, "closed", None)  # it ended on the worker (idle, connection closed)
            await asyncio.sleep(REPORT_S)

    def _lose(self, w: _WorkerRef, reason: str) -> None:
        for sid in list(w.sessions):
            self._end(sid, "lost", reason)

    def _end(self, sid: str, state: str, reason: str | None) -> None:
        w = self.sessions.pop(sid, None)
        if w is None:
            return
        w.sessions.discard(sid)
        self._placed.pop(sid, None)
        self._ended[sid] = (state, reason)
        while len(self._ended) > 4096:
            self._ended.popitem(last=False)
        ev = self._events.pop(sid, None)
        if ev is not None:
            ev.set()
        if state == "lost":
            log.warning("session %s lost: %s", sid, reason)

    # ------------------------------------------------------------------ placement
    def _live(self, w: _WorkerRef) -> int:
        return max(len(w.sessions), len(w.report["sessions"]) if w.report else 0) + w.reserved

    def _places(self, w: _WorkerRef) -> int:
        return self.cfg.max_sessions - self._live(w)

    def _behind(self, w: _WorkerRef) -> bool:
        """Its sessions run below real time: one under 24 frames/s, or frames lost since the
        previous report."""
        fps = (w.report or {}).get("fps_min")
        return w.losing or (fps is not None and fps < HOLD_FPS)

    def _free(self, w: _WorkerRef) -> float:
        """Free places: the fewer of the cap's and what the device's measured busy share per
        session leaves room for."""
        places = self._places(w)
        rep = w.report or {}
        n, busy = len(rep.get("sessions", ())), float(rep.get("device_busy") or 0.0)
        if n and busy > 0:
            places = min(places, (1.0 - busy) * n / busy)
        return places

    async def offer(self, head: str, sdp: str) -> dict:
        from ray.exceptions import RayActorError

        tried: set[int] = set()
        while True:
            cands = [w for w in self.workers if w.up and id(w) not in tried and self._places(w) > 0]
            if not cands:
                up = sum(w.up for w in self.workers)
                if not up:
                    raise Refusal(503, "no worker is up (they are starting or restarting); try again shortly")
                raise Refusal(503, f"the server is full: every worker that is up ({up} of {len(self.workers)}) has "
                                   f"{self.cfg.max_sessions} live sessions; try again later")
            # A worker keeping up first, then the most free places, then the least busy device.
            w = max(cands, key=lambda w_: (not self._behind(w_), self._free(w_),
                                           -float((w_.report or {}).get("device_busy") or 0.0)))
            tried.add(id(w))
            w.reserved += 1
            try:
                ans = await w.actor.offer.remote(head, sdp)
            except RayActorError:
                continue  # it died meanwhile: the next one
            finally:
                w.reserved -= 1
            if "error" in ans:
                if ans["status"] == 503:
                    continue
                raise Refusal(ans["status"], ans["error"])
            sid = ans["session"]
            self.sessions[sid] = w
            w.sessions.add(sid)
            self._placed[sid] = time.monotonic()
            self._events[sid] = asyncio.Event()
            log.info("session %s on worker %s", sid, w.name)
            return ans

    # ------------------------------------------------------------------ the rest of the API
    def heads_info(self) -> list[dict]:
        return self._heads

    def capacity(self) -> tuple[int, int]:
        return len(self.sessions), len(self.workers) * self.cfg.max_sessions

    async def close(self, sid: str) -> bool:
        from ray.exceptions import RayActorError

        w = self.sessions.get(sid)
        if w is None:
            return False
        try:
            await w.actor.close.remote(sid)
        except RayActorError:
            pass
        self._end(sid, "closed", None)
        return True

    async def watch(self, sid: str, timeout_s: float) -> dict:
        ev = self._events.get(sid)
        if ev is not None:
            try:
                await asyncio.wait_for(ev.wait(), timeout_s)
            except asyncio.TimeoutError:
                return {"session": sid, "state": "live"}
        state, reason = self._ended.get(sid, ("closed", None))
        return {"session": sid, "state": state, **({"reason": reason} if reason else {})}

    async def status(self) -> dict:
        ups = [w for w in self.workers if w.up]
        got = await asyncio.gather(*(asyncio.wait_for(w.actor.status.remote(), REPORT_TIMEOUT_S) for w in ups),
                                   return_exceptions=True)
        by_name = {w.name: st for w, st in zip(ups, got) if isinstance(st, dict)}
        workers, sessions, busy, batch = [], [], [], []
        for w in self.workers:
            st, rep = by_name.get(w.name), w.report or {}
            b = st["batches"] if st else {}
            workers.append({"worker": w.name, "up": w.up, "behind": self._behind(w), "restarts": w.restarts, "node": rep.get("node"),
                            "device": rep.get("device"), "sessions": len(st["sessions"]) if st else 0,
                            "max_sessions": self.cfg.max_sessions, "device_busy": b.get("device_busy"),
                            "mean_batch": b.get("mean_batch"), "fps_min": rep.get("fps_min"),
                            "cpu_s": rep.get("cpu_s"), "t_report": w.t_report,
                            "actor": w.actor_name,
                            "error": w.error})
            if st:
                sessions += st["sessions"]
                busy.append(b["device_busy"])
                batch.append(b["mean_batch"])
        return {"max_sessions": len(self.workers) * self.cfg.max_sessions, "workers": workers,
                "batches": {"device_busy": sum(busy) / len(busy) if busy else 0.0,
                            "mean_batch": sum(batch) / len(batch) if batch else 0.0},
                "sessions": sessions}
