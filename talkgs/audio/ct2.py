"""Read CTranslate2 ``model.bin`` files (faster-whisper's format) in numpy, without ctranslate2.

File layout (binary version 6, little-endian; versions 2-5 differ as noted)
    ``u32 binary_version``, ``str spec_name`` (e.g. ``WhisperSpec``), ``u32 spec_revision``,
    ``u32 n_variables``, then per variable: ``str name``, ``u8 rank``, ``u32 dims[rank]``,
    ``u8 dtype_id``, ``u32 n_bytes``, the raw bytes (row-major); then ``u32 n_aliases`` and
    per alias ``str alias``, ``str target`` (a variable stored once under two names). A
    ``str`` is ``u16 length`` (including a terminating NUL), the UTF-8 bytes and the NUL.
    dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Versions < 4
    store an item size and an item count instead of ``dtype_id, n_bytes``; versions < 3 have
    no aliases; version 1 has no spec name and revision.

Quantised weights
    An int8 or int16 ``.../weight`` comes with a float ``.../weight_scale`` (int8: one per
    output row; int16: one scalar) and holds ``round(w * scale)``; :func:`read_ct2` returns
    ``weight / scale`` as float32.

Whisper encoder (``WhisperSpec``) -> ``transformers.WhisperEncoder`` state dict
    ``encoder/conv{1,2}/{weight,bias}`` -> ``conv{1,2}.*`` (same [out, in, k] layout);
    ``encoder/position_encodings/encodings`` -> ``embed_positions.weight``;
    ``encoder/layer_norm/{gamma,beta}`` -> ``layer_norm.{weight,bias}``; per block i:
    ``self_attention/layer_norm`` -> ``self_attn_layer_norm``, ``self_attention/linear_0``
    (q, k and v fused along the output rows, in that order) -> ``self_attn.{q,k,v}_proj``,
    ``self_attention/linear_1`` -> ``self_attn.out_proj``, ``ffn/layer_norm`` ->
    ``final_layer_norm``, ``ffn/linear_{0,1}`` -> ``fc{1,2}``. Whisper's key projection has
    no bias (the converter stores zeros there); a key bias would add the same q.b to every
    logit of a query, which the softmax removes, so it is dropped without changing the
    output. ``encoder/num_heads`` (int16 scalar) gives the head count.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from typing import Callable

import numpy as np

from talkgs.errors import AudioFeatureError

SUPPORTED_BINARY_VERSIONS = range(1, 7)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_ITEM_SIZE_DTYPES = {4: np.float32, 2: np.float16, 1: np.int8}  # binary versions < 4


@dataclasses.dataclass
class CT2Model:
    """The variables of a ``model.bin``: name -> array (float32 once dequantised)."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray | None:
        """A variable by name, following aliases; None when absent."""
        name = self.aliases.get(name, name)
        return self.variables.get(name)


