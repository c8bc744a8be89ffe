"""Frame-level phone one-hots from pocketsphinx allphone decoding (kinds ``phones``, ``phones_mel``).

Phone set (P = 41 channels)
    Channel 0 is ``SIL``, channels 1..39 the 39 CMU/ARPAbet phones of the bundled en-us
    acoustic model (AA .. ZH, alphabetical), channel 40 ``NOISE``. The model's context-
    independent phone list (read from its binary ``mdef``) is checked against this list on
    first use: it holds exactly these phones plus the fillers ``+NSN+`` (noise) and ``+SPN+``
    (speech noise), which both map to ``NOISE``. The channel order never depends on the
    model, so stored features keep their meaning.

Values
    Hard one-hots: every 10 ms step of a window is exactly one channel set to 1 (the decoder
    gives one best phone path, not posteriors). Steps outside the clip are ``SIL``.

Time alignment (same grid and windows as ``mel``)
    Mel frame k is centred on sample 160 k; video frame i's window is the 16 mel steps
    [4 i - 6, 4 i + 10) (see :mod:`talkgs.audio.mel`). pocketsphinx frame j analyses samples
    [160 j, 160 j + 410) (25.6 ms), centred on sample 160 j + 205, i.e. 1.28 mel frames later
    than mel frame j; measured on the anchor clip with zero-filled gaps cut into loud speech,
    decoded silences are centred 0.65 frames after the true gaps. Both round to one frame, so
    mel step k takes the phone of pocketsphinx frame k - 1 (step 0 takes frame 0): the
    remaining offset is under 0.4 frame (4 ms).

Long audio (bounded memory)
    The signal is decoded in chunks of about ``chunk_s`` seconds. Each chunk boundary is
    moved to the quietest 100 ms within +-``search_s`` of its nominal place (usually a pause),
    and every chunk is decoded with ``context_s`` seconds of extra audio on both sides, of
    which only the labels of the chunk itself are kept. Each chunk gets a fresh decoder (its
    batch cepstral mean normalisation sees the chunk plus context only), so the result does not
    depend on what was decoded before. Memory is that of one chunk's 16-bit PCM and decoder
    (10.7 min of speech: 79 s, 236 MB peak on 2 CPU cores). Because the decoder normalises
    over the audio it is given, decoding a stretch with different surroundings changes about
    4-7 % of the 10 ms labels (anchor clip, 30 s chunks vs one pass), everywhere, not only at
    the joins.

The last decode is remembered (one clip), so ``phones`` and ``phones_mel`` of the same audio
cost one decode.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from pathlib import Path

import numpy as np

from talkgs.audio.mel import MEL_PER_FRAME, N_MELS, WINDOW, WINDOW_START, mel_windows
from talkgs.audio.registry import register
from talkgs.conventions import SAMPLE_RATE, SAMPLES_PER_FRAME
from talkgs.errors import AudioFeatureError

HOP = 160  # samples per 10 ms step, pocketsphinx and mel alike
PS_WINDOW = 410  # pocketsphinx analysis window in samples (-wlen 0.025625 at 16 kHz)
PS_OFFSET = 1  # mel step k <- pocketsphinx frame k - PS_OFFSET (see the module docstring)

PHONES: tuple[str, ...] = (
    "SIL",
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY",
    "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P",
    "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
    "NOISE",
)  # fmt: skip
N_PHONES = len(PHONES)  # 41
SIL = 0
NOISE = N_PHONES - 1
FILLERS = {"+NSN+": "NOISE", "+SPN+": "NOISE"}
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)} | {f: PHONES.index(to) for f, to in FILLERS.items()}

DEFAULT_CHUNK_S = 30.0
DEFAULT_CONTEXT_S = 2.0
DEFAULT_SEARCH_S = 3.0


# ----------------------------------------------------------------------------- the model


def _model_dir() -> Path:
    from pocketsphinx import get_model_path

    return Path(get_model_path()) / "en-us"


def read_mdef_phones(path: str | Path) -> tuple[str, ...]:
    """Context-independent phone names of a binary (BMDF) pocketsphinx model definition."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AudioFeatureError(f"phones: cannot read the acoustic model's {path}: {e}") from None
    if data[:4] != b"BMDF":
        raise AudioFeatureError(f"phones: {path} is not a binary pocketsphinx mdef (BMDF) file")
    try:
        (header_len,) = struct.unpack_from("<i", data, 8)
        p = 12 + header_len
        n_ciphone = struct.unpack_from("<10i", data, p)[0]
        p += 40
        names = data[p:].split(b"\0", n_ciphone)[:n_ciphone]
        out = tuple(n.decode("ascii") for n in names)
    except (struct.error, UnicodeDecodeError) as e:
        raise AudioFeatureError(f"phones: cannot parse {path}: {e}") from None
    if len(out) != n_ciphone or not all(out):
        raise AudioFeatureError(f"phones: cannot parse the phone list of {path}")
    return out


