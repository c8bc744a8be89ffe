"""The WebRTC side of a session (aiortc): microphone audio in, the head's video and sound out.

- :func:`consume_audio` reads the peer's audio track (Opus, decoded by aiortc), resamples it
  to 16 kHz mono float32 and pushes it into the :class:`~talkgs.serve.session.Session`.
- :class:`HeadVideoTrack` hands the session's rendered frames to aiortc's VP8 encoder as soon
  as they are on the host; the picture's timestamp is the frame's place on the session's
  audio timeline (frame i at i x 40 ms), so the browser plays frames at their spacing even
  when a batch delivers several at once.
- :class:`HeadAudioTrack` sends the session's own input audio, released frame by frame as
  the video track sends each frame: a frame's picture and its 40 ms of sound leave together,
  and the browser (which maps each track's timestamps to send time through RTCP sender
  reports) plays them together. Audio out is therefore the input delayed by exactly the
  video's delay.

aiortc is imported here only; the rest of talkgs.serve (session, batcher) does not need it.
"""

from __future__ import annotations

import asyncio
import fractions
import ipaddress
import logging
import time

import numpy as np

from talkgs.conventions import FPS, SAMPLE_RATE
from talkgs.serve.session import Session

log = logging.getLogger("talkgs.serve")

VIDEO_CLOCK = 90_000  # RTP video clock (Hz)
AUDIO_FRAME = SAMPLE_RATE // 50  # 20 ms of sound per audio frame

try:  # aiortc is the `serve` extra; importing this module without it says so in one line
    import av
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import MediaStreamError
except ImportError as e:  # pragma: no cover - exercised only where aiortc is absent
    from talkgs.errors import TalkgsError

    raise TalkgsError(f"talkgs serve needs aiortc and aiohttp (pip install 'talkgs[serve]'): {e}") from e


def restrict_ice_addresses(host: str) -> None:
    """Offer WebRTC media only on the address the server is bound to.

    aioice gathers candidates on every interface (and never on loopback) and has no option to
    choose; a server told to listen on 127.0.0.1 must not open media ports elsewhere, so the
    host-address lookup of aioice is replaced for this process: a loopback host offers
    127.0.0.1 (or ::1), a specific address offers itself, and 0.0.0.0 / :: keep aioice's
    default (every interface).
    """
    import aioice.ice

    if host in ("0.0.0.0", "::", ""):
        return
    addr = "127.0.0.1" if host == "localhost" else host
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return  # a host name: leave aioice's choice
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: [addr]  # type: ignore[assignment]


def new_peer_connection() -> RTCPeerConnection:
    """A peer connection with no STUN/TURN server (aiortc's default would ask a public STUN
    server; a local or LAN server needs none)."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def consume_audio(track: MediaStreamTrack, session: Session, on_error=None) -> None:
    """Push the peer's audio into the session until the track ends, then end the session's
    input (its last frames become final)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    try:
        while not session.closed:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            t = time.monotonic()
            for f in resampler.resample(frame):
                session.push_audio(f.to_ndarray().reshape(-1), t)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # a peer sending something undecodable ends its own session only
        log.warning("session %s: audio input failed: %s", session.id, e)
        if on_error is not None:
            on_error(f"audio input failed: {e}")
        return
    session.end_audio()


class _Waiter:
    """An asyncio.Event the (synchronous) session sets through a callback."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()
        self.event.clear()


class HeadVideoTrack(MediaStreamTrack):
    """The session's rendered frames, oldest first, as soon as they are on the host."""

    kind = "video"

    def __init__(self, session: Session, on_sent=None):
        super().__init__()
        self.session = session
        self._waiter = _Waiter()
        session.on_frame = self._waiter
        self._on_sent = on_sent
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK)

    async def recv(self):
        while True:
            if self.readyState != "live" or self.session.closed:
                raise MediaStreamError
            f = self.session.take_frame()
            if f is not None:
                break
            await self._waiter.wait()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f.image), format="rgb24")
        frame.pts = f.index * (VIDEO_CLOCK // FPS)
        frame.time_base = self._time_base
        if self._on_sent is not None:
            self._on_sent(f)
        return frame


class HeadAudioTrack(MediaStreamTrack):
    """The session's input audio, 20 ms at a time, as the video track releases it."""

    kind = "audio"

    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self._waiter = _Waiter()
        session.on_audio = self._waiter
        self._time_base = fractions.Fraction(1, SAMPLE_RATE)

    async def recv(self):
        while True:
            if self.readyState != "live" or self.session.closed:
                raise MediaStreamError
            got = self.session.take_audio(AUDIO_FRAME)
            if got is not None:
                break
            await self._waiter.wait()
        pts, samples = got
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = self._time_base
        return frame
