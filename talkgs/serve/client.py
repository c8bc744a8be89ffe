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

Frame i of the session says samples ``[640 i, 640 (i + 1))``; its latency is its arrival
time minus the time the frame's centre sample was sent. The server's ``first_frame`` message
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


class PacedAudioTrack(MediaStreamTrack):
    """Mono 16 kHz audio sent in real time, 20 ms per frame, then silence (or looped)."""

    kind = "audio"

    def __init__(self, wav: np.ndarray, loop: bool = False):
        super().__init__()
        self.pcm = (np.clip(np.asarray(wav, np.float32), -1, 1) * 32767).round().astype(np.int16)
        self.loop = loop
        self.k = 0  # next 20 ms frame
        self.t0: float | None = None
        self.sent: list[float] = []  # monotonic time frame k was handed to the encoder

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.monotonic()
        # A microphone delivers a frame once its 20 ms have been captured.
        due = self.t0 + (self.k + 1) * AUDIO_FRAME / SAMPLE_RATE
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        a = self.k * AUDIO_FRAME
        n = self.pcm.shape[0]
        if self.loop and n:
            idx = (a + np.arange(AUDIO_FRAME)) % n
            chunk = self.pcm[idx]
        else:
            chunk = np.zeros(AUDIO_FRAME, np.int16)
            part = self.pcm[a : a + AUDIO_FRAME]
            chunk[: part.shape[0]] = part
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = a
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.sent.append(time.monotonic())
        self.k += 1
        return frame

    def sent_time(self, sample: int) -> float | None:
        k = sample // AUDIO_FRAME
        return self.sent[k] if 0 <= k < len(self.sent) else None


class LiveClient:
    """One session against a running server (see module docstring)."""

    def __init__(self, url: str, head: str, wav: np.ndarray, token: str | None = None, loop_audio: bool = True,
                 read_video: bool = True, keep_frames: int = 0):
        self.url = url.rstrip("/")
        self.head = head
        self.token = token
        self.track = PacedAudioTrack(wav, loop=loop_audio)
        self.read_video = read_video
        self.keep_frames = keep_frames
        self.pc = None
        self.session: str | None = None
        self.messages: list[dict] = []
        self.video: list[tuple[float, int]] = []  # (arrival time, RTP pts)
        self.frames: list[np.ndarray] = []  # the last keep_frames frames (rgb24)
        self.audio_samples = 0
        self.audio_energy: list[tuple[float, float]] = []  # (arrival, mean square) per audio frame
        self._tasks: list[asyncio.Task] = []
        self.t_connect: float | None = None
        self.state = "new"

    async def connect(self, timeout_s: float = 10.0) -> None:
        import aiohttp

        pc = self.pc = new_peer_connection()
        pc.addTrack(self.track)
        pc.addTransceiver("video", direction="recvonly")
        channel = pc.createDataChannel("talkgs")

        @channel.on("message")
        def on_message(msg):
            try:
                self.messages.append({"t": time.monotonic(), **json.loads(msg)})
            except (ValueError, TypeError):
                pass

        @pc.on("track")
        def on_track(track):
            if track.kind == "video" and self.read_video:
                self._tasks.append(asyncio.create_task(self._read_video(track)))
            elif track.kind == "audio":
                self._tasks.append(asyncio.create_task(self._read_audio(track)))

        @pc.on("connectionstatechange")
        def on_state():
            self.state = pc.connectionState

        await pc.setLocalDescription(await pc.createOffer())
        headers = {"X-Talkgs-Token": self.token} if self.token else {}
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "head": self.head}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.url}/api/offer", json=body, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                try:
                    data = await r.json(content_type=None)
                except ValueError:
                    data = {}
                if r.status != 200:
                    await pc.close()
                    raise Refused(r.status, data.get("error", f"HTTP {r.status}"))
        from aiortc import RTCSessionDescription

        self.session = data["session"]
        self.t_connect = time.monotonic()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))

    async def _read_video(self, track) -> None:
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            self.video.append((time.monotonic(), int(f.pts)))
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
        for t in self._tasks:
            t.cancel()
        if self.pc is not None:
            await self.pc.close()
        self.state = "closed"

    # ------------------------------------------------------------------ measurements
    def first_frame_index(self) -> int | None:
        for m in self.messages:
            if m.get("type") == "first_frame":
                return int(m["index"])
        return None

    def frame_indices(self) -> np.ndarray:
        """Session frame index of each received video frame (from the first frame's index
        and the RTP timestamps)."""
        i0 = self.first_frame_index()
        if i0 is None or not self.video:
            return np.zeros(0, np.int64)
        p0 = self.video[0][1]
        d = (np.asarray([p for _, p in self.video], np.int64) - p0) % (1 << 32)
        return i0 + d // (VIDEO_CLOCK // FPS)

    def latencies(self, since: float | None = None) -> np.ndarray:
        """Seconds from each received frame's centre audio sample leaving to the frame arriving."""
        idx = self.frame_indices()
        out = []
        for (t, _), i in zip(self.video, idx):
            if since is not None and t < since:
                continue
            ts = self.track.sent_time(int(i) * SAMPLES_PER_FRAME + SAMPLES_PER_FRAME // 2)
            if ts is not None:
                out.append(t - ts)
        return np.asarray(out)

    def fps(self, t0: float, t1: float) -> float:
        n = sum(1 for t, _ in self.video if t0 <= t < t1)
        return n / max(t1 - t0, 1e-9)

    def first_frame_s(self) -> float | None:
        """First video frame's arrival after the first audio frame was sent."""
        if not self.video or not self.track.sent:
            return None
        return self.video[0][0] - self.track.sent[0]

    def report(self, t0: float | None = None, t1: float | None = None) -> dict:
        t1 = time.monotonic() if t1 is None else t1
        t0 = (self.t_connect or t1) if t0 is None else t0
        lat = self.latencies(since=t0)
        stats = [m for m in self.messages if m.get("type") == "stats"]
        return {
            "session": self.session,
            "fps": self.fps(t0, t1),
            "frames": len(self.video),
            "first_frame_ms": None if self.first_frame_s() is None else 1000 * self.first_frame_s(),
            "latency_ms_p50": float(np.percentile(lat, 50) * 1000) if lat.size else None,
            "latency_ms_p95": float(np.percentile(lat, 95) * 1000) if lat.size else None,
            "audio_s": self.audio_samples / 48000.0,
            "server": stats[-1] if stats else None,
        }
