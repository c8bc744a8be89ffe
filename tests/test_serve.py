"""`talkgs serve`: live sessions batched across clients, in a real browser.

Pure parts first (feature streams, frame windows, the batcher with a real head on the CPU),
then a server started as `talkgs serve` on a tiny CPU head, with headless Chromium (Debian's
package) feeding a speech wav as its microphone, and Python WebRTC peers (aiortc) as further
clients.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from talkgs.audio import FeatureStream, extract, open_stream
from talkgs.errors import AudioFeatureError, TalkgsError
from talkgs.model.audio_encoder import gather_windows
from talkgs.serve.batcher import Batcher, BatchLoop
from talkgs.serve.session import FrameOut, Session, SessionLimits
from talkgs.render.renderer import HeadRenderer, render_features
from talkgs.render.windows import FrameWindows
from tests.conftest import SHARED_DATA

SPEECH = SHARED_DATA / "drive" / "speech_jfk_11s.wav"
STILL_FRAME = 1550  # inside the live head's training frames
TOKEN = "test-token-0123"


def _speech(seconds: float, offset_s: float = 0.0) -> np.ndarray:
    from talkgs.media import read_audio

    if not SPEECH.is_file():
        pytest.skip(f"speech sample absent: {SPEECH} (it lives in ../shared/data beside the repo)")
    wav = read_audio(SPEECH, 16000)
    a = int(offset_s * 16000)
    return wav[a : a + int(seconds * 16000)]


# ----------------------------------------------------------------------------- pure parts


def test_feature_streams_are_chosen_by_kind():
    st = open_stream("mel")
    assert isinstance(st, FeatureStream)
    assert (st.kind, st.window, st.channels, st.lookahead_ms) == ("mel", 16, 80, 62.5)
    with pytest.raises(AudioFeatureError, match="cannot be computed from live audio"):
        open_stream("hubert")


def test_frame_windows_equal_the_whole_clip_windows():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((37, 16, 80)).astype(np.float32)
    fw = FrameWindows(8, (16, 80))
    parts, firsts, i = [], [], 0
    while i < 37:
        k = int(rng.integers(0, 6))
        first, w = fw.push(feats[i : i + k])
        firsts.append((first, len(w)))
        parts.append(w)
        i += k
    parts.append(fw.flush()[1])
    got = np.concatenate(parts)
    want = gather_windows(torch.as_tensor(feats), torch.arange(37), 8).numpy()
    assert np.array_equal(got, want)
    # A frame's window is out as soon as the 3 frames after it have arrived, not later.
    done = 0
    for first, n in firsts:
        assert first == done
        done += n
    assert fw.frames_emitted == 37


@pytest.fixture
def one_thread():
    """Render on one torch thread, as the server does on a CPU (two fight on 2 busy cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _session(sid, renderer, limits=SessionLimits(), plan_offset=0):
    return Session(sid, "live", open_stream(renderer.audio_kind), renderer.audio_window, limits, plan_offset=plan_offset)


def _push_in_chunks(session, wav, rng):
    cuts = np.sort(rng.choice(np.arange(1, len(wav)), size=len(wav) // 900, replace=False))
    for c in np.split(wav, cuts):
        session.push_audio(c)


def test_sessions_batched_together_equal_separate_renders(live_run, one_thread):
    """Frames of three sessions (own audio, own place in the drive plan) rendered in shared
    batches are the frames each session would get alone; the batches really are shared."""
    r = HeadRenderer(live_run, "cpu")
    rng = np.random.default_rng(1)
    wavs = [_speech(1.2, offset_s=o) for o in (0.5, 3.0, 6.0)]
    offsets = [0, 40, 77]
    batcher = Batcher({"live": r}, max_batch=5)
    sessions = [_session(f"s{k}", r, SessionLimits(max_out=100), plan_offset=o) for k, o in enumerate(offsets)]
    for s in sessions:
        batcher.add(s)
    # Audio arrives interleaved, in chunks of any size; the batcher ticks in between.
    feeds = [iter(np.split(w, np.sort(rng.choice(np.arange(1, len(w)), 20, replace=False)))) for w in wavs]
    got = {s.id: [] for s in sessions}
    live = set(range(3))
    while live or batcher.pending():
        for k in list(live):
            chunk = next(feeds[k], None)
            if chunk is None:
                sessions[k].end_audio()
                live.discard(k)
            else:
                sessions[k].push_audio(chunk)
        batcher.tick()
        for s in sessions:
            while (f := s.take_frame()) is not None:
                got[s.id].append(f)
    for s, w, o in zip(sessions, wavs, offsets):
        n = int(np.ceil(len(w) / 640))
        want = np.concatenate(list(render_features(r, extract("mel", w, n), batch_size=n, start=o)))
        frames = got[s.id]
        assert [f.index for f in frames] == list(range(n))
        assert np.abs(np.stack([f.image for f in frames]).astype(int) - want.astype(int)).max() <= 1
    shared = [t for t in batcher.ticks if t["sessions"] > 1]
    assert shared and max(t["size"] for t in batcher.ticks) == 5
    assert len(batcher.ticks) < sum(len(v) for v in got.values()) / 2


@pytest.mark.parametrize("pipelined", [False, True])
def test_the_batch_loop_delivers_every_frame_in_order_as_rendered_alone(live_run, one_thread, pipelined):
    """Two sessions fed in 20 ms packets through the running BatchLoop (the pipelined variant
    delivers a tick's frames after launching the next tick's): each gets every frame, in order,
    equal to its audio rendered alone."""
    import asyncio

    r = HeadRenderer(live_run, "cpu")
    wavs = [_speech(0.8, offset_s=o) for o in (1.0, 4.0)]
    offsets = [0, 50]

    async def serve():
        batcher = Batcher({"live": r}, max_batch=4)
        loop = BatchLoop(batcher, pipelined=pipelined)
        sessions = [_session(f"s{k}", r, SessionLimits(max_out=100), plan_offset=o) for k, o in enumerate(offsets)]
        for s in sessions:
            s.on_pending = loop.wake
            batcher.add(s)
        loop.start(warm_up=False)
        t0 = time.monotonic()
        try:
            for j in range(0, len(wavs[0]), 320):
                for s, w in zip(sessions, wavs):
                    s.push_audio(w[j : j + 320])
                await asyncio.sleep(0.02)  # real time: a session skips frames it falls behind on
            for s in sessions:
                s.end_audio()
            got = {s.id: [] for s in sessions}
            n = int(np.ceil(len(wavs[0]) / 640))
            for _ in range(2000):
                for s in sessions:
                    while (f := s.take_frame()) is not None:
                        got[s.id].append(f)
                if all(len(v) == n for v in got.values()):
                    break
                await asyncio.sleep(0.01)
            # The render thread's busy time counts launching and waiting, never the gap between.
            assert 0 < batcher.busy_s <= time.monotonic() - t0
            return sessions, got, n
        finally:
            await loop.stop()

    sessions, got, n = asyncio.run(serve())
    for s, w, o in zip(sessions, wavs, offsets):
        want = np.concatenate(list(render_features(r, extract("mel", w, n), batch_size=n, start=o)))
        frames = got[s.id]
        assert [f.index for f in frames] == list(range(n))
        assert np.abs(np.stack([f.image for f in frames]).astype(int) - want.astype(int)).max() <= 1
        sound = np.concatenate([f.audio for f in frames])[: len(w)]
        assert np.array_equal(sound, (np.clip(w, -1, 1) * 32767.0).round().astype(np.int16))  # its own sound


def test_a_slow_client_is_bounded_and_stalls_no_one(live_run, one_thread):
    """A session whose frames are never taken keeps at most max_out frames and its sound
    bounded; a session whose device queue overflows skips frames but never sound; the other
    session gets every frame, in order, with its own input audio as sound."""
    r = HeadRenderer(live_run, "cpu")
    limits = SessionLimits(max_pending=6, max_out=2, max_audio_out_s=0.2)
    batcher = Batcher({"live": r}, max_batch=8)
    slow, ok = _session("slow", r, limits), _session("ok", r)
    batcher.add(slow)
    batcher.add(ok)
    wav = _speech(1.6, offset_s=1.0)
    rng = np.random.default_rng(2)
    _push_in_chunks(slow, wav, rng)  # 1.6 s at once: more than max_pending frames become due
    assert len(slow.pending) == 6 and slow.counts["skipped"] > 0
    frames, sound = [], []
    for c in np.array_split(wav, 16):
        ok.push_audio(c)
        slow.push_audio(np.zeros(640, np.float32))
        batcher.tick()
        while (f := ok.take_frame()) is not None:
            frames.append(f.index)
        while (a := ok.take_audio(320)) is not None:
            sound.append(a)
        assert len(slow.out) <= 2 and slow.audio_available() <= 0.2 * 16000
    assert frames == list(range(len(frames))) and len(frames) >= 30
    assert slow.counts["dropped"] > 0
    pts = [p for p, _ in sound]
    assert pts == [320 * k for k in range(len(pts))]  # no gaps, in order
    pcm = np.concatenate([a for _, a in sound]).astype(np.float32) / 32767
    assert np.abs(pcm - wav[: len(pcm)]).max() < 1e-4  # the sound out is the input, delayed
    with pytest.raises(TalkgsError, match="mono float"):
        ok.push_audio(np.zeros((2, 320), np.float32))
    with pytest.raises(TalkgsError, match="longer than"):
        ok.push_audio(np.zeros(16000 * 5, np.float32))
    ok.push_audio(np.full(320, np.nan, np.float32))  # garbage samples are read as silence


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A random tiny Whisper encoder as a Hugging Face directory (tests/test_whisper.py's)."""
    pytest.importorskip("transformers", reason="the whisper kinds need transformers (pip install talkgs[whisper])")
    from tests.test_whisper import build_rand_whisper

    return build_rand_whisper(tmp_path_factory.mktemp("whisper"), ct2=False)["hf"]


def _feature_stage(batcher) -> None:
    for job in batcher.collect_features():
        batcher.accept_features(job, batcher.encode(job))


def _render_stage(sessions, sent: dict | None = None) -> None:
    """What the render stage hands back, for sessions whose head is not rendered here (the
    feature stage is what is tested): each due frame, in order, with an empty picture; with
    ``sent``, a sender takes each frame at once (the input's end makes its last 4 frames due
    together)."""
    for s in sessions:
        while (p := s.take_pending()) is not None:
            s.deliver(FrameOut(p.index, np.zeros((4, 4, 3), np.uint8), p.audio, p.t_in, p.t_final, 0.0, 0.0, 1))
            if sent is not None:
                sent[s.id].append(s.take_frame())


def test_whisper_sessions_share_one_encoder_call_per_tick_and_lose_no_frame(tiny_whisper, one_thread):
    """Three whisper sessions (default layout: hop 1, 40 ms) fed 20 ms packets: every tick ONE
    encoder call runs the ready windows of all of them; each session's frame windows equal
    those of its whole audio through one stream; every frame reaches the sender, in order, with
    its own sound, each final once 160 ms of audio past its end (40 + 3 frames) is in; a
    session that leaves while its windows are on the device is skipped, the others go on."""
    from talkgs.audio import WhisperStream
    from talkgs.audio import whisper as W

    # Layer 0 (no attention) keeps this cheap; tests/test_whisper.py batches deeper layers.
    opts = {"model": tiny_whisper, "layer": 0, "device": "cpu"}
    wavs = [_speech(1.0, offset_s=o) for o in (0.5, 3.0, 6.0)] if SPEECH.is_file() else None
    if wavs is None:
        from tests.test_audio import speechlike

        wavs = [speechlike(16000, seed=k) for k in range(3)]
    batcher = Batcher({"w": None}, max_batch=8)
    sessions = [Session(f"s{k}", "w", WhisperStream("whisper", **opts), 8) for k in range(3)]
    for s in sessions:
        batcher.add(s)
    assert sessions[0].lookahead_ms == 160.0 and sessions[0].limits.max_pending == SessionLimits().max_pending
    got = {s.id: [] for s in sessions}
    sound = {s.id: [] for s in sessions}
    for j in range(0, 16000, 320):
        for s, w in zip(sessions, wavs):
            assert s.push_audio(w[j : j + 320]) == 0  # nothing runs the encoder here
        _feature_stage(batcher)
        for s in sessions:
            # Frame i is final once samples 640 (i + 1) + 640 + 3 x 640 are in.
            assert s.counts["final"] == max((s.samples_in - 640) // 640 - 3, 0), (s.samples_in, s.counts)
        _render_stage(sessions)
        for s in sessions:
            if (f := s.take_frame()) is not None:  # the sender: one frame per 40 ms
                got[s.id].append(f)
            while (a := s.take_audio(320)) is not None:
                sound[s.id].append(a)
    for s in sessions:
        s.end_audio()
    for s in sessions:
        while (f := s.take_frame()) is not None:
            got[s.id].append(f)
    while batcher.due():
        _feature_stage(batcher)
        _render_stage(sessions, got)
    shared = [t for t in batcher.encode_ticks if t["sessions"] == 3]
    assert len(shared) >= 20 and len(batcher.encode_ticks) <= 30
    for s, w in zip(sessions, wavs):
        frames = got[s.id]
        assert [f.index for f in frames] == list(range(25)), s.counts
        assert s.counts["dropped"] == s.counts["skipped"] == 0
        want = gather_windows(torch.as_tensor(W.stream_windows(w, 25, **opts)), torch.arange(25), 8).numpy()
        np.testing.assert_array_equal(np.stack([f.audio for f in frames]).reshape(-1)[:16000],
                                      np.round(np.clip(w, -1, 1) * 32767).astype(np.int16))
        pts = [p for p, _ in sound[s.id]]
        assert pts == [320 * k for k in range(len(pts))]
    # The windows themselves: the feature stage's (shared calls) = one stream over the whole audio.
    s2 = Session("again", "w", WhisperStream("whisper", **opts), 8)
    batcher.add(s2)
    windows = []
    for j in range(0, 16000, 320):
        s2.push_audio(wavs[0][j : j + 320])
        _feature_stage(batcher)
        while (p := s2.take_pending()) is not None:
            windows.append(p.window)
    s2.end_audio()
    _feature_stage(batcher)
    while (p := s2.take_pending()) is not None:
        windows.append(p.window)
    want = gather_windows(torch.as_tensor(W.stream_windows(wavs[0], 25, **opts)), torch.arange(25), 8).numpy()
    np.testing.assert_allclose(np.stack(windows), want, rtol=0, atol=1e-5)
    # A session that leaves while its windows are on the device is skipped; the others go on.
    a, b = (Session(n, "w", WhisperStream("whisper", **opts), 8) for n in ("a", "b"))
    batcher.add(a)
    batcher.add(b)
    for s in (a, b):
        s.push_audio(wavs[1][:4480])  # 6 frames ready (max_pending: none skipped)
    jobs = batcher.collect_features()
    assert len(jobs) == 1 and [s.id for s, _ in jobs[0].items] == ["a", "b"]
    done = batcher.encode(jobs[0])
    batcher.remove("a")
    batcher.accept_features(jobs[0], done)
    assert a.closed and not a.pending and b.counts["final"] == 3 and batcher.errors == 0 and not b.counts["skipped"]


def test_a_device_stream_that_falls_behind_skips_and_a_step_loses_none(tiny_whisper, one_thread):
    """A whisper stream finalising 5 frames at a time (hop 5): the device gets 5 at once and
    hands the sender 5 at once; a sender taking one frame per 40 ms still gets every frame (the
    queues hold a step). A session whose ready frames pile up beyond max_pending (the device
    fell behind) skips the oldest uncomputed; its sound still goes out, in order."""
    from talkgs.audio import WhisperStream

    opts = {"model": tiny_whisper, "layer": 0, "device": "cpu"}
    batcher = Batcher({"w": None})
    s = Session("w", "w", WhisperStream("whisper", hop_frames=5, **opts), 8)
    batcher.add(s)
    assert s.stream.frames_per_step == 5 and s.limits.max_pending == SessionLimits().max_pending + 4
    got = []
    wav = _speech(3.2, offset_s=1.0)
    for c in np.split(wav, 80):  # 40 ms chunks, as a live client sends them
        s.push_audio(c)
        _feature_stage(batcher)
        _render_stage([s])
        if (f := s.take_frame()) is not None:  # the sender: one frame per 40 ms
            got.append(f.index)
    while (f := s.take_frame()) is not None:
        got.append(f.index)
    assert s.counts["dropped"] == 0 and s.counts["skipped"] == 0, s.counts
    assert got == list(range(len(got))) and len(got) >= 60
    # Falling behind: 2 s arrive while the device does nothing.
    lag = Session("lag", "w", WhisperStream("whisper", **opts), 8)
    batcher.add(lag)
    wav = _speech(3.0, offset_s=2.0)
    for c in np.split(wav[:32000], 100):
        lag.push_audio(c)
    assert lag.stream.frames_ready() == 49
    _feature_stage(batcher)
    assert lag.counts["skipped"] == 49 - lag.limits.max_pending and lag.stream.frames_ready() == 0
    frames, sound = [], []
    for c in np.split(wav[32000:], 50):
        lag.push_audio(c)
        _feature_stage(batcher)
        _render_stage([lag])
        while (f := lag.take_frame()) is not None:
            frames.append(f.index)
        while (a := lag.take_audio(320)) is not None:
            sound.append(a)
    assert frames == sorted(frames) and frames[0] == 49 - lag.limits.max_pending and frames[-1] >= 65
    pts = [p for p, _ in sound]
    # The skipped frames' sound went out too; what nobody took beyond max_audio_out_s was dropped
    # (the oldest), and the rest leaves without a gap.
    assert pts[0] == lag.counts["audio_dropped"] > 0
    assert pts == [pts[0] + 320 * k for k in range(len(pts))] and pts[-1] >= 640 * 65
    assert len(lag._hist) < 16000 and lag.stream._buf.shape[0] < 16000 * 5.5


# ----------------------------------------------------------------------------- live server


def start_server(cmd: list[str], timeout_s: float) -> tuple[subprocess.Popen, list[str]]:
    """Start ``talkgs serve`` (``cmd``) and wait for its "[serve] open" line; its output keeps
    being collected into the returned list."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    t0 = time.monotonic()
    while True:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"{' '.join(cmd[2:5])} exited: {''.join(lines)}")
        lines.append(line)
        if line.startswith("[serve] open"):
            break
        if time.monotonic() - t0 > timeout_s:
            proc.kill()
            pytest.fail(f"{' '.join(cmd[2:5])} did not start: {''.join(lines)}")
    threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
    return proc, lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(live_run):
    """`talkgs serve` on the live head: a token, at most 2 sessions, a still head with open
    eyes (so that only the audio moves the picture)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "talkgs", "serve", str(live_run), "--port", str(port), "--device", "cpu",
           "--token", TOKEN, "--max-sessions", "2", "--max-batch", "8", "--idle-timeout-s", "4",
           "--drive.pose", "still", "--drive.still-frame", str(STILL_FRAME), "--drive.blinks", "open"]
    proc, lines = start_server(cmd, 120)
    yield {"url": f"http://127.0.0.1:{port}", "port": port, "proc": proc, "log": lines, "run": live_run,
           "head": Path(live_run).name}
    proc.terminate()
    # SIGTERM: every session closed, then exit 128 + 15 (as the CLI documents), one line said.
    assert proc.wait(30) == 143, "".join(lines)
    assert any(ln.startswith("talkgs: stopped (SIGTERM)") for ln in lines), "".join(lines)
    assert not any("Traceback" in ln for ln in lines), "".join(lines)


class _Loop:
    """An event loop on a thread, so that a browser and WebRTC peers live across tests."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.t = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.t.start()

    def run(self, coro, timeout=120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.t.join(10)


RECORDER = """
(() => {
  // Every frame shown: mean absolute change of the mouth box since the previous frame, and the
  // loudness of the sound being played with it (WebAudio on the received stream).
  const v = document.getElementById('video');
  const c = document.createElement('canvas');
  const ctx = c.getContext('2d', {willReadFrequently: true});
  const ac = new AudioContext();
  const an = ac.createAnalyser();
  an.fftSize = 1024;
  ac.createMediaStreamSource(v.srcObject).connect(an);
  const buf = new Float32Array(an.fftSize);
  const box = BOX;
  const R = window.__rec = {frames: [], stats: []};
  let prev = null;
  const cb = (now, meta) => {
    if (v.videoWidth) {
      c.width = v.videoWidth; c.height = v.videoHeight;
      ctx.drawImage(v, 0, 0);
      const d = ctx.getImageData(box[0], box[1], box[2] - box[0], box[3] - box[1]).data;
      let diff = -1;
      if (prev) {
        diff = 0;
        for (let i = 0; i < d.length; i += 4)
          diff += Math.abs(d[i] - prev[i]) + Math.abs(d[i + 1] - prev[i + 1]) + Math.abs(d[i + 2] - prev[i + 2]);
        diff /= 3 * d.length / 4;
      }
      prev = d.slice();
      an.getFloatTimeDomainData(buf);
      let e = 0;
      for (const x of buf) e += x * x;
      R.frames.push([performance.now(), meta.mediaTime, diff, Math.sqrt(e / buf.length), v.videoWidth, v.videoHeight]);
    }
    v.requestVideoFrameCallback(cb);
  };
  v.requestVideoFrameCallback(cb);
  setInterval(async () => {
    if (!window.talkgs.pc) return;
    (await window.talkgs.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp')
        R.stats.push([performance.now(), s.kind, s.packetsReceived, s.framesDecoded || 0, s.bytesReceived]);
    });
  }, 250);
  return ac.state;
})()
"""


def _own_mouth_change(run, wav, box) -> float:
    """Median change of the mouth box between consecutive frames (grey levels) in the head's own
    renders of the wav's speech (still head, open eyes, as the server renders it)."""
    from talkgs.render.drive import DriveConfig

    n = int(np.ceil(len(wav) / 640))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    r = HeadRenderer(run, "cpu", drive=DriveConfig(pose="still", still_frame=STILL_FRAME, blinks="open"))
    frames = np.concatenate(list(render_features(r, extract("mel", wav, n)[:100], batch_size=25))).astype(np.int16)
    torch.set_num_threads(threads)
    crop = frames[:, box[1] : box[3], box[0] : box[2]]
    return float(np.median(np.abs(np.diff(crop, axis=0)).mean(axis=(1, 2, 3))))


@pytest.fixture(scope="module")
def live(server, anchor_dataset, tmp_path_factory):
    """Chromium with the speech wav (4 s of speech, 2 s of silence, looped) as its microphone,
    the page open with the token and a session started from the microphone button."""
    from tests.cdp import Browser, find_chromium
    from talkgs.media import write_wav

    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (`make test` installs Debian's package: apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("browser")
    wav = np.concatenate([_speech(4.0, offset_s=0.3), np.zeros(2 * 16000, np.float32)])
    mic = tmp / "mic.wav"
    write_wav(mic, wav, 16000)
    with np.load(anchor_dataset / "tracks.npz") as z:
        x0, y0, x1, y1 = (z["lips_box"][STILL_FRAME] * 0.125).tolist()
    box = [int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))]
    flags = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={mic}"]
    loop = _Loop()
    state = {"loop": loop, "url": server["url"], "box": box, "tmp": tmp, "head": server["head"], "server": server,
             "offline_mouth_change": _own_mouth_change(server["run"], wav, box)}

    async def start():
        b = Browser(binary, tmp / "profile", flags)
        await b.__aenter__()
        state["browser"] = b
        page = await b.open(f"{server['url']}/?token={TOKEN}")
        state["page"] = page
        await page.wait_for("window.talkgs && talkgs.heads && talkgs.heads.length === 1")
        await page.eval("document.getElementById('mic').click()")
        await page.wait_for("talkgs.state === 'connected' && talkgs.firstFrame !== null", timeout_s=30)
        state["ac_state"] = await page.eval(RECORDER.replace("BOX", str(box)))
        state["t0"] = await page.eval("performance.now()")

    try:
        loop.run(start())
        yield state
    finally:
        async def stop():
            if "browser" in state:
                await state["browser"].__aexit__(None, None, None)
        try:
            loop.run(stop(), timeout=30)
        finally:
            loop.close()


def _frames_since(live, t_ms):
    rows = live["loop"].run(live["page"].eval(f"window.__rec.frames.filter(r => r[0] >= {t_ms})"))
    return np.asarray(rows, np.float64).reshape(-1, 6)


def _wait_frames(live, t_ms, n: int, timeout_s: float = 180.0) -> np.ndarray:
    """The page's frames shown since ``t_ms`` once there are ``n`` of them (a busy machine
    takes longer; how fast they come is bench/serve.py's business, not the tests')."""
    t0 = time.monotonic()
    while True:
        rows = _frames_since(live, t_ms)
        if rows.shape[0] >= n:
            return rows
        assert time.monotonic() - t0 < timeout_s, f"the page showed {rows.shape[0]} of {n} frames"
        time.sleep(0.25)


def _wait_sessions(live, n: int, timeout_s: float = 60.0) -> dict:
    t0 = time.monotonic()
    while True:
        status = live["loop"].run(_get(live["url"] + "/api/status", TOKEN))
        if len(status["sessions"]) == n:
            return status
        assert time.monotonic() - t0 < timeout_s, status
        time.sleep(0.25)


def test_browser_session_streams_video_and_sound(live):
    """The page's session: the head's frames, in order; the sound arrives and follows the wav's
    speech and silence; the mouth region rests in the silence (and moves in the speech as much
    as the head moves it); the first frame came after the first audio."""
    page, run = live["page"], live["loop"].run
    # 175 frames: 7 s of the session, more than one loop of speech and silence.
    rows = _wait_frames(live, live["t0"] + 1000, 175)
    assert tuple(rows[-1, 4:6]) == (64, 64)
    assert np.all(np.diff(rows[:, 1]) > 0), "frames shown out of order"  # media time only moves on
    # Sound arrives (packets, and the played level follows the speech and the silence).
    stats = run(page.eval("window.__rec.stats.filter(r => r[1] === 'audio')"))
    assert stats[-1][2] - stats[0][2] > 200, stats[-1]
    level, diff = rows[:, 3], rows[:, 2]
    loud, quiet = level > 0.02, level < 0.002
    assert loud.mean() > 0.3 and quiet.mean() > 0.15, (loud.mean(), quiet.mean())
    # The mouth region rests while the wav is silent (a still head: only audio moves the picture),
    # and moves while it speaks as much as the head's own renders of this audio move it (the
    # tiny CPU head hardly moves its mouth: ~0.01 grey levels, measured; a trained head does).
    moving = diff[loud & (diff >= 0)]
    resting = diff[quiet & (diff >= 0)]
    assert resting.size > 20 and np.median(resting) <= 0.05, np.percentile(resting, [50, 90, 100])
    own = live["offline_mouth_change"]
    if own >= 0.5:
        assert np.median(moving) >= 0.3 * own, (np.median(moving), own)
    hello = run(page.eval("talkgs.hello"))
    assert hello["lookahead_ms"] == pytest.approx(182.5)
    first = run(page.eval("talkgs.firstFrame"))
    assert first["index"] >= 0 and first["ms_after_first_audio"] > 0, first
    status = run(page.eval("document.getElementById('st-fps').textContent"))
    assert "frames/s" in status


def test_second_session_and_a_disconnect_leave_the_first_alone(live):
    """A second session gets its own frames while the first goes on getting frames; once the
    second vanishes mid-stream (no goodbye) it is cleaned up and the first streams on."""
    from talkgs.serve.client import LiveClient
    from talkgs.serve.webrtc import restrict_ice_addresses

    restrict_ice_addresses("127.0.0.1")
    page, run = live["page"], live["loop"].run
    t_start = run(page.eval("performance.now()"))

    async def second():
        c = LiveClient(live["url"], live["head"], _speech(6.0, offset_s=2.0), token=TOKEN)
        await c.connect()
        t0 = time.monotonic()
        while len(c.video) < 25:  # however long a busy machine takes
            assert time.monotonic() - t0 < 180, c.report()
            await asyncio.sleep(0.2)
        rep = c.report()
        idx = c.frame_indices()
        await c.pc.close()  # gone mid-stream, without saying goodbye
        return rep, idx

    rep, idx = run(second(), timeout=240)
    t_gone = run(page.eval("performance.now()"))
    # Both were served at once: the second's frames in order, with their latencies measured, ...
    assert rep["frames"] >= 25 and rep["latency_ms_p50"] is not None, rep
    assert np.all(np.diff(idx) > 0), idx
    both = _frames_since(live, t_start)
    assert both[both[:, 0] < t_gone].shape[0] > 0, "the first session got no frame while the second was on"
    # ... and the one that vanished is cleaned up while the first streams on.
    _wait_sessions(live, 1)
    after = _wait_frames(live, t_gone + 500, 25)
    assert np.all(np.diff(after[:, 1]) > 0)


async def _get(url, token=None):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"X-Talkgs-Token": token} if token else {}) as r:
            return await r.json()


