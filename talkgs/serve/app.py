"""`talkgs serve`: the aiohttp application (page, API, WebRTC signalling) and its startup.

Routes (all API routes need the token when the server has one: header ``X-Talkgs-Token`` or
query ``token``):

- ``GET /``: the page (``talkgs/serve/static/``): pick a head, speak or play a file, watch.
- ``GET /api/heads``: the heads named on the command line, with size, feature kind and the
  lookahead of live audio.
- ``POST /api/offer`` ``{"sdp", "type": "offer", "head"}`` -> ``{"sdp", "type": "answer",
  "session"}``: one WebRTC connection per session: the page's audio track in, the head's
  video and sound out, and a data channel ``talkgs`` on which the server sends ``hello``,
  ``first_frame``, ``stats`` (twice a second) and ``error`` messages.
- ``POST /api/close`` ``{"session"}``: end a session now (closing the connection does too).
- ``POST /api/watch`` ``{"session"}`` -> ``{"session", "state"}``: a long poll (at most 20 s):
  ``live``, ``closed``, or ``lost`` when the worker serving it died (``--ray``): the page then
  offers again and the front places the session on another worker.
- ``GET /api/status``: sessions and batches (monitoring, benchmarks).
- ``GET /favicon.ico``: 204 (no icon).

Refusals are JSON ``{"error": "..."}`` with a status: 400 bad request (not JSON, nested too
deeply to parse, not an offer, no audio or video in it, a broken SDP), 401 wrong or missing
token, 404 unknown head, 413 a body over 64 kB, 503 the server is full (``--max-sessions``). A session ends when its connection fails or closes, when
its audio stops for ``--idle-timeout-s``, or when its audio cannot be decoded; the others go on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import signal
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Callable

from talkgs.errors import Interrupted, TalkgsError

log = logging.getLogger("talkgs.serve")

MAX_REQUEST_BYTES = 64 * 1024  # an SDP offer is a few kB
STATS_PERIOD_S = 0.5
WATCH_S = 20.0  # longest wait of one /api/watch poll


def head_names(runs) -> list[str]:
    """Unique names for the runs: their folder names (``name-2``, ... for repeats)."""
    names: list[str] = []
    for run in runs:
        p = Path(run)
        base = p.name if p.is_dir() else p.parent.parent.name or p.stem
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def load_heads(cfg, datasets: list | None = None, cuda_graphs: bool = True, fused_face: bool = True) -> dict:
    """``{name: HeadRenderer}`` for the command line's runs, each checked to stream its feature
    kind (the batch loop runs every batch shape once before serving: ``Batcher.warm_up``).
    ``datasets``: each run's dataset when not where its checkpoint says (benchmarks on another
    machine). ``cuda_graphs`` (CUDA only): each batch size's deformation as a CUDA graph, captured
    in the warm-up (:class:`HeadRenderer`'s default; False: eager, bench/serve.py --eager).
    ``fused_face``: the face deformation as one kernel where it runs (False: PyTorch's ops, the
    baseline of bench/serve.py --torch-face)."""
    import torch

    from talkgs.audio import open_stream
    from talkgs.device import resolve_device
    from talkgs.render.renderer import HeadRenderer

    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.cpu_threads)))
    heads = {}
    datasets = datasets or [None] * len(cfg.runs)
    for name, run, ds in zip(head_names(cfg.runs), cfg.runs, datasets):
        r = HeadRenderer(run, device, dataset=ds, drive=cfg.drive, backend=cfg.backend,
                         mouth_amplitude=cfg.mouth_amplitude, cuda_graphs=cuda_graphs, fused_face=fused_face)
        open_stream(r.audio_kind)  # a kind that cannot stream is refused here, in one line
        heads[name] = r
    return heads


class Refusal(Exception):
    """A request the server refuses: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Peer:
    """A session's connection and the tasks that serve it."""

    def __init__(self, session, pc):
        self.session = session
        self.pc = pc
        self.channel = None
        self.tasks: list[asyncio.Task] = []
        self.closing = False
        self.ended = asyncio.Event()


class SessionHost:
    """Heads, sessions and the batch loop of one device, terminating its sessions' WebRTC media.

    The single process of ``talkgs serve`` runs one behind its routes; ``talkgs serve --ray`` runs
    one in each worker actor (:mod:`talkgs.serve.cluster`), behind a front that only signals.
    ``name`` (a worker's name) goes into the page's messages so it can show who serves it."""

    def __init__(self, heads: dict, max_sessions: int = 16, max_batch: int = 32, idle_timeout_s: float = 10.0,
                 limits=None, name: str | None = None):
        from talkgs.serve.batcher import Batcher, BatchLoop
        from talkgs.serve.session import SessionLimits

        self.heads = heads
        self.max_sessions = int(max_sessions)
        self.idle_timeout_s = float(idle_timeout_s)
        self.limits = limits or SessionLimits()
        self.name = name
        self.batcher = Batcher(heads, max_batch)
        self.loop = BatchLoop(self.batcher)
        self.peers: dict[str, _Peer] = {}
        self._reserved = 0
        self.refused = 0

    async def start(self) -> None:
        self.loop.start()

    async def stop(self) -> None:
        await asyncio.gather(*(self.close_session(sid, "the server is shutting down") for sid in list(self.peers)))
        await self.loop.stop()

    # ------------------------------------------------------------------ what the front asks
    def heads_info(self) -> list[dict]:
        from talkgs.audio import open_stream

        heads = []
        for name, r in self.heads.items():
            st = open_stream(r.audio_kind)
            ahead = r.audio_window - r.audio_window // 2 - 1
            heads.append({"name": name, "width": r.width, "height": r.height, "audio_kind": r.audio_kind,
                          "lookahead_ms": st.lookahead_ms + 40.0 * ahead})
        return heads

    def load(self) -> dict:
        """What placement reads, all measured here: the sessions (ids), the device's busy share,
        the lowest frame rate of the sessions streaming for 2 s or more, and the frames lost so
        far (dropped or skipped) by the live sessions."""
        now = time.monotonic()
        fps = [p.session.fps(now) for p in self.peers.values()
               if p.session.t_first_sent is not None and now - p.session.t_first_sent >= 2.0]
        return {"worker": self.name, "sessions": list(self.peers), "device_busy": self.batcher.stats()["device_busy"],
                "fps_min": min(fps) if fps else None,
                "lost_frames": sum(p.session.counts["dropped"] + p.session.counts["skipped"] for p in self.peers.values())}

    def status(self) -> dict:
        return {"worker": self.name, "max_sessions": self.max_sessions, "refused": self.refused,
                "batches": self.batcher.stats(),
                "sessions": [{**p.session.summary(), **({"worker": self.name} if self.name else {})}
                             for p in self.peers.values()]}

    async def watch(self, sid: str, timeout_s: float) -> str:
        """``live`` while the session lasts (at most ``timeout_s``), else ``closed``."""
        peer = self.peers.get(sid)
        if peer is None:
            return "closed"
        try:
            await asyncio.wait_for(peer.ended.wait(), timeout_s)
        except asyncio.TimeoutError:
            return "live"
        return "closed"

    async def close(self, sid: str) -> bool:
        if sid not in self.peers:
            return False
        await self.close_session(sid, None)
        return True

    async def offer(self, head: str, sdp: str) -> dict:
        """``{"sdp", "type", "session", "worker"}`` for a checked offer; raises :class:`Refusal`."""
        if head not in self.heads:
            raise Refusal(404, f"unknown head {head!r}; this server has: {', '.join(self.heads)}")
        if len(self.peers) + self._reserved >= self.max_sessions:
            self.refused += 1
            raise Refusal(503, f"the server is full ({self.max_sessions} live sessions); try again later")
        self._reserved += 1
        try:
            return await self._connect(head, sdp)
        finally:
            self._reserved -= 1

    async def _connect(self, head: str, sdp: str) -> dict:
        from aiortc import RTCSessionDescription

        from talkgs.audio import open_stream
        from talkgs.serve.session import Session
        from talkgs.serve.webrtc import HeadAudioTrack, HeadVideoTrack, consume_audio, new_peer_connection

        r = self.heads[head]
        sid = secrets.token_hex(6)
        session = Session(sid, head, open_stream(r.audio_kind), r.audio_window, self.limits)
        session.on_pending = self.loop.wake
        session.on_error = lambda m: self._schedule_close(sid, m)
        pc = new_peer_connection()
        peer = _Peer(session, pc)

        def first_frame(f):
            if session.counts["sent"] == 1:
                self._send(peer, {"type": "first_frame", "index": f.index,
                                  "ms_after_first_audio": 1000.0 * (session.t_first_sent - session.t_first_audio)})

        video = HeadVideoTrack(session, on_sent=first_frame)
        audio = HeadAudioTrack(session)

        @pc.on("track")
        def on_track(track):
            if track.kind == "audio" and not any(t.get_name() == "audio-in" for t in peer.tasks):
                peer.tasks.append(asyncio.create_task(
                    consume_audio(track, session, on_error=lambda m: self._schedule_close(sid, m)), name="audio-in"))

        @pc.on("datachannel")
        def on_datachannel(channel):
            peer.channel = channel
            self._send(peer, {"type": "hello", "session": sid, "head": head, "width": r.width, "height": r.height,
                              "lookahead_ms": session.lookahead_ms, "worker": self.name})

            @channel.on("message")
            def on_message(msg):
                if msg == "bye":
                    self._schedule_close(sid, None)

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed"):
                self._schedule_close(sid, None if pc.connectionState == "closed" else "the connection failed")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            kinds = {t.kind: t for t in pc.getTransceivers()}
            if "audio" not in kinds or kinds["audio"].direction not in ("sendrecv", "sendonly", "recvonly"):
                raise ValueError("the offer has no audio track (the page sends the microphone or a file)")
            if "video" not in kinds:
                raise ValueError("the offer does not receive video")
            pc.addTrack(video)
            pc.addTrack(audio)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:
            await pc.close()
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise Refusal(400, f"the offer was refused: {msg[:200]}") from None
        self.peers[sid] = peer
        self.batcher.add(session)
        peer.tasks.append(asyncio.create_task(self._watch(peer), name="watch"))
        log.info("session %s: head %s (%d live)", sid, head, len(self.peers))
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session": sid, "worker": self.name}

    # ------------------------------------------------------------------ sessions
    def _send(self, peer: _Peer, msg: dict) -> None:
        ch = peer.channel
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(json.dumps(msg))
            except Exception:  # a channel closing under us is not an error of the server
                pass

    async def _watch(self, peer: _Peer) -> None:
        """Stats to the page twice a second; closes the session when its audio stops."""
        s = peer.session
        while not s.closed:
            await asyncio.sleep(STATS_PERIOD_S)
            last = s.t_last_audio if s.t_last_audio is not None else s.t_created
            if time.monotonic() - last > self.idle_timeout_s:
                self._schedule_close(s.id, f"no audio arrived for {self.idle_timeout_s:g} s; the session was closed")
                return
            self._send(peer, {"type": "stats", **s.summary(), "server": self.batcher.stats(),
                              "live_sessions": len(self.peers), "worker": self.name})

    def _schedule_close(self, sid: str, reason: str | None) -> None:
        peer = self.peers.get(sid)
        if peer is not None and not peer.closing:
            asyncio.get_running_loop().create_task(self.close_session(sid, reason))

    async def close_session(self, sid: str, reason: str | None) -> None:
        peer = self.peers.get(sid)
        if peer is None or peer.closing:
            return
        peer.closing = True
        if reason:
            self._send(peer, {"type": "error", "message": reason})
            await asyncio.sleep(0.05)  # let the message leave before the connection closes
        self.batcher.remove(sid)
        current = asyncio.current_task()
        for t in peer.tasks:
            if t is not current:
                t.cancel()
        try:
            await peer.pc.close()
        finally:
            self.peers.pop(sid, None)
            peer.ended.set()
            log.info("session %s closed%s (%d live)", sid, f": {reason}" if reason else "", len(self.peers))


class LocalPool:
    """The sessions of ``talkgs serve`` without ``--ray``: one :class:`SessionHost` in this process."""

    def __init__(self, host: SessionHost):
        self.host = host

    @property
    def warm_up_s(self) -> float | None:
        return self.host.loop.warm_up_s

    async def start(self) -> None:
        await self.host.start()

    async def stop(self) -> None:
        await self.host.stop()

    def heads_info(self) -> list[dict]:
        return self.host.heads_info()

    def capacity(self) -> tuple[int, int]:
        """(live sessions, most sessions)"""
        return len(self.host.peers), self.host.max_sessions

    async def offer(self, head: str, sdp: str) -> dict:
        return await self.host.offer(head, sdp)

    async def close(self, sid: str) -> bool:
        return await self.host.close(sid)

    async def watch(self, sid: str, timeout_s: float) -> dict:
        return {"session": sid, "state": await self.host.watch(sid, timeout_s)}

    async def status(self) -> dict:
        st = self.host.status()
        del st["worker"]
        return st


class LiveServer:
    """The aiohttp routes (page, token, API) in front of a pool of sessions: :class:`LocalPool`
    (one device in this process) or :class:`talkgs.serve.cluster.RayPool` (Ray workers)."""

    def __init__(self, pool, token: str | None = None):
        self.pool = pool
        self.token = token
        self.refused = 0
        self.t_start = time.monotonic()
        self.on_ready: Callable[[], None] | None = None
        """Called once the pool is ready (heads loaded, batch loops warmed up) and the app is
        about to listen."""

    # ------------------------------------------------------------------ app
    def app(self):
        from aiohttp import web

        @web.middleware
        async def json_errors(request, handler):
            # aiohttp's own refusals (404, 405, 413, ...) as JSON one-liners like ours.
            try:
                return await handler(request)
            except web.HTTPException as e:
                if e.status < 400:
                    raise
                msg = "the request is too large" if e.status == 413 else (e.reason or "bad request")
                return self._error(e.status, msg)

        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[json_errors])
        app.router.add_get("/", self._index)
        app.router.add_get("/favicon.ico", self._no_icon)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/heads", self._heads)
        app.router.add_post("/api/offer", self._offer)
        app.router.add_post("/api/close", self._close)
        app.router.add_post("/api/watch", self._watch)
        app.router.add_get("/api/status", self._status)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _startup(self, app) -> None:
        await self.pool.start()
        self._heads_info = self.pool.heads_info()
        if self.on_ready is not None:
            self.on_ready()

    async def _shutdown(self, app) -> None:
        await self.pool.stop()

    @staticmethod
    def _error(status: int, message: str):
        from aiohttp import web

        return web.json_response({"error": message}, status=status)

    def _authorized(self, request, body: dict | None = None) -> bool:
        if self.token is None:
            return True
        got = request.headers.get("X-Talkgs-Token") or request.query.get("token")
        if got is None and isinstance(body, dict):
            got = body.get("token")
        return isinstance(got, str) and hmac.compare_digest(got.encode(), self.token.encode())

    # ------------------------------------------------------------------ routes
    async def _index(self, request):
        return await self._static_file("index.html")

    async def _no_icon(self, request):
        from aiohttp import web

        return web.Response(status=204)  # no icon; a 404 would show as an error in the console

    async def _static(self, request):
        return await self._static_file(request.match_info["name"])

    async def _static_file(self, name: str):
        from aiohttp import web

        types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
        suffix = Path(name).suffix
        if "/" in name or "\\" in name or suffix not in types:
            return self._error(404, f"no such file: {name}")
        f = resources.files("talkgs.serve").joinpath("static", name)
        if not f.is_file():
            return self._error(404, f"no such file: {name}")
        return web.Response(body=f.read_bytes(), content_type=types[suffix], headers={"Cache-Control": "no-cache"})

    async def _heads(self, request):
        from aiohttp import web

        if not self._authorized(request):
            return self._error(401, "wrong or missing token (open the page as /?token=...)")
        live, most = self.pool.capacity()
        return web.json_response({"heads": self._heads_info, "max_sessions": most, "sessions": live})

    async def _status(self, request):
        from aiohttp import web

        if not self._authorized(request):
            return self._error(401, "wrong or missing token")
        st = await self.pool.status()
        return web.json_response({"uptime_s": time.monotonic() - self.t_start, **st,
                                  "refused": self.refused})

    async def _close(self, request):
        from aiohttp import web

        body = await self._authorized_json(request)
        if isinstance(body, web.Response):
            return body
        sid = body.get("session")
        if not isinstance(sid, str) or not await self.pool.close(sid):
            return self._error(404, "no such session")
        return web.json_response({"closed": sid})

    async def _watch(self, request):
        """Long poll: answers ``{"session", "state"}`` once the session ends (``closed``; ``lost``
        when its worker died, so the page reconnects elsewhere) or after ``WATCH_S`` (``live``)."""
        from aiohttp import web

        body = await self._authorized_json(request)
        if isinstance(body, web.Response):
            return body
        sid = body.get("session")
        if not isinstance(sid, str):
            return self._error(400, "expected {\"session\": \"...\"}")
        return web.json_response(await self.pool.watch(sid, WATCH_S))

    async def _authorized_json(self, request, denied: str = "wrong or missing token"):
        """The request's JSON object, or the refusal to answer with (400 not a JSON object, 401
        ``denied`` for a wrong or missing token)."""
        body = await self._json(request)
        if not isinstance(body, dict) or self._authorized(request, body):
            return body
        return self._error(401, denied)

    async def _json(self, request):
        raw = await request.read()  # at most MAX_REQUEST_BYTES (beyond: 413)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
            return self._error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return self._error(400, "the request body must be a JSON object")
        return body

    async def _offer(self, request):
        from aiohttp import web

        body = await self._authorized_json(request, "wrong or missing token (open the page as /?token=...)")
        if isinstance(body, web.Response):
            return body
        head = body.get("head")
        names = [h["name"] for h in self._heads_info]
        if not isinstance(head, str) or head not in names:
            return self._error(404, f"unknown head {head!r}; this server has: {', '.join(names)}")
        if body.get("type") != "offer" or not isinstance(body.get("sdp"), str) or not body["sdp"].strip():
            return self._error(400, "expected a WebRTC offer: {\"type\": \"offer\", \"sdp\": \"...\", \"head\": ...}")
        try:
            answer = await self.pool.offer(head, body["sdp"])
        except Refusal as e:
            if e.status == 503:
                self.refused += 1
            return self._error(e.status, e.message)
        return web.json_response(answer)


