"""`talkgs render`: a trained head says new audio, as an mp4 with that audio.

Pipeline (all of it batched on the model's device): audio features of the run's kind ->
8-frame windows -> audio encoder + face / mouth deformers -> rasterization of both branches
-> composite over the drive frame's torso on the plate -> uint8. Frames leave the device one
batch behind the one being rendered and are encoded by a writer thread, so the GPU does not
wait on the encoder (and the encoder only waits on the GPU when it is faster).

Length and sync: the output has exactly ``round(duration x 25)`` frames; the audio is
resampled once for the features (16 kHz) and once for the mux (the source's own rate, at
most 48 kHz), and fitted to exactly the video's duration (see ``talkgs.media.VideoWriter``).
Frame i's features are centred on ``(i + 0.5) / 25`` s, as in training, so lips cannot
drift however long the audio is.

Memory is bounded by the drive segment (its torso backgrounds, ``DriveConfig``), one batch
of frames and the per-frame features (~2.6 kB per frame for ``mel`` at float16: 4 MB per
minute); frames stream to the encoder as they are made.

Python API: :class:`HeadRenderer` (load once, render batches), :func:`render_features`
(a generator of uint8 frame batches for features of any length) and :func:`render_audio`
(what the CLI runs).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import queue
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from talkgs.conventions import FPS, MAX_MOUTH_AMPLITUDE, SAMPLE_RATE, SAMPLES_PER_FRAME
from talkgs.data import format as fmt
from talkgs.data.loader import lifted_offsets
from talkgs.data.runs import run_dataset
from talkgs.errors import AudioFeatureError, MediaError, TalkgsError
from talkgs.model.audio_encoder import gather_windows
from talkgs.model.head import FrameRender, torso_background
from talkgs.model.inputs import FrameInputs, frame_inputs
from talkgs.render.drive import DriveConfig, DrivePlan, default_segment, drive_plan, longest_shot
from talkgs.render.graphs import DeformGraphs
from talkgs.render.hostcopy import HostCopies
from talkgs.model import checkpoint as ckpt
from talkgs.device import resolve_device, to_device_async

MAX_DEFAULT_SEGMENT = 300  # frames (12 s): longer shots are cut to their middle part
MAX_MUX_RATE = 48_000


def _segment_within(meta: dict, frame_range: tuple[int, int] | None) -> tuple[int, int]:
    """Default drive segment: the longest shot in the training split (and the run's frame
    range), cut to its middle MAX_DEFAULT_SEGMENT frames."""
    if frame_range is None:
        a, b = default_segment(meta)
    else:
        t0, t1 = meta["split"]["train"]
        lo, hi = max(int(t0), frame_range[0]), min(int(t1), frame_range[1])
        if hi <= lo:
            lo, hi = frame_range
        a, b = longest_shot(meta.get("shots") or [[0, int(meta["n_frames"])]], lo, hi)
    if b - a > MAX_DEFAULT_SEGMENT:
        a += (b - a - MAX_DEFAULT_SEGMENT) // 2
        b = a + MAX_DEFAULT_SEGMENT
    return a, b


class HeadRenderer:
    """A trained run, ready to render frames for audio features.

    ``render_batch(features [B, 8, W, C], plan)`` -> uint8 ``[B, H, W, 3]`` on the device
    (:meth:`render` gives the float :class:`talkgs.model.head.FrameRender`). Holds the model,
    the drive segment's cameras and torso backgrounds (uint8), and the eye-code reference of
    the run. :meth:`set_drive` switches to another drive (``talkgs eval`` replays the val frames,
    then a block of training frames, then drives the head with other clips' audio).
    ``cuda_graphs`` (CUDA only; on by default): each batch's deformation replays a captured
    graph (:class:`talkgs.render.graphs.DeformGraphs`); False runs it eagerly (the reference).
    ``fused_face`` (on by default): the face branch's per-frame deformation as one Triton kernel
    where Triton runs on CUDA (:mod:`talkgs.model.fused_face`); False, or any other device, runs
    PyTorch's ops (the reference).
    ``one_pass`` (on by default): with gsplat on CUDA, both branches are rasterized in one call
    (:func:`talkgs.model.head.stack_branches`); False, or the torch rasterizer, renders them in two
    (the reference: the same frames).
    """

    def __init__(
        self,
        run: str | Path,
        device: str | torch.device = "auto",
        dataset: str | Path | None = None,
        drive: DriveConfig | None = DriveConfig(),
        backend: str = "auto",
        scale: float | None = None,
        keep_images: bool = False,
        mouth_amplitude: float = 1.0,
        cuda_graphs: bool = True,
        fused_face: bool = True,
        one_pass: bool = True,
    ):
        self.device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        state = ckpt.load(run, map_location="cpu")
        self.state = state
        self.run = Path(run)
        self.backend = backend
        self.audio_kind: str = state["audio"]["kind"]
        self.feature_shape = (int(state["audio"]["window"]), int(state["audio"]["channels"]))
        # The options the training features were computed with: new audio must be computed alike.
        self.audio_options: dict = dict(state["audio"].get("options") or {})
        train_cfg = state["config"]
        self.root = run_dataset(state, dataset)
        self.meta = fmt.read_meta(self.root)
        fr = train_cfg.get("frame_range")
        self.frame_range = (int(fr[0]), int(fr[1])) if fr else None
        self.scale = float(train_cfg.get("image_scale", 1.0)) if scale is None else float(scale)
        self.tracks = fmt.load_tracks(self.root, ("blink", "eye_ratio", "w2c"))
        self.n_dataset_frames = int(self.meta["n_frames"])
        self.model = ckpt.build_model(state, self.device)
        self.model.fix_fields(fused=fused_face)  # a renderer's model never changes: its motion fields' spatial part is computed once
        self.eye_ratio_ref = state["eye_ratio_ref"].to(self.device)
        self.audio_window = int(self.model.cfg.audio.window)
        if not 0.0 < mouth_amplitude <= MAX_MOUTH_AMPLITUDE:
            raise TalkgsError(f"--mouth-amplitude must be in (0, {MAX_MOUTH_AMPLITUDE:g}], got {mouth_amplitude}")
        if mouth_amplitude != 1.0 and self.model.mouth_predictor is None:
            raise TalkgsError(
                f"--mouth-amplitude needs a mouth-state run; {self.run} is audio-conditioned (--preset original)"
            )
        self.mouth_amplitude = float(mouth_amplitude)
        # The deformation as captured CUDA graphs (one per batch size; talkgs.render.graphs).
        self.graphs = DeformGraphs(self.model, self.mouth_amplitude) if cuda_graphs and self.device.type == "cuda" else None
        # On the CPU the torch rasterizer would pay for the padding and gains no launches.
        self.one_pass = bool(one_pass) and self.device.type == "cuda" and backend != "torch"
        self._lanes: list[RenderLane] = []  # render_features's concurrent lanes (lanes()), apart from self.graphs
        self.width = int(round(self.meta["width"] * self.scale))
        self.height = int(round(self.meta["height"] * self.scale))
        self.drive: DriveConfig | None = None
        self.segment: tuple[int, int] | None = None
        self.images = None
        self.backgrounds: torch.Tensor | None = None
        self._plan: DrivePlan | None = None
        if drive is not None:  # None: the caller picks one with set_drive before rendering
            self.set_drive(drive, keep_images)

    def set_drive(self, drive: DriveConfig, keep_images: bool = False) -> None:
        """Use ``drive`` from now on: loads its segment's cameras and torso backgrounds.
        ``keep_images`` keeps the segment's frames and labels (at the render scale) as
        ``self.images`` (a :class:`talkgs.data.Dataset` of the segment), for ground truth."""
        from talkgs.data import load_dataset

        if drive.segment is None and drive.pose in ("pingpong", "replay"):
            drive = dataclasses.replace(drive, segment=_segment_within(self.meta, self.frame_range))
        if drive.pose == "still":
            f = drive_plan(self.meta, self.tracks, 1, drive).frames[0]
            seg = (int(f), int(f) + 1)
        else:
            seg = (int(drive.segment[0]), int(drive.segment[1]))
        self.drive = drive
        self.segment = seg
        self.images = None
        self.backgrounds = None  # free the previous segment before loading the next
        ds = load_dataset(self.root, self.device, audio_kind=None, frame_range=seg, scale=self.scale)
        self.width, self.height = ds.width, ds.height
        self.K = ds.K.to(self.device)
        self.w2c = ds.w2c
        # Torso backgrounds of the whole segment once, as uint8: rendering then only indexes them.
        bgs = []
        for s in range(0, ds.n_frames, 32):
            sl = slice(s, min(s + 32, ds.n_frames))
            bg = torso_background(ds.frames[sl], ds.labels[sl], ds.background)
            bgs.append((bg * 255.0 + 0.5).clamp(0, 255).to(torch.uint8))
        self.backgrounds = torch.cat(bgs)  # [L, H, W, 3]
        self.images = ds if keep_images else None
        self._plan: DrivePlan | None = None

    # ------------------------------------------------------------------ inputs
    def extract_features(self, wav16: np.ndarray, n_frames: int) -> np.ndarray:
        """Features ``[n_frames, W, C]`` of the run's kind for mono 16 kHz ``wav16 [S]``, computed
        with the options of the features the run was trained on."""
        from talkgs.audio import extract

        return extract(self.audio_kind, wav16, n_frames, **self.audio_options)

    def check_kind(self, kind: str | None) -> None:
        """One-line error unless ``kind`` (None: the run's) is the kind the run was trained with."""
        if kind is not None and kind != self.audio_kind:
            raise AudioFeatureError(
                f"run {self.run} was trained with '{self.audio_kind}' audio features and cannot be driven by "
                f"'{kind}' features (train another run with --audio-kind {kind})"
            )

    def check_features(self, feats: np.ndarray) -> None:
        if feats.ndim != 3 or tuple(feats.shape[1:]) != self.feature_shape:
            raise AudioFeatureError(
                f"features have shape {tuple(feats.shape)}; run {self.run} needs [N, {self.feature_shape[0]}, "
                f"{self.feature_shape[1]}] ('{self.audio_kind}')"
            )

    def plan(self, n_out: int, start: int = 0) -> DrivePlan:
        """Drive frames and eyes of output frames [start, start + n_out) (the plan is made once
        for a growing horizon, so streaming costs O(1) per frame)."""
        stop = start + n_out
        if self._plan is None or len(self._plan) < stop:
            horizon = max(stop, 2 * len(self._plan) if self._plan is not None else 0, 1500)
            if self.drive.pose == "replay":  # a replay has no frames beyond its segment
                horizon = max(stop, self.segment[1] - self.segment[0])
            self._plan = drive_plan(self.meta, self.tracks, horizon, self.drive)
        return self._plan.slice(start, stop)

    # ------------------------------------------------------------------ rendering
    def lanes(self, n: int) -> list["RenderLane"]:
        """``n`` lanes for :func:`render_features` to render batches in at once, each with its own
        CUDA stream and its own deformation graphs (a graph's outputs are its own buffers, so
        two batches in flight cannot share one); made on first use and kept."""
        while len(self._lanes) < n:
            cuda = self.device.type == "cuda"
            self._lanes.append(RenderLane(
                torch.cuda.Stream(device=self.device) if cuda else None,
                DeformGraphs(self.model, self.mouth_amplitude) if self.graphs is not None else None))
        return self._lanes[:n]

    @torch.no_grad()
    def render(self, windows: torch.Tensor, plan: DrivePlan, states: torch.Tensor | None = None,
               lane: "RenderLane | None" = None) -> FrameRender:
        """The float :class:`FrameRender` (image not clamped, branch alphas; on the device) of
        audio windows ``[B, 8, W, C]`` and the matching slice of a drive plan; ``states [B, m]``:
        mouth states to use instead of the ones predicted from the audio (mouth_state runs;
        predicted ones are scaled by ``self.mouth_amplitude``); ``lane``: whose deformation
        graphs to replay (:meth:`lanes`; default the renderer's own)."""
        x = self.inputs(windows, plan)
        graphs = self.graphs if lane is None else lane.graphs
        if graphs is None:
            deformed = self.model.deform_frames(x.audio, x.eye, states, self.mouth_amplitude)
        else:
            deformed = graphs(x.audio, x.eye, states)
        return self.model.render_deformed(deformed, x.viewmats, x.Ks, self.width, self.height, x.background,
                                          self.backend, one_pass=self.one_pass)

    def inputs(self, windows: torch.Tensor, plan: DrivePlan) -> FrameInputs:
        """What :meth:`TalkingHead.render_frames` takes (:func:`talkgs.model.inputs.frame_inputs`,
        as training builds it) for audio windows ``[B, 8, W, C]`` and the matching slice of a
        drive plan: its drive frames' cameras and torso backgrounds, its eyes."""
        b = windows.shape[0]
        if len(plan) != b:
            raise TalkgsError(f"render_batch: {b} audio windows but {len(plan)} drive frames")
        # The plan's numbers in one pinned, non-blocking copy (frame indices < 2^24 are exact in
        # float32): a copy from pageable memory would wait for every kernel queued before it.
        host = np.column_stack([plan.frames, plan.blink, plan.eye_ratio]).astype(np.float32)
        x = to_device_async(torch.from_numpy(host), self.device)  # [B, 4]
        local = x[:, 0].long() - self.segment[0]
        if self.drive.pose == "still":
            local = torch.zeros_like(local)
        bg = self.backgrounds[local].float() / 255.0
        return frame_inputs(windows, x[:, 1], x[:, 2:4], self.eye_ratio_ref, self.w2c[local], self.K, bg)

    def measured_mouth_states(self, a: int, b: int) -> torch.Tensor:
        """States ``[b - a, m]`` (on the device) measured from this run's own dataset frames
        ``[a, b)`` (their tracked landmarks, in the run's basis): what training rendered them
        with. Replaying frames with them shows what the renderer does with an exact mouth."""
        if self.model.mouth_basis is None:
            raise TalkgsError(f"measured mouth states need a mouth_state run; {self.run} is audio-conditioned")
        if not 0 <= a < b <= self.n_dataset_frames:
            raise TalkgsError(f"measured mouth states of frames {a}:{b}: the dataset has frames 0:{self.n_dataset_frames}")
        offsets = lifted_offsets(self.root, self.meta, a, b)
        with torch.no_grad():
            return self.model.mouth_basis.encode(torch.as_tensor(offsets, device=self.device)).float()

    def video_mouth_states(self, root: str | Path, n_frames: int) -> torch.Tensor:
        """States ``[n_frames, m]`` (on the device) that make this head's mouth follow the
        tracked lips of another prepared video ``root`` frame by frame (``render
        --drive-video``). One-line errors for an audio-conditioned run or a video too short."""
        from talkgs.model.mouth import transfer_states

        if self.model.mouth_basis is None:
            raise TalkgsError(
                f"--drive-video needs a mouth-state run; {self.run} is audio-conditioned (--preset original)"
            )
        root = Path(root)
        meta = fmt.read_meta(root, check_files=False)
        m = int(meta["n_frames"])
        if m + 2 < n_frames:
            raise TalkgsError(
                f"--drive-video {root} has {m} frames ({m / FPS:.2f} s); the audio needs {n_frames} ({n_frames / FPS:.2f} s)"
            )
        offsets = lifted_offsets(root, meta)
        with torch.no_grad():
            states = transfer_states(self.model.mouth_basis, torch.as_tensor(offsets, device=self.device))
        idx = torch.clamp(torch.arange(n_frames, device=self.device), max=m - 1)  # hold the last frame
        return states[idx].float()

    def render_batch(self, windows: torch.Tensor, plan: DrivePlan, with_mouth: bool = False,
                     states: torch.Tensor | None = None, lane: "RenderLane | None" = None):
        """uint8 ``[B, H, W, 3]`` (on the device) for audio windows ``[B, 8, W, C]`` and the
        matching slice of a drive plan. ``with_mouth`` also returns the visible inside-mouth
        area ``[B]`` in pixels (sum of (1 - face alpha) x mouth alpha): the render's own
        mouth-opening signal, comparable with the dataset's mouth-interior label area."""
        out = self.render(windows, plan, states, lane)
        frames_u8 = to_uint8(out.image)
        if with_mouth:
            return frames_u8, out.visible_mouth_area()
        return frames_u8


@dataclasses.dataclass
class RenderLane:
    """One of :func:`render_features`'s concurrent lanes (:meth:`HeadRenderer.lanes`)."""

    stream: torch.cuda.Stream | None  # None off CUDA
    graphs: DeformGraphs | None


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (any shape) to uint8, rounded and clamped."""
    return (image * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)


def render_features(
    renderer: HeadRenderer,
    features: np.ndarray | torch.Tensor,
    batch_size: int = 16,
    start: int = 0,
    states: torch.Tensor | None = None,
    lanes: int = 1,
    pad_tail: bool | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 frame batches ``[b, H, W, 3]`` (host memory) for per-frame features
    ``[N, W, C]`` (all frames of one clip; frame i of the output uses windows around i);
    ``states [N, m]``: mouth states to use instead of the predicted ones.

    ``pad_tail`` (default: where the deformation replays CUDA graphs): the last, partial batch
    is rendered at the full batch size with its last frame repeated, and only its own frames
    are yielded, so that it replays the full size's graph instead of capturing one more.

    Each batch is copied to the host while the next one renders (:class:`HostCopies`).
    ``lanes > 1``: that many batches in flight at once, each launched by its own thread on its own
    CUDA stream (:func:`_render_in_lanes`), so that one batch's kernels run while another's host
    work (launches, the rasterizer's wait for its tile count) goes on. The frames must equal one
    lane's (bench/render.py --lanes reports the largest difference on a GPU).
    """
    feats = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    renderer.check_features(feats)
    feats = feats.to(renderer.device, torch.float16)
    n = feats.shape[0]
    if lanes > 1:
        yield from _render_in_lanes(renderer, feats, batch_size, start, states, lanes)
        return
    if pad_tail is None:
        pad_tail = renderer.graphs is not None
    copies = HostCopies(renderer.device)
    pending = None
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        idx = torch.arange(s, e, device=renderer.device)
        plan = renderer.plan(e - s, start + s)
        st = None if states is None else states[s:e]
        k = batch_size - (e - s) if pad_tail and n > batch_size else 0
        if k:
            idx = torch.cat([idx, idx[-1:].expand(k)])
            plan = DrivePlan.concat([plan] + [plan.slice(len(plan) - 1, len(plan))] * k)
            st = None if st is None else torch.cat([st, st[-1:].expand(k, -1)])
        win = gather_windows(feats, idx, renderer.audio_window)
        out = renderer.render_batch(win, plan, states=st)[: e - s]
        if pending is not None:
            yield copies.finish(pending)
        pending = copies.start(out)
    if pending is not None:
        yield copies.finish(pending)


def _render_in_lanes(renderer: HeadRenderer, feats: torch.Tensor, batch_size: int, start: int,
                     states: torch.Tensor | None, n_lanes: int) -> Iterator[np.ndarray]:
    """:func:`render_features` with ``n_lanes`` batches in flight: batch i renders in lane
    i mod n_lanes, on a worker thread; batches come out in order."""
    dev = renderer.device
    n = feats.shape[0]
    spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    plans = [renderer.plan(e - s, start + s) for s, e in spans]  # the plan's cache is not thread-safe
    lanes = renderer.lanes(n_lanes)
    main = torch.cuda.current_stream(dev) if dev.type == "cuda" else None
    for lane in lanes:
        if lane.stream is not None:
            lane.stream.wait_stream(main)  # the features (and states) come from the main stream
        # Capture each lane's graphs for the batch sizes ahead one lane at a time, before any
        # lane runs: a capture must not overlap another stream's work. Largest first, as Batcher.warm_up.
        for b in sorted({e - s for s, e in spans}, reverse=True) if lane.graphs is not None else []:
            with torch.cuda.stream(lane.stream):
                x = renderer.inputs(gather_windows(feats, torch.zeros(b, dtype=torch.long, device=dev),
                                                   renderer.audio_window), renderer.plan(b, start))
                lane.graphs.ensure(x.audio, x.eye, None if states is None else states[:1].expand(b, -1).contiguous())
            lane.stream.synchronize()

    def job(k: int) -> np.ndarray:
        (s, e), lane = spans[k], lanes[k % n_lanes]
        with torch.no_grad(), (torch.cuda.stream(lane.stream) if lane.stream is not None else contextlib.nullcontext()):
            win = gather_windows(feats, torch.arange(s, e, device=dev), renderer.audio_window)
            out = renderer.render_batch(win, plans[k], states=None if states is None else states[s:e], lane=lane)
            if lane.stream is None:
                return out.numpy()
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
        lane.stream.synchronize()  # this thread waits; the other lanes' threads go on launching
        return host.numpy()

    with concurrent.futures.ThreadPoolExecutor(max_workers=n_lanes, thread_name_prefix="talkgs-lane") as pool:
        # At most one batch per lane in flight: batch k + n_lanes is queued once batch k is out.
        inflight = collections.deque(pool.submit(job, k) for k in range(min(n_lanes, len(spans))))
        nxt = len(inflight)
        while inflight:
            frames = inflight.popleft().result()
            if nxt < len(spans):
                inflight.append(pool.submit(job, nxt))
                nxt += 1
            yield frames


def load_audio_for_render(path: str | Path) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Decode an audio (or video) file: ``(wav16 [S16], wav_mux [S], mux_rate, n_frames)``.

    ``n_frames = round(duration x 25)``; one-line MediaError for a missing, corrupt, silent-
    stream-less or too short file.
    """
    from talkgs.media import probe, read_audio

    p = Path(path)
    if not p.exists():
        raise MediaError(f"audio file {p} does not exist")
    info = probe(p, require_video=False)
    if info.has_audio is False:
        raise MediaError(f"{p} has no audio stream")
    wav16 = read_audio(p, SAMPLE_RATE)
    n = int(round(wav16.shape[0] / SAMPLES_PER_FRAME))
    if n < 1:
        raise MediaError(f"{p} holds {wav16.shape[0] / SAMPLE_RATE * 1000:.0f} ms of audio; at least one frame (40 ms) is needed")
    rate = int(info.audio_sample_rate or SAMPLE_RATE)
    rate = min(max(rate, SAMPLE_RATE), MAX_MUX_RATE)
    wav_mux = wav16 if rate == SAMPLE_RATE else read_audio(p, rate)
    return wav16, wav_mux, rate, n


def features_for(renderer: HeadRenderer, wav16: np.ndarray, n_frames: int, features_path: str | Path | None,
                 kind: str | None = None) -> np.ndarray:
    """Per-frame features ``[n_frames, W, C]`` of the run's kind: from a .npy file when given,
    else extracted from ``wav16``."""
    renderer.check_kind(kind)
    if features_path is not None:
        from talkgs.audio import load_feature_file

        feats = load_feature_file(features_path, renderer.audio_kind, n_frames)
    else:
        feats = renderer.extract_features(wav16, n_frames)
    renderer.check_features(feats)
    return feats.astype(np.float16)


class _EncoderThread:
    """Encodes frame batches from a bounded queue on a thread (PyAV releases the GIL in
    libx264), so rendering and encoding overlap."""

    def __init__(self, writer, depth: int = 4):
        self.writer = writer
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.busy_s = 0.0
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                t0 = time.perf_counter()
                self.writer.write_batch(item)
                self.busy_s += time.perf_counter() - t0
            except BaseException as e:  # surfaced in the main thread by put()/finish()
                self.error = e

    def put(self, batch: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(batch)

    def finish(self) -> None:
        self.q.put(None)
        self.t.join()
        if self.error is not None:
            raise self.error


def render_audio(cfg, renderer: HeadRenderer | None = None) -> dict:
    """Run a checked :class:`talkgs.commands.render.RenderConfig` (``talkgs.commands.render.check``:
    -o is never an input, and replaces only an earlier render): write ``cfg.output`` and return
    a summary. ``renderer``: the run's head already loaded with the config's settings (`talkgs
    batch` keeps heads between renders)."""
    from talkgs.console import ProgressBar

    from talkgs.media import VideoWriter
    from talkgs.provenance import made_by

    out = Path(cfg.output)
    t0 = time.perf_counter()
    if renderer is None:
        renderer = HeadRenderer(cfg.run, cfg.device, cfg.dataset, cfg.drive, cfg.backend, cfg.scale,
                                mouth_amplitude=cfg.mouth_amplitude)
    renderer.check_kind(cfg.audio_kind)
    wav16, wav_mux, rate, n = load_audio_for_render(cfg.audio)
    # The video's states first: a video too short is refused before the features are computed.
    states = renderer.video_mouth_states(cfg.drive_video, n) if cfg.drive_video is not None else None
    feats = features_for(renderer, wav16, n, cfg.features, cfg.audio_kind)
    t_setup = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar(total=n, desc="render", unit="frame", disable=not cfg.progress, leave=False)
    t1 = time.perf_counter()
    with VideoWriter(out, fps=FPS, crf=cfg.crf, preset=cfg.preset, audio=wav_mux, sample_rate=rate,
                     comment=made_by("render")) as writer:
        enc = _EncoderThread(writer)
        try:
            for batch in render_features(renderer, feats, cfg.batch_size, states=states):
                enc.put(batch)
                bar.update(batch.shape[0])
        finally:
            enc.finish()
        n_written = writer.n_frames
    bar.close()
    t_render = time.perf_counter() - t1
    if n_written != n:
        raise TalkgsError(f"internal: wrote {n_written} frames for {n} audio frames")
    summary = {
        "output": str(out),
        "frames": n,
        "duration_s": n / FPS,
        "audio_kind": renderer.audio_kind,
        "size": [renderer.width, renderer.height],
        "drive": dataclasses.asdict(renderer.drive),
        "mouth": f"video {cfg.drive_video}" if cfg.drive_video is not None else "audio",
        "setup_s": t_setup,
        "render_and_encode_s": t_render,
        "encode_busy_s": enc.busy_s,
        "fps_end_to_end": n / max(t_render, 1e-9),
    }
    if cfg.progress:
        print(
            f"[render] {out}: {n} frames ({n / FPS:.2f} s) at {renderer.width}x{renderer.height}, "
            f"{summary['fps_end_to_end']:.1f} frames/s with encoding (setup {t_setup:.1f} s)"
        )
    return summary
