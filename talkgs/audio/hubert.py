"""HuBERT hidden states, two per video frame (kind ``hubert``, ``[N, 2, 1024]``).

The same features as the original TalkingGaussian's ``aud_hu.npy``: the last hidden state of
``facebook/hubert-large-ls960-ft`` (loaded as ``transformers.HubertModel``) at 50 Hz, two
states per 25 fps video frame.

Model (local only, never downloaded)
    ``model`` is a directory holding ``config.json`` and the weights (``save_pretrained`` /
    ``hf download --local-dir`` layout), or a hub id found in the local Hugging Face cache.
    Default: the environment variable ``TALKGS_HUBERT_MODEL``, else
    ``facebook/hubert-large-ls960-ft``. Loading uses ``local_files_only=True``. The hidden
    size must be 1024 (the ``hubert`` kind's channel count). If the model's
    ``preprocessor_config.json`` says ``do_normalize`` (the default when absent), the clip is
    normalised to zero mean and unit variance over its whole length first, as the original's
    ``Wav2Vec2Processor`` does.

Time alignment
    HuBERT's convolutional front end maps 400 input samples to one state every 320 samples
    (no padding), so state j of a signal starting at sample -40 sees samples
    [320 j - 40, 320 j + 360), centred on 320 j + 160. The clip is fitted to n_frames * 640
    samples (trimmed or zero-padded at the end, like ``mel``), then 40 zero samples are put
    before and after it: this gives exactly 2 n_frames states, and video frame i gets states
    2 i and 2 i + 1, centred on 640 i + 160 and 640 i + 480, whose midpoint is the frame centre
    640 i + 320. (The original feeds the signal unpadded, so its pairs sit 2.5 ms later and
    its count can differ by one; ``talkgs features --import`` fits that.)

Long audio (bounded memory)
    States are computed ``chunk_s`` seconds at a time (default 20 s = 1000 states, the
    original's chunk size), each chunk with ``context_s`` seconds of extra audio on both
    sides (default 2 s) whose states are dropped. The transformer attends only within a chunk
    plus its context, so chunked states differ slightly from a single pass near chunk joins.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import numpy as np

from talkgs.audio.registry import RUNTIME, register
from talkgs.conventions import SAMPLE_RATE, SAMPLES_PER_FRAME
from talkgs.errors import AudioFeatureError

ENV_VAR = "TALKGS_HUBERT_MODEL"
DEFAULT_MODEL = "facebook/hubert-large-ls960-ft"
HIDDEN = 1024
STATES_PER_FRAME = 2
STRIDE = 320  # samples per state (50 Hz)
RECEPTIVE = 400  # samples seen by one state
PAD = 40  # zeros before (and after) the clip, see the module docstring
DEFAULT_CHUNK_S = 20.0
DEFAULT_CONTEXT_S = 2.0


def _how_to_get(name: str) -> str:
    return (
        f"on a machine with internet run `hf download {DEFAULT_MODEL} --local-dir DIR` "
        f"(older huggingface_hub: `huggingface-cli download ...`), copy DIR here and set {ENV_VAR}=DIR"
    )


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """The local directory of ``model`` (default ``$TALKGS_HUBERT_MODEL``, else the hub id
    ``facebook/hubert-large-ls960-ft``); one-line AudioFeatureError when it is not here."""
    name = str(model) if model is not None else (os.environ.get(ENV_VAR) or DEFAULT_MODEL)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise AudioFeatureError(f"hubert: {path} holds no config.json, so it is not a saved model; {_how_to_get(name)}")
        return path
    looks_like_path = path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or path.exists()
    if not looks_like_path:
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(repo_id=name, local_files_only=True))
            if (cached / "config.json").is_file():
                return cached
        except Exception:  # not in the cache, or not a valid hub id: both mean "not here"
            pass
    where = "does not exist" if looks_like_path else "is neither a directory nor in the local Hugging Face cache"
    raise AudioFeatureError(f"hubert: model {name!r} {where}, and talkgs never downloads weights; {_how_to_get(name)}")


def _pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise AudioFeatureError(f"hubert: device {device!r} requested but CUDA is not available here")
    return str(device)


@functools.lru_cache(maxsize=1)
def _load(path: str, device: str):
    """(model, do_normalize) for a resolved model directory, cached (one model at a time)."""
    from transformers import AutoConfig, HubertModel
    from transformers.utils import logging as hf_logging

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read config.json is the user's file
        raise AudioFeatureError(f"hubert: cannot read the model config in {path}: {str(e).splitlines()[0]}") from None
    if getattr(config, "model_type", None) != "hubert":
        raise AudioFeatureError(f"hubert: {path} is a {getattr(config, 'model_type', '?')!r} model, not a HuBERT model")
    if int(config.hidden_size) != HIDDEN:
        raise AudioFeatureError(
            f"hubert: {path} has hidden size {config.hidden_size}; the hubert kind needs {HIDDEN} "
            f"(hubert-large, as the original's aud_hu.npy)"
        )
    if tuple(config.conv_stride) and int(np.prod(config.conv_stride)) != STRIDE:
        raise AudioFeatureError(
            f"hubert: {path} downsamples by {int(np.prod(config.conv_stride))}, expected {STRIDE} (50 Hz states)"
        )
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a CTC checkpoint loaded as HubertModel lists its unused head
    hf_logging.disable_progress_bar()
    try:
        model = HubertModel.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise AudioFeatureError(f"hubert: cannot load the weights in {path}: {str(e).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    model = model.to(device).eval()
    do_normalize = True
    pre = Path(path) / "preprocessor_config.json"
    if pre.is_file():
        try:
            do_normalize = bool(json.loads(pre.read_text()).get("do_normalize", True))
        except (OSError, json.JSONDecodeError):
            pass
    return model, do_normalize


def hubert_states(
    wav: np.ndarray,
    n_states: int,
    model=None,
    device: str | None = "auto",
    chunk_s: float = DEFAULT_CHUNK_S,
    context_s: float = DEFAULT_CONTEXT_S,
    progress: bool = False,
) -> np.ndarray:
    """States ``float32 [n_states, 1024]``; state j is centred on sample 320 j + 160 of ``wav``
    (zero outside it), computed in chunks (see the module docstring)."""
    import torch

    path = resolve_model(model)
    dev = _pick_device(device)
    net, do_normalize = _load(str(path.resolve()), dev)
    x = np.asarray(wav, dtype=np.float32)[: max(n_states * STRIDE + RECEPTIVE - STRIDE - PAD, 0)]
    if do_normalize and x.size:
        x64 = x.astype(np.float64)
        x = ((x64 - x64.mean()) / np.sqrt(x64.var() + 1e-7)).astype(np.float32)
    out = np.zeros((n_states, HIDDEN), np.float32)
    chunk = max(int(round(chunk_s * SAMPLE_RATE / STRIDE)), 1)
    ctx = max(int(round(context_s * SAMPLE_RATE / STRIDE)), 0)
    starts = list(range(0, n_states, chunk))
    it = starts
    if progress and len(starts) > 1:
        from talkgs.console import ProgressBar

        it = ProgressBar(starts, desc="hubert", unit="chunk", leave=False)
    for a in it:
        b = min(a + chunk, n_states)
        lo, hi = max(a - ctx, 0), min(b + ctx, n_states)
        # States [lo, hi) need padded-signal samples [320 lo, 320 (hi - 1) + 400), i.e. clip
        # samples shifted by PAD; anything outside the clip is zero.
        s0 = STRIDE * lo - PAD
        seg = np.zeros(STRIDE * (hi - lo - 1) + RECEPTIVE, np.float32)
        a0, b0 = max(s0, 0), min(s0 + seg.shape[0], x.shape[0])
        if b0 > a0:
            seg[a0 - s0 : b0 - s0] = x[a0:b0]
        with torch.inference_mode():
            h = net(torch.from_numpy(seg)[None].to(dev)).last_hidden_state[0]
        if h.shape[0] != hi - lo:
            raise AudioFeatureError(f"hubert: the model gave {h.shape[0]} states for {hi - lo} (unexpected front end)")
        out[a:b] = h[a - lo : b - lo].float().cpu().numpy()
    return out


@dataclasses.dataclass(frozen=True)
class HubertOptions:
    """Options of the ``hubert`` kind."""

    model: str | None = None
    """Weights: a saved model folder or a hub id in the local Hugging Face cache; never downloaded
    (default: $TALKGS_HUBERT_MODEL, else facebook/hubert-large-ls960-ft)."""
    device: str = dataclasses.field(default="auto", metadata=RUNTIME)
    """Where the model runs: cuda, cpu or auto."""

    def check(self, kind: str) -> None:
        """One line for a bad device or weights that are not here (no torch)."""
        from talkgs.device import check_name

        check_name(self.device, f"--{kind}.device")
        resolve_model(self.model)


@register(
    "hubert",
    window=STATES_PER_FRAME,
    channels=HIDDEN,
    description="HuBERT-large last hidden state, 2 x 20 ms per video frame (needs local weights)",
    requires=("transformers",),
    options=HubertOptions,
    tg_files=("aud_hu.npy",),
)
def extract_hubert(
    wav: np.ndarray,
    n_frames: int,
    model=None,
    device: str | None = "auto",
    chunk_s: float = DEFAULT_CHUNK_S,
    context_s: float = DEFAULT_CONTEXT_S,
    progress: bool = False,
) -> np.ndarray:
    """HuBERT windows ``float32 [N, 2, 1024]`` (see :mod:`talkgs.audio.hubert`)."""
    x = np.asarray(wav, dtype=np.float32)[: n_frames * SAMPLES_PER_FRAME]
    if n_frames == 0:
        resolve_model(model)
        return np.zeros((0, STATES_PER_FRAME, HIDDEN), np.float32)
    states = hubert_states(
        x, STATES_PER_FRAME * n_frames, model=model, device=device, chunk_s=chunk_s, context_s=context_s, progress=progress
    )
    return states.reshape(n_frames, STATES_PER_FRAME, HIDDEN)
