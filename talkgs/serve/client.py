"""A programmatic WebRTC client of `talkgs serve` (aiortc): audio from an array in, frames out.

What the page does, in Python: it sends 16 kHz audio in real time (20 ms frames, paced by the
wall clock as a microphone would deliver them), receives the head's video and sound, and
records when each audio sample left and when each video frame arrived, so latency is
measured end to end (audio sample sent -> the decoded frame that says it):

    client = LiveClient("http://127.0.0.1:8080", "anna", wav16)
    await client.connect()
    await asyncio.sleep(10)
    print(client.report())
    await client.close()

Frame i of the session says samples ``[640 i, 640 (i + 1))`` of that session's audio (a
reconnection's session starts at the sample it first sends); its latency is its arrival time
minus the time the frame's centre sample was sent. The server's ``first_frame`` message
names the index of the first frame it sent; later frames are numbered from their RTP
timestamps (90 kHz, 3600 per frame). Used by ``bench/serve.py`` and the tests.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time

import numpy as np

from talkgs.conventions import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from talkgs.errors import TalkgsError
from talkgs.serve.webrtc import AUDIO_FRAME, VIDEO_CLOCK, MediaStreamError, MediaStreamTrack, av, new_peer_connection


class Refused(TalkgsError):
    """The server refused the session (HTTP status and its message)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message


class PacedAudio:
    """Mono 16 kHz audio on the wall clock, 20 ms per frame, then silence (or looped); shared by
    the tracks of one client's successive connections (a reconnection goes on where it was)."""

    def __init__(self, wav: np.ndarray, loop: bool = False):
        self.pcm = (np.clip(np.asarray(wav, np.float32), -1, 1) * 32767).round().astype(np.int16)
        self.loop = loop
        self.k = 0  # next 20 ms frame
        self.t0: float | None = None
        self.sent: list[float] = []  # monotonic time frame k was handed to the encoder

    async def next(self) -> tuple[int, np.ndarray]:
        """(frame number, int16 [320]) once its 20 ms have been captured."""
        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + (self.k + 1) * AUDIO_FRAME / SAMPLE_RATE
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        a = self.k * AUDIO_FRAME
        n = self.pcm.shape[0]
        if self.loop and n:
            chunk = self.pcm[(a + np.arange(AUDIO_FRAME)) % n]
        else:
            chunk = np.zeros(AUDIO_FRAME, np.int16)
            part = self.pcm[a : a + AUDIO_FRAME]
            chunk[: part.shape[0]] = part
        self.sent.append(time.monotonic())
        self.k += 1
        return self.k - 1, chunk


class PacedAudioTrack(MediaStreamTrack):
    """One connection's audio track over a :class:`PacedAudio`; its session's sample 0 is the
    first sample this track sends (``k0``: that frame's number)."""

    kind = "audio"

    def __init__(self, source: PacedAudio):
        super().__init__()
        self.source = source
        self.k0: int | None = None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        k, chunk = await self.source.next()
        if self.k0 is None:
            self.k0 = k
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = (k - self.k0) * AUDIO_FRAME
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame

    def sent_time(self, sample: int) -> float | None:
        """When the session's sample ``sample`` left."""
        if self.k0 is None:
            return None
        k = self.k0 + sample // AUDIO_FRAME
        return self.source.sent[k] if 0 <= k < len(self.source.sent) else None