async def _post(url, body, token=None):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers={"X-Talkgs-Token": token} if token else {}) as r:
            return r.status, await r.json(content_type=None)


def test_bad_input_gets_a_clear_message_and_the_others_keep_streaming(live):
    from talkgs.serve.client import LiveClient, Refused
    from talkgs.serve.webrtc import restrict_ice_addresses

    restrict_ice_addresses("127.0.0.1")
    from tests.cdp import Browser

    run, url, b = live["loop"].run, live["url"], live["browser"]
    t_start = run(live["page"].eval("performance.now()"))

    async def scenario():
        out = {}
        # No microphone permission (a browser that denies permission prompts), then a non-audio file.
        b2 = Browser(b.binary, live["tmp"] / "profile-denied", ["--use-fake-device-for-media-stream",
                                                                 "--deny-permission-prompts"])
        await b2.__aenter__()
        p = await b2.open(f"{url}/?token={TOKEN}")
        await p.wait_for("talkgs.heads && talkgs.heads.length === 1")
        await p.eval("document.getElementById('mic').click()")
        out["denied"] = await p.wait_for(
            "talkgs.messages.length > 1 && talkgs.messages[talkgs.messages.length - 1].msg")
        junk = live["tmp"] / "notes.txt"
        junk.write_text("not audio at all\n" * 100)
        doc = await p.send("DOM.getDocument")
        node = await p.send("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#file")
        await p.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(junk)])
        out["junk"] = await p.wait_for(
            "talkgs.messages.length > 2 && talkgs.messages[talkgs.messages.length - 1].msg")
        await b2.__aexit__(None, None, None)
        # Without the token: the page says so, the API refuses.
        p = await b.open(f"{url}/")
        out["no_token_page"] = await p.wait_for("talkgs.messages.length && talkgs.messages[0].msg")
        await p.close()
        head = live["head"]
        out["wrong_token"] = await _post(url + "/api/offer", f'{{"head": "{head}", "type": "offer", "sdp": "x"}}', "wrong")
        out["garbage"] = await _post(url + "/api/offer", b"\x00\xff garbage", TOKEN)
        out["bad_sdp"] = await _post(url + "/api/offer", f'{{"head": "{head}", "type": "offer", "sdp": "v=0 junk"}}', TOKEN)
        out["bad_head"] = await _post(url + "/api/offer", '{"head": "other", "type": "offer", "sdp": "x"}', TOKEN)
        out["nested"] = await _post(url + "/api/offer", "[" * 30000, TOKEN)  # nested too deeply for a parser
        out["huge"] = await _post(url + "/api/offer", " " * 100_000, TOKEN)
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/favicon.ico") as r:
                out["icon"] = r.status
        # A client that never reads its video takes the second (last) place; a third is refused.
        mute = LiveClient(url, live["head"], _speech(3.0), token=TOKEN, read_video=False)
        await mute.connect()
        await asyncio.sleep(1.5)
        try:
            extra = LiveClient(url, live["head"], _speech(1.0), token=TOKEN)
            await extra.connect()
            out["full"] = None
        except Refused as e:
            out["full"] = (e.status, e.message)
        await asyncio.sleep(1.0)
        out["status"] = await _get(url + "/api/status", TOKEN)
        await mute.close()
        return out

    out = run(scenario())
    assert "Microphone permission was denied" in out["denied"], out["denied"]
    assert "notes.txt is not an audio file" in out["junk"], out["junk"]
    assert "token" in out["no_token_page"], out["no_token_page"]
    assert out["wrong_token"][0] == 401 and "token" in out["wrong_token"][1]["error"]
    assert out["garbage"][0] == 400 and "not JSON" in out["garbage"][1]["error"]
    assert out["bad_sdp"][0] == 400 and "offer was refused" in out["bad_sdp"][1]["error"]
    assert out["bad_head"][0] == 404 and "unknown head" in out["bad_head"][1]["error"]
    assert out["full"] is not None and out["full"][0] == 503 and "full" in out["full"][1], out["full"]
    assert out["status"]["refused"] >= 1 and len(out["status"]["sessions"]) == 2
    assert out["nested"][0] == 400 and "not JSON" in out["nested"][1]["error"], out["nested"]
    assert out["huge"][0] == 413 and "too large" in out["huge"][1]["error"], out["huge"]
    assert out["icon"] == 204
    log = "".join(live["server"]["log"])
    assert "RecursionError" not in log and "Traceback" not in log, log
    rows = _frames_since(live, t_start)
    assert rows.shape[0] > 0  # served all along (two sessions for a while) ...
    assert live["server"]["proc"].poll() is None
    _wait_sessions(live, 1)
    _wait_frames(live, run(live["page"].eval("performance.now()")), 25)  # ... and after