@functools.lru_cache(maxsize=None)
def model_phones() -> tuple[str, ...]:
    """The bundled en-us model's phones, checked against :data:`PHONES` (AudioFeatureError if
    the model's phone set differs)."""
    phones = read_mdef_phones(_model_dir() / "en-us" / "mdef")
    expected = (set(PHONES) - {"NOISE"}) | set(FILLERS)
    if set(phones) != expected:
        extra = sorted(set(phones) - expected)
        missing = sorted(expected - set(phones))
        raise AudioFeatureError(
            f"phones: the pocketsphinx en-us model's phone set differs from talkgs' "
            f"(extra {extra}, missing {missing}); install pocketsphinx==5.1.1"
        )
    return phones


def _decoder():
    from pocketsphinx import Decoder

    allphone = str(_model_dir() / "en-us-phone.lm.bin")
    return Decoder(samprate=SAMPLE_RATE, allphone=allphone, lw=2.0, beam=1e-20, pbeam=1e-20, loglevel="FATAL")


def decode_utterance(x: np.ndarray) -> np.ndarray:
    """Phone indices (into :data:`PHONES`) ``int16 [F]`` of pocketsphinx frames 0..F-1 for
    ``x [S]`` decoded as one utterance (frame j analyses samples [160 j, 160 j + 410))."""
    x = np.asarray(x, dtype=np.float32)
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    d = _decoder()
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    n = max(-(-x.shape[0] // HOP), 0)
    out = np.full(n, SIL, np.int16)
    for s in d.seg() or ():  # None when nothing was decoded (very short input)
        idx = PHONE_INDEX.get(s.word)
        if idx is None:
            raise AudioFeatureError(f"phones: pocketsphinx returned an unknown phone {s.word!r}")
        a, b = max(int(s.start_frame), 0), min(int(s.end_frame) + 1, n)
        if b > a:
            out[a:b] = idx
    return out


# ----------------------------------------------------------------------------- chunking


def chunk_plan(
    wav: np.ndarray, chunk_s: float = DEFAULT_CHUNK_S, search_s: float = DEFAULT_SEARCH_S
) -> list[tuple[int, int]]:
    """Chunks ``[(start, stop), ...]`` in 10 ms frames that tile [0, ceil(S / 160)).

    The clip is cut into k = round(duration / ``chunk_s``) (at least 1) equal parts, then each
    inner boundary moves to the quietest 100 ms (mean power of ten 10 ms blocks) within
    +-``search_s`` of its nominal place (at most a quarter of a part), so chunks are about
    ``chunk_s`` long and usually split in a pause.
    """
    wav = np.asarray(wav, dtype=np.float32)
    n = -(-wav.shape[0] // HOP)
    if n == 0:
        return []
    step = max(chunk_s * SAMPLE_RATE / HOP, 1.0)
    k = max(int(round(n / step)), 1)
    if k == 1:
        return [(0, n)]
    part = n / k
    search = int(min(round(search_s * SAMPLE_RATE / HOP), part // 4))
    # Mean power per 10 ms block, smoothed over 100 ms (computed blockwise: no big copies).
    power = np.empty(n, np.float64)
    for a in range(0, n, 100_000):
        b = min(a + 100_000, n)
        seg = np.zeros((b - a) * HOP, np.float64)
        src = wav[a * HOP : b * HOP]
        seg[: src.shape[0]] = src
        power[a:b] = (seg.reshape(-1, HOP) ** 2).mean(axis=1)
    smooth = np.convolve(power, np.ones(10) / 10.0, mode="same")
    bounds = [0]
    for j in range(1, k):
        c = int(round(j * part))
        lo, hi = c - search, c + search + 1
        bounds.append(lo + int(np.argmin(smooth[lo:hi])))
    bounds.append(n)
    return list(zip(bounds[:-1], bounds[1:]))


def decode_frames(
    wav: np.ndarray,
    chunk_s: float = DEFAULT_CHUNK_S,
    context_s: float = DEFAULT_CONTEXT_S,
    search_s: float = DEFAULT_SEARCH_S,
    progress: bool = False,
) -> np.ndarray:
    """Phone indices ``int16 [ceil(S / 160)]`` per pocketsphinx frame, decoded in chunks
    (see the module docstring)."""
    wav = np.asarray(wav, dtype=np.float32)
    n = -(-wav.shape[0] // HOP)
    model_phones()  # checks the phone set once
    ctx = max(int(round(context_s * SAMPLE_RATE / HOP)), 0)
    plan = chunk_plan(wav, chunk_s, search_s)
    out = np.full(n, SIL, np.int16)
    it = plan
    if progress and len(plan) > 1:
        from talkgs.console import ProgressBar

        it = ProgressBar(plan, desc="phones", unit="chunk", leave=False)
    for a, b in it:
        lo, hi = max(a - ctx, 0), min(b + ctx, n)
        # The last frame's analysis window reaches PS_WINDOW - HOP samples past its step.
        labels = decode_utterance(wav[lo * HOP : hi * HOP + PS_WINDOW - HOP])
        out[a:b] = labels[a - lo : b - lo]
    return out


# ----------------------------------------------------------------------------- windows


def phone_steps(wav: np.ndarray, n_frames: int, progress: bool = False, **decode_opts) -> np.ndarray:
    """Phone index ``int16 [4 n_frames]`` of every mel step of a clip of ``n_frames`` frames.

    The last result is remembered (keyed by a hash of the samples, ``n_frames`` and the
    options), so ``phones`` and ``phones_mel`` of one clip decode it once.
    """
    x = np.ascontiguousarray(np.asarray(wav, dtype=np.float32)[: n_frames * SAMPLES_PER_FRAME])
    key = (hashlib.sha1(x.tobytes()).hexdigest(), x.shape[0], int(n_frames), tuple(sorted(decode_opts.items())))
    if _LAST[0] == key:
        return _LAST[1].copy()
    n_steps = MEL_PER_FRAME * n_frames
    steps = np.full(n_steps, SIL, np.int16)
    if n_steps and x.shape[0]:
        frames = decode_frames(x, progress=progress, **decode_opts)
        src = np.clip(np.arange(n_steps) - PS_OFFSET, 0, None)
        ok = src < frames.shape[0]
        steps[ok] = frames[src[ok]]
    _LAST[:] = [key, steps.copy()]
    return steps


_LAST: list = [None, None]


def phone_windows(steps: np.ndarray, n_frames: int) -> np.ndarray:
    """One-hot windows ``float32 [n_frames, 16, 41]`` from per-step phone indices ``[4 n_frames]``
    (steps outside the clip are SIL)."""
    lo = WINDOW_START
    hi = MEL_PER_FRAME * (n_frames - 1) + WINDOW_START + WINDOW
    padded = np.full(max(hi - lo, 0), SIL, np.int64)
    padded[-lo : -lo + steps.shape[0]] = steps
    idx = np.arange(n_frames)[:, None] * MEL_PER_FRAME + np.arange(WINDOW)[None, :]  # [N, 16]
    out = np.zeros((n_frames, WINDOW, N_PHONES), np.float32)
    if n_frames:
        np.put_along_axis(out, padded[idx][..., None], 1.0, axis=-1)
    return out


@register(
    "phones",
    window=WINDOW,
    channels=N_PHONES,
    description="pocketsphinx phone one-hots (SIL, 39 phones, NOISE), 16 x 10 ms per video frame",
    requires=("pocketsphinx",),
)
def extract_phones(wav: np.ndarray, n_frames: int, progress: bool = False, **decode_opts) -> np.ndarray:
    """Phone one-hot windows ``float32 [N, 16, 41]`` (see :mod:`talkgs.audio.phones`)."""
    return phone_windows(phone_steps(wav, n_frames, progress=progress, **decode_opts), n_frames)


@register(
    "phones_mel",
    window=WINDOW,
    channels=N_MELS + N_PHONES,
    description="mel (80) and phone one-hots (41) side by side, 16 steps per video frame",
    requires=("pocketsphinx",),
)
def extract_phones_mel(wav: np.ndarray, n_frames: int, progress: bool = False, **decode_opts) -> np.ndarray:
    """``[mel, phones]`` windows ``float32 [N, 16, 121]``: channels 0..79 are ``mel``, 80..120 ``phones``."""
    mel = mel_windows(wav, n_frames)
    phones = extract_phones(wav, n_frames, progress=progress, **decode_opts)
    return np.concatenate([mel, phones], axis=-1)