class LiveClient:
    """One session against a running server (see module docstring). With ``reconnect`` (the
    default) it long-polls ``/api/watch`` as the page does: when the worker serving it dies
    (``talkgs serve --ray``), it offers again, goes on with its audio where it was, and notes the
    reconnection in ``reconnects``."""

    def __init__(self, url: str, head: str, wav: np.ndarray, token: str | None = None, loop_audio: bool = True,
                 read_video: bool = True, keep_frames: int = 0, reconnect: bool = True):
        self.url = url.rstrip("/")
        self.head = head
        self.token = token
        self.audio = PacedAudio(wav, loop=loop_audio)
        self.read_video = read_video
        self.keep_frames = keep_frames
        self.reconnect = reconnect
        self.conns: list[dict] = []  # per connection: session, worker, track, pc, t_connect
        self.reconnects: list[dict] = []  # t_lost, t_connected, from, to, worker, reason
        self.pc = None
        self.session: str | None = None
        self.worker: str | None = None
        self.messages: list[dict] = []  # each with "t" and "conn" (its connection's number)
        self.video: list[tuple[float, int, int]] = []  # (arrival time, RTP pts, connection)
        self.frames: list[np.ndarray] = []  # the last keep_frames frames (rgb24)
        self.audio_samples = 0
        self.audio_energy: list[tuple[float, float]] = []  # (arrival, mean square) per audio frame
        self._tasks: list[asyncio.Task] = []
        self.t_connect: float | None = None
        self.state = "new"
        self._closed = False  # close() was called

    @property
    def track(self) -> PacedAudioTrack | None:
        return self.conns[-1]["track"] if self.conns else None

    def _headers(self) -> dict:
        return {"X-Talkgs-Token": self.token} if self.token else {}

    async def connect(self, timeout_s: float = 10.0) -> None:
        await self._open(timeout_s)
        self.t_connect = self.conns[0]["t_connect"]
        if self.reconnect:
            self._tasks.append(asyncio.create_task(self._watch()))

    async def _open(self, timeout_s: float = 10.0) -> None:
        import aiohttp
        from aiortc import RTCSessionDescription

        n = len(self.conns)
        pc = new_peer_connection()
        track = PacedAudioTrack(self.audio)
        pc.addTrack(track)
        pc.addTransceiver("video", direction="recvonly")
        channel = pc.createDataChannel("talkgs")

        @channel.on("message")
        def on_message(msg):
            try:
                self.messages.append({"t": time.monotonic(), "conn": n, **json.loads(msg)})
            except (ValueError, TypeError):
                pass

        @pc.on("track")
        def on_track(track):
            if track.kind == "video" and self.read_video:
                self._tasks.append(asyncio.create_task(self._read_video(track, n)))
            elif track.kind == "audio":
                self._tasks.append(asyncio.create_task(self._read_audio(track)))

        @pc.on("connectionstatechange")
        def on_state():
            if self.pc is pc:
                self.state = pc.connectionState

        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "head": self.head}
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{self.url}/api/offer", json=body, headers=self._headers(),
                                     timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                    try:
                        data = await r.json(content_type=None)
                    except ValueError:
                        data = {}
                    if r.status != 200:
                        raise Refused(r.status, data.get("error", f"HTTP {r.status}"))
        except BaseException:
            await pc.close()
            raise
        self.pc, self.session, self.worker = pc, data["session"], data.get("worker")
        self.conns.append({"session": self.session, "worker": self.worker, "track": track, "pc": pc,
                           "t_connect": time.monotonic()})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))

    async def _watch(self) -> None:
        """Long poll the front about the session; reconnect when its worker is lost."""
        import aiohttp

        async with aiohttp.ClientSession() as http:
            while not self._closed:
                sid = self.session
                try:
                    async with http.post(f"{self.url}/api/watch", json={"session": sid}, headers=self._headers(),
                                         timeout=aiohttp.ClientTimeout(total=60)) as r:
                        if r.status != 200:
                            return
                        data = await r.json(content_type=None)
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    await asyncio.sleep(1.0)
                    continue
                if self._closed or sid != self.session:
                    continue
                if data.get("state") == "lost":
                    await self._reconnect(data.get("reason"))
                elif data.get("state") == "closed":
                    return

    async def _reconnect(self, reason: str | None, give_up_s: float = 60.0) -> None:
        import aiohttp

        t_lost, old = time.monotonic(), self.conns[-1]
        await old["pc"].close()
        self.state = "reconnecting"
        while not self._closed:
            try:
                await self._open()
                break
            except (Refused, aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                if time.monotonic() - t_lost > give_up_s:
                    self.state = "failed"
                    self.messages.append({"t": time.monotonic(), "conn": len(self.conns), "type": "error",
                                          "message": f"could not reconnect: {e}"})
                    return
                await asyncio.sleep(0.5)
        self.reconnects.append({"t_lost": t_lost, "t_connected": time.monotonic(), "from": old["session"],
                                "to": self.session, "worker": self.worker, "reason": reason})

    async def _read_video(self, track, conn: int) -> None:
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            self.video.append((time.monotonic(), int(f.pts), conn))
            if self.keep_frames:
                self.frames.append(f.to_ndarray(format="rgb24"))
                del self.frames[: -self.keep_frames]

    async def _read_audio(self, track) -> None:
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            a = f.to_ndarray().astype(np.float32) / 32768.0
            self.audio_samples += f.samples
            self.audio_energy.append((time.monotonic(), float(np.mean(a * a))))

    async def close(self) -> None:
        self._closed = True
        self.state = "closed"
        for t in self._tasks:
            t.cancel()
        if self.pc is not None:
            await self.pc.close()

    # ------------------------------------------------------------------ measurements
    def first_frame_index(self, conn: int = 0) -> int | None:
        for m in self.messages:
            if m.get("type") == "first_frame" and m["conn"] == conn:
                return int(m["index"])
        return None

    def frame_indices(self, conn: int | None = None) -> np.ndarray:
        """Session frame index of each received video frame (from its connection's first frame
        index and the RTP timestamps; a reconnection's session counts from 0 again), -1 where
        unknown; with ``conn``, of that connection's frames only."""
        out, base = [], {}
        for _, pts, c in self.video:
            if conn is not None and c != conn:
                continue
            if c not in base:
                base[c] = (self.first_frame_index(c), pts)
            i0, p0 = base[c]
            out.append(-1 if i0 is None else i0 + ((pts - p0) % (1 << 32)) // (VIDEO_CLOCK // FPS))
        return np.asarray(out, np.int64)

    def latencies(self, since: float | None = None) -> np.ndarray:
        """Seconds from each received frame's centre audio sample leaving to the frame arriving."""
        out = []
        for (t, _, c), i in zip(self.video, self.frame_indices()):
            if (since is not None and t < since) or i < 0:
                continue
            ts = self.conns[c]["track"].sent_time(int(i) * SAMPLES_PER_FRAME + SAMPLES_PER_FRAME // 2)
            if ts is not None:
                out.append(t - ts)
        return np.asarray(out)

    def fps(self, t0: float, t1: float) -> float:
        n = sum(1 for t, _, _ in self.video if t0 <= t < t1)
        return n / max(t1 - t0, 1e-9)

    def first_frame_s(self) -> float | None:
        """First video frame's arrival after the first audio frame was sent."""
        if not self.video or not self.audio.sent:
            return None
        return self.video[0][0] - self.audio.sent[0]

    def report(self, t0: float | None = None, t1: float | None = None) -> dict:
        t1 = time.monotonic() if t1 is None else t1
        t0 = (self.t_connect or t1) if t0 is None else t0
        lat = self.latencies(since=t0)
        stats = [m for m in self.messages if m.get("type") == "stats"]
        return {
            "session": self.session,
            "worker": self.worker,
            "reconnects": len(self.reconnects),
            "fps": self.fps(t0, t1),
            "frames": len(self.video),
            "first_frame_ms": None if self.first_frame_s() is None else 1000 * self.first_frame_s(),
            "latency_ms_p50": float(np.percentile(lat, 50) * 1000) if lat.size else None,
            "latency_ms_p95": float(np.percentile(lat, 95) * 1000) if lat.size else None,
            "audio_s": self.audio_samples / 48000.0,
            "server": stats[-1] if stats else None,
        }