def page_url(host: str, port: int, token: str | None = None) -> str:
    """The page's address; an IPv6 literal in brackets (``http://[::1]:8080/``)."""
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    return url + (f"?token={token}" if token else "")


def serve(cfg) -> None:
    """Run a checked :class:`talkgs.commands.serve.ServeConfig` until SIGINT or SIGTERM, then close
    every session and raise :class:`talkgs.errors.Interrupted` with that signal (the CLI exits
    128 + it)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO if cfg.verbose else logging.WARNING)
    try:
        import aiohttp  # noqa: F401

        from talkgs.serve.webrtc import restrict_ice_addresses
    except ImportError as e:
        raise TalkgsError(f"talkgs serve needs aiohttp and aiortc (pip install 'talkgs[serve]'): {e}") from None
    from aiohttp import web

    t0 = time.perf_counter()
    if cfg.ray is not None:
        from talkgs.serve.cluster import RayPool

        pool = RayPool(cfg)
        print(f"[serve] Ray {pool.describe()}; {pool.n_workers} worker(s) of {pool.per_worker()}, "
              f"at most {cfg.max_sessions} sessions each", flush=True)
        ready = "workers ready"
    else:
        heads = load_heads(cfg)
        restrict_ice_addresses(cfg.host)
        pool = LocalPool(SessionHost(heads, cfg.max_sessions, cfg.max_batch, cfg.idle_timeout_s))
        dev = next(iter(heads.values())).device
        print(f"[serve] {len(heads)} head(s) on {dev} ({', '.join(heads)}), loaded in {time.perf_counter() - t0:.1f} s; "
              f"at most {cfg.max_sessions} sessions", flush=True)
        ready = "warmed up"
    server = LiveServer(pool, cfg.token)
    url = page_url(cfg.host, cfg.port, cfg.token)
    # The page opens once the batch loops have run every batch shape (on_startup, before listening).
    server.on_ready = lambda: print(f"[serve] open {url} ({ready} in {pool.warm_up_s:.1f} s)", flush=True)
    loop = asyncio.new_event_loop()
    caught: list[int] = []
    if threading.current_thread() is threading.main_thread():
        # aiohttp's own handlers would return normally; ours note the signal, then stop the same
        # way (GracefulExit: sessions closed, the batch loop stopped).
        def stop(signum: int) -> None:
            caught.append(signum)
            raise web.GracefulExit()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
    try:
        web.run_app(server.app(), host=cfg.host, port=cfg.port, print=None, access_log=None,
                    handle_signals=False, shutdown_timeout=2.0, loop=loop)
    except OSError as e:
        raise TalkgsError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    finally:
        if cfg.ray is not None:
            pool.shutdown()
    if caught:
        what = "stopped (SIGTERM)" if caught[0] == signal.SIGTERM else "stopped (Ctrl-C)"
        raise Interrupted(f"{what}; every session was closed", caught[0])