FIGURES = ("st-fps", "st-lat", "st-ahead", "st-first", "st-drop", "st-server")


def test_page_stop_resets_its_figures_and_a_superseded_file_says_nothing(live):
    """A file played from the page: its session's figures show; a file picked next that is not
    audio is refused in one message, which the first file's end does not overwrite; Stop closes
    the session and clears every figure. The page's console stays free of errors (no favicon
    404)."""
    from talkgs.media import write_wav

    run, url, b = live["loop"].run, live["url"], live["browser"]
    short = live["tmp"] / "short.wav"
    write_wav(short, _speech(1.5, offset_s=0.3), 16000)
    junk = live["tmp"] / "later.txt"
    junk.write_text("not audio either\n" * 100)
    figures = "[" + ", ".join(f"document.getElementById('{i}').textContent" for i in FIGURES) + "]"

    async def scenario():
        out = {}
        p = await b.open(f"{url}/?token={TOKEN}")
        await p.wait_for("talkgs.heads && talkgs.heads.length === 1")
        doc = await p.send("DOM.getDocument")
        node = await p.send("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#file")

        async def pick(path):
            await p.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(path)])

        await pick(short)
        await p.wait_for("talkgs.state === 'connected' && talkgs.firstFrame !== null && talkgs.stats !== null "
                         "&& document.getElementById('st-fps').textContent.includes('frames/s')", timeout_s=120)
        out["during"] = await p.eval(figures)
        await pick(junk)
        out["junk"] = await p.wait_for("talkgs.messages.length && talkgs.messages[talkgs.messages.length - 1].msg"
                                       ".includes('later.txt') && talkgs.messages[talkgs.messages.length - 1].msg")
        await asyncio.sleep(4.0)  # the 1.5 s file ends meanwhile
        out["messages"] = await p.eval("talkgs.messages.map(m => m.msg)")
        await p.eval("document.getElementById('stop').click()")
        out["after"] = await p.eval(figures)
        out["state"] = await p.eval("[talkgs.state, talkgs.firstFrame, talkgs.stats, talkgs.hello, talkgs.fps]")
        out["console"] = [e["params"]["entry"] for e in b.events
                          if e.get("method") == "Log.entryAdded" and e.get("sessionId") == p.session_id]
        await p.close()
        return out

    out = run(scenario(), timeout=240)
    assert all(v != "-" for k, v in zip(FIGURES, out["during"]) if k != "st-drop"), out["during"]
    assert "later.txt is not an audio file" in out["junk"], out["junk"]
    assert out["messages"][-1] == out["junk"], out["messages"]
    assert not any("short.wav has finished" in m for m in out["messages"]), out["messages"]
    assert out["after"] == ["-"] * len(FIGURES), out["after"]
    assert out["state"] == ["closed", None, None, None, 0], out["state"]
    errors = [e for e in out["console"] if e.get("level") == "error"]
    assert not errors, errors
    _wait_sessions(live, 1)


def test_serve_stops_on_ctrl_c_with_130_and_brackets_an_ipv6_address(live_run):
    """SIGINT: the server closes its sessions and exits 130; an IPv6 address is printed in
    brackets (http://[::1]:PORT/)."""
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "talkgs", "serve", str(live_run), "--host", "::1", "--port",
                             str(port), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[serve] open"):
            break
    assert lines and lines[-1].startswith(f"[serve] open http://[::1]:{port}/ "), "".join(lines)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + rest
    assert rest.strip().splitlines()[-1].startswith("talkgs: stopped (Ctrl-C)"), rest
    assert "Traceback" not in rest, rest


def test_serve_refuses_bad_command_lines(live_run, tmp_path):
    def serve(*args):
        r = subprocess.run([sys.executable, "-m", "talkgs", "serve", *args], capture_output=True, text=True, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("talkgs:"), r.stderr
        return lines[0]

    assert "needs --token" in serve(str(live_run), "--host", "0.0.0.0")
    assert "http://[::]:8080/?token=SECRET" in serve(str(live_run), "--host", "::")
    assert "does not exist" in serve(str(tmp_path / "nope"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert "cannot listen" in serve(str(live_run), "--port", str(s.getsockname()[1]))