class _Reader:
    def __init__(self, data, where: str):
        self.buf = memoryview(data)
        self.pos = 0
        self.where = where

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise AudioFeatureError(
                f"{self.where}: truncated CTranslate2 model.bin (needs {self.pos + n} bytes, has {len(self.buf)})"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = bytes(self.take(n))
        if n == 0 or raw[-1] != 0:
            raise AudioFeatureError(f"{self.where}: corrupt CTranslate2 model.bin (bad string at byte {self.pos - n})")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise AudioFeatureError(f"{self.where}: corrupt CTranslate2 model.bin (bad string at byte {self.pos - n})") from None


def _decode(raw: memoryview, dtype, shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    if dtype == "bfloat16":
        # bfloat16 is the top half of a float32.
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if arr.size != int(np.prod(shape, dtype=np.int64)):
        raise AudioFeatureError(f"{where}: corrupt CTranslate2 model.bin ({name}: {arr.size} values for shape {shape})")
    return arr.reshape(shape)


def read_ct2(data: bytes | bytearray | memoryview, where: str = "model.bin", keep: Callable[[str], bool] | None = None) -> CT2Model:
    """Parse a whole ``model.bin`` held in memory.

    ``keep(name)`` selects the variables to decode (others are skipped without copying);
    quantised weights are returned dequantised (float32). Any malformed input is a one-line
    AudioFeatureError naming ``where``.
    """
    r = _Reader(data, where)
    (version,) = r.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise AudioFeatureError(
            f"{where}: not a CTranslate2 model.bin this reader knows (binary version {version}; "
            f"supported {SUPPORTED_BINARY_VERSIONS.start}-{SUPPORTED_BINARY_VERSIONS.stop - 1})"
        )
    spec, revision = "", 1
    if version >= 2:
        spec = r.string()
        (revision,) = r.unpack("I")
    (n_vars,) = r.unpack("I")
    raw_vars: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = r.string()
        (rank,) = r.unpack("B")
        shape = tuple(int(d) for d in r.unpack(f"{rank}I")) if rank else ()
        if version >= 4:
            type_id, n_bytes = r.unpack("BI")
            if type_id not in _DTYPES:
                raise AudioFeatureError(f"{where}: corrupt CTranslate2 model.bin ({name}: unknown dtype id {type_id})")
            dtype = _DTYPES[type_id]
        else:
            item, count = r.unpack("BI")
            if item not in _ITEM_SIZE_DTYPES:
                raise AudioFeatureError(f"{where}: corrupt CTranslate2 model.bin ({name}: item size {item})")
            dtype, n_bytes = _ITEM_SIZE_DTYPES[item], item * count
        raw = r.take(n_bytes)
        if keep is None or keep(name) or (name.endswith("_scale") and keep(name[: -len("_scale")])):
            raw_vars[name] = _decode(raw, dtype, shape, name, where)
    aliases: dict[str, str] = {}
    if version >= 3:
        (n_alias,) = r.unpack("I")
        for _ in range(n_alias):
            alias = r.string()
            aliases[alias] = r.string()
    if r.pos != len(r.buf):
        raise AudioFeatureError(f"{where}: corrupt CTranslate2 model.bin ({len(r.buf) - r.pos} trailing bytes)")
    variables: dict[str, np.ndarray] = {}
    for name, arr in raw_vars.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw_vars:
            continue
        scale = raw_vars.get(name + "_scale")
        if arr.dtype in (np.int8, np.int16) and scale is not None:
            s = np.asarray(scale, np.float32)
            arr = arr.astype(np.float32) / (s.reshape(-1, *([1] * (arr.ndim - 1))) if s.ndim else s)
        variables[name] = arr
    return CT2Model(version, spec, int(revision), variables, aliases)


# --------------------------------------------------------------------------- Whisper encoder

_LAYER_RE = re.compile(r"^encoder/layer_(\d+)/")


@dataclasses.dataclass(frozen=True)
class WhisperEncoderShape:
    """Hyper-parameters of a Whisper encoder, read from its weights."""

    n_mels: int
    d_model: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    n_positions: int


def is_encoder_variable(name: str) -> bool:
    return name.startswith("encoder/")


def whisper_encoder_weights(model: CT2Model, where: str) -> tuple[WhisperEncoderShape, dict[str, np.ndarray]]:
    """(shape, state dict ``{transformers WhisperEncoder key: float32 array}``) of a
    ``WhisperSpec`` model.bin's encoder (see the module docstring for the mapping)."""
    if model.spec != "WhisperSpec":
        raise AudioFeatureError(f"{where}: a CTranslate2 {model.spec or 'unnamed'!r} model, not a Whisper model (WhisperSpec)")

    def var(name: str) -> np.ndarray:
        v = model.get(name)
        if v is None:
            raise AudioFeatureError(f"{where}: the Whisper model.bin lacks {name}")
        return v

    conv1 = var("encoder/conv1/weight")
    if conv1.ndim != 3 or conv1.shape[2] != 3:
        raise AudioFeatureError(f"{where}: encoder/conv1/weight has shape {conv1.shape}, expected [d_model, n_mels, 3]")
    d, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    layers = sorted({int(m.group(1)) for n in model.variables if (m := _LAYER_RE.match(n))})
    if layers != list(range(len(layers))) or not layers:
        raise AudioFeatureError(f"{where}: the encoder's blocks are not numbered 0..n-1 (found {layers[:8]})")
    heads = int(np.asarray(var("encoder/num_heads")).reshape(-1)[0])
    if heads <= 0 or d % heads:
        raise AudioFeatureError(f"{where}: encoder/num_heads = {heads} does not divide d_model {d}")
    pos = var("encoder/position_encodings/encodings")
    ffn = var("encoder/layer_0/ffn/linear_0/weight")
    shape = WhisperEncoderShape(n_mels, d, len(layers), heads, int(ffn.shape[0]), int(pos.shape[0]))

    sd: dict[str, np.ndarray] = {}

    def put(key: str, arr: np.ndarray, expect: tuple[int, ...]) -> None:
        arr = np.array(arr, np.float32)  # a copy: the input views the file's bytes
        if arr.shape != expect:
            raise AudioFeatureError(f"{where}: {key} would get shape {arr.shape}, expected {expect}")
        sd[key] = arr

    for i in (1, 2):
        put(f"conv{i}.weight", var(f"encoder/conv{i}/weight"), (d, n_mels if i == 1 else d, 3))
        put(f"conv{i}.bias", var(f"encoder/conv{i}/bias"), (d,))
    put("embed_positions.weight", pos, (shape.n_positions, d))
    put("layer_norm.weight", var("encoder/layer_norm/gamma"), (d,))
    put("layer_norm.bias", var("encoder/layer_norm/beta"), (d,))
    for i in layers:
        p, q = f"encoder/layer_{i}/", f"layers.{i}."
        qkv_w = var(p + "self_attention/linear_0/weight")
        qkv_b = var(p + "self_attention/linear_0/bias")
        if qkv_w.shape != (3 * d, d) or qkv_b.shape != (3 * d,):
            raise AudioFeatureError(f"{where}: {p}self_attention/linear_0 has shape {qkv_w.shape}, expected {(3 * d, d)} (fused q, k, v)")
        for j, proj in enumerate(("q", "k", "v")):
            put(f"{q}self_attn.{proj}_proj.weight", qkv_w[j * d : (j + 1) * d], (d, d))
            if proj != "k":  # see the module docstring: Whisper's key projection has no bias
                put(f"{q}self_attn.{proj}_proj.bias", qkv_b[j * d : (j + 1) * d], (d,))
        put(f"{q}self_attn.out_proj.weight", var(p + "self_attention/linear_1/weight"), (d, d))
        put(f"{q}self_attn.out_proj.bias", var(p + "self_attention/linear_1/bias"), (d,))
        put(f"{q}self_attn_layer_norm.weight", var(p + "self_attention/layer_norm/gamma"), (d,))
        put(f"{q}self_attn_layer_norm.bias", var(p + "self_attention/layer_norm/beta"), (d,))
        put(f"{q}fc1.weight", var(p + "ffn/linear_0/weight"), (shape.ffn_dim, d))
        put(f"{q}fc1.bias", var(p + "ffn/linear_0/bias"), (shape.ffn_dim,))
        put(f"{q}fc2.weight", var(p + "ffn/linear_1/weight"), (d, shape.ffn_dim))
        put(f"{q}fc2.bias", var(p + "ffn/linear_1/bias"), (d,))
        put(f"{q}final_layer_norm.weight", var(p + "ffn/layer_norm/gamma"), (d,))
        put(f"{q}final_layer_norm.bias", var(p + "ffn/layer_norm/beta"), (d,))
    return shape, sd
