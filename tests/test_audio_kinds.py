"""Audio feature kinds beyond mel: phones (pocketsphinx), phones_mel, hubert, imported .npy
features, and `talkgs features` on a real prepared dataset."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from talkgs.audio import REGISTRY, available_kinds, extract, load_feature_file
from talkgs.audio import phones as PH  # imports pocketsphinx only when decoding
from talkgs.errors import AudioFeatureError
from tests.test_audio import speechlike

SR = 16_000
REPO = Path(__file__).resolve().parents[1]


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


def test_every_kind_is_registered_without_importing_heavy_modules():
    import subprocess
    import sys

    code = (
        "import sys, talkgs.audio as A; "
        "print(sorted(A.REGISTRY), 'pocketsphinx' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == (
        "['deepspeech', 'esperanto', 'hubert', 'mel', 'phones', 'phones_mel', 'whisper', 'whisper_base'] False False"
    )
    assert REGISTRY["phones"].requires == ("pocketsphinx",)
    assert REGISTRY["hubert"].requires == ("transformers",)
    shapes = {k: REGISTRY[k].shape for k in ("phones", "phones_mel", "hubert", "deepspeech", "esperanto")}
    assert shapes == {"phones": (16, 41), "phones_mel": (16, 121), "hubert": (2, 1024), "deepspeech": (16, 29),
                      "esperanto": (16, 44)}
    # The original's file names come with the kinds (talkgs.interop.tg_layout reads them).
    from talkgs.interop import tg_layout as tg

    assert tg.FEATURE_FILES == {"deepspeech": ("aud_ds.npy", "aud.npy"), "esperanto": ("aud_eo.npy",), "hubert": ("aud_hu.npy",)}


def test_a_kind_owns_its_options_and_their_checks(tmp_path, monkeypatch):
    from talkgs.audio import check_kinds, options_of, recorded_options
    from talkgs.audio.hubert import HubertOptions
    from talkgs.audio.whisper import WhisperOptions
    from talkgs.errors import TalkgsError

    assert REGISTRY["whisper"].options is REGISTRY["whisper_base"].options is WhisperOptions
    assert REGISTRY["hubert"].options is HubertOptions
    assert all(REGISTRY[k].options is None for k in ("mel", "phones", "phones_mel", "deepspeech", "esperanto"))
    opts = options_of("whisper", {"layer": 2, "device": "cpu"})
    assert opts == WhisperOptions(model=None, layer=2, device="cpu")
    assert recorded_options(opts) == {"layer": 2}  # the device says how it ran, not what it computed
    with pytest.raises(AudioFeatureError, match="no option 'channels'"):
        options_of("whisper", {"channels": 3})
    with pytest.raises(AudioFeatureError, match="has no options"):
        options_of("mel", {"layer": 1})
    monkeypatch.setenv("TALKGS_HUBERT_MODEL", str(tmp_path / "no_model"))
    for kind, given, needle in (("whisper", {"layer": -1}, "--whisper.layer"), ("whisper_base", {"device": "gpu"}, "--whisper-base.device"),
                                ("whisper", {"model": str(tmp_path / "nope")}, "nope"), ("hubert", {}, "no_model")):
        with pytest.raises(TalkgsError, match=needle) as e:
            check_kinds([kind], options={kind: given})
        one_line(e.value)


# ------------------------------------------------------------------------------ phones

needs_pocketsphinx = pytest.mark.skipif(
    importlib.util.find_spec("pocketsphinx") is None, reason="phones needs pocketsphinx (pip install talkgs[phones])"
)


def reference_decode(x: np.ndarray) -> list[tuple[str, int, int]]:
    """pocketsphinx allphone decoding called directly (the design note's recipe)."""
    from pocketsphinx import Decoder, get_model_path

    d = Decoder(
        samprate=16000,
        allphone=get_model_path() + "/en-us/en-us-phone.lm.bin",
        lw=2.0,
        beam=1e-20,
        pbeam=1e-20,
        loglevel="FATAL",
    )
    d.start_utt()
    d.process_raw((np.clip(x, -1, 1) * 32767).round().astype("<i2").tobytes(), full_utt=True)
    d.end_utt()
    return [(s.word, s.start_frame, s.end_frame) for s in d.seg()]


@needs_pocketsphinx
def test_phone_set_is_the_models():
    names = PH.model_phones()
    assert len(names) == 42 and "SIL" in names and "+NSN+" in names and "+SPN+" in names
    assert PH.N_PHONES == 41 == len(set(names)) - 1  # the two fillers share the NOISE channel
    assert PH.PHONES[PH.SIL] == "SIL" and PH.PHONES[PH.NOISE] == "NOISE"


@needs_pocketsphinx
def test_a_broken_model_definition_is_a_one_line_error(tmp_path):
    bad = tmp_path / "mdef"
    bad.write_bytes(b"0.3\n42 n_base\n")  # a text mdef, not the binary one the bundle has
    with pytest.raises(AudioFeatureError) as e:
        PH.read_mdef_phones(bad)
    assert "BMDF" in one_line(e.value)


@pytest.fixture(scope="module")
def speech(anchor_path):
    """15 s of the anchor's speech followed by 2 s of digital silence, fitted to whole frames."""
    from talkgs.media import read_audio

    wav = read_audio(anchor_path, SR)
    x = np.concatenate([wav[20 * SR : 35 * SR], np.zeros(2 * SR, np.float32)])
    n = x.shape[0] // 640
    return x[: n * 640], n


@pytest.fixture(scope="module")
def speech_phones(speech):
    x, n = speech
    return extract("phones", x, n)


@needs_pocketsphinx
def test_phones_are_one_hot_windows_with_many_phones(speech, speech_phones):
    x, n = speech
    f = speech_phones
    assert f.shape == (n, 16, 41) and f.dtype == np.float32
    assert np.array_equal(f.sum(-1), np.ones((n, 16), np.float32))
    assert set(np.unique(f)) == {0.0, 1.0}
    ids = f[:, 8].argmax(-1)
    speech_ids = set(ids.tolist()) - {PH.SIL, PH.NOISE}
    assert len(speech_ids) >= 15, [PH.PHONES[i] for i in speech_ids]


@needs_pocketsphinx
def test_silence_is_sil_and_loud_speech_is_phones(speech, speech_phones):
    x, n = speech
    steps = speech_phones[:, 6:10].argmax(-1).reshape(-1)  # window rows 6..9 = mel steps 4i..4i+3
    # Appended digital silence (samples 15 s .. 17 s), 0.2 s in from its edges.
    k0, k1 = (15 * SR) // 160 + 20, (17 * SR) // 160 - 20
    assert (steps[k0:k1] == PH.SIL).mean() > 0.95
    # Energy of the 25 ms around each mel step's centre 160 k.
    pad = np.pad(x, (200, 200))
    energy = np.array([np.mean(pad[160 * k : 160 * k + 400] ** 2) for k in range(4 * n)])
    loud = energy > np.quantile(energy[: k0 - 20], 0.75)
    assert (steps[loud] != PH.SIL).mean() > 0.95


@needs_pocketsphinx
def test_phone_windows_are_aligned_like_mel(speech, speech_phones):
    """Window row p of frame i is mel step 4 i - 6 + p, which takes pocketsphinx frame k - 1."""
    x, n = speech
    ref = np.full(4 * n + 8, PH.SIL)
    for word, a, b in reference_decode(x):
        ref[a : b + 1] = PH.PHONE_INDEX[word]
    got = speech_phones.argmax(-1)  # [N, 16]
    k = np.arange(n)[:, None] * 4 - 6 + np.arange(16)[None, :]
    want = np.where((k >= 0) & (k < 4 * n), ref[np.clip(k - 1, 0, None)], PH.SIL)
    assert np.array_equal(got, want)
    # The centre row (8) is mel step 4 i + 2, the step centred on the video frame's centre.
    assert np.array_equal(got[:, 8], ref[4 * np.arange(n) + 1])


@needs_pocketsphinx
def test_chunked_decoding_matches_per_copy_decoding(speech):
    """Three copies of 15 s decoded in ~20 s chunks agree with one copy decoded alone, away
    from chunk and copy joins (batch normalisation sees different audio, so not exactly)."""
    x, _ = speech
    one = x[: 15 * SR]
    long = np.concatenate([one] * 3)
    plan = PH.chunk_plan(long, chunk_s=20.0, search_s=3.0)
    assert len(plan) >= 2 and plan[0][0] == 0 and plan[-1][1] == -(-long.shape[0] // 160)
    assert all(a < b for a, b in plan) and all(p[1] == q[0] for p, q in zip(plan, plan[1:]))
    got = PH.decode_frames(long, chunk_s=20.0, context_s=2.0, search_s=3.0)
    per_copy = PH.decode_utterance(one)
    L = per_copy.shape[0]
    want = np.concatenate([per_copy] * 3)
    keep = np.ones(got.shape[0], bool)
    for j in [a for a, _ in plan[1:]] + [L, 2 * L]:
        keep[max(j - 50, 0) : j + 50] = False
    keep[:50] = keep[-50:] = False
    agree = (got == want)[keep].mean()
    assert agree > 0.93, agree
    # Labels misplaced by 0.2 s (a chunk bookkeeping error) would be caught.
    assert (np.roll(got, 20) == want)[keep].mean() < 0.5


@needs_pocketsphinx
def test_phones_mel_is_mel_then_phones(speech):
    x, n = speech
    x, n = x[: 5 * SR], (5 * SR) // 640
    both = extract("phones_mel", x, n)
    assert both.shape == (n, 16, 121)
    assert np.array_equal(both[..., :80], extract("mel", x, n))
    assert np.array_equal(both[..., 80:], extract("phones", x, n))


@needs_pocketsphinx
def test_phones_of_an_empty_or_short_clip():
    assert extract("phones", np.zeros(0, np.float32), 0).shape == (0, 16, 41)
    f = extract("phones", np.zeros(100, np.float32), 3)  # padded with silence to 3 frames
    assert f.shape == (3, 16, 41) and (f.argmax(-1) == PH.SIL).all()


# ------------------------------------------------------------------------------ hubert


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    transformers = pytest.importorskip("transformers", reason="hubert needs transformers (pip install talkgs[hubert])")
    import torch

    def make(hidden: int) -> Path:
        cfg = transformers.HubertConfig(
            hidden_size=hidden,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            conv_dim=(16,) * 7,  # kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, 2, 2, 2, 2, 2): 320x
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        )
        torch.manual_seed(0)
        out = tmp_path_factory.mktemp(f"hubert{hidden}")
        transformers.HubertModel(cfg).save_pretrained(out)
        return out

    return make(1024), make(768)


@pytest.mark.parametrize("n_samples,n_frames", [(640 * 7, 7), (640 * 7 + 1, 8), (640 * 12 - 333, 12), (5, 1), (640 * 9, 4)])
def test_hubert_shape_is_two_states_per_frame(tiny_hubert, n_samples, n_frames):
    model, _ = tiny_hubert
    f = extract("hubert", speechlike(n_samples), n_frames, model=str(model), device="cpu")
    assert f.shape == (n_frames, 2, 1024) and f.dtype == np.float32 and np.isfinite(f).all()
    assert np.abs(f).max() > 0.1


def test_hubert_chunks_with_full_overlap_equal_one_pass(tiny_hubert):
    model, _ = tiny_hubert
    x = speechlike(640 * 100 + 77, seed=1)
    one = extract("hubert", x, 100, model=model, device="cpu", chunk_s=1000.0)
    # 1 s chunks, each with the whole clip as context: only the bookkeeping differs.
    chunked = extract("hubert", x, 100, model=model, device="cpu", chunk_s=1.0, context_s=100.0)
    np.testing.assert_allclose(chunked, one, rtol=0, atol=1e-4)
    # The default 2 s of context around 2 s chunks of an 8 s clip: the attention sees less, so
    # states differ a little, far less than neighbouring states do (a misplaced chunk).
    x = speechlike(640 * 200 + 77, seed=2)
    one = extract("hubert", x, 200, model=model, device="cpu", chunk_s=1000.0).reshape(400, -1)
    near = extract("hubert", x, 200, model=model, device="cpu", chunk_s=2.0).reshape(400, -1)
    rel = np.linalg.norm(one - near, axis=1) / np.linalg.norm(one, axis=1)
    shift = np.linalg.norm(one[1:] - one[:-1], axis=1) / np.linalg.norm(one[1:], axis=1)
    assert np.median(rel) < 0.4 * np.median(shift), (np.median(rel), np.median(shift))


def test_hubert_default_model_comes_from_the_environment(tiny_hubert, monkeypatch):
    model, _ = tiny_hubert
    x = speechlike(640 * 5)
    monkeypatch.setenv("TALKGS_HUBERT_MODEL", str(model))
    from_env = extract("hubert", x, 5, device="cpu")
    np.testing.assert_array_equal(from_env, extract("hubert", x, 5, model=model, device="cpu"))


def test_hubert_hub_id_resolves_from_the_local_cache_only(tiny_hubert, tmp_path, monkeypatch):
    import huggingface_hub.constants

    model, _ = tiny_hubert
    # The Hugging Face cache layout: models--ORG--NAME/{refs/main, snapshots/<commit>/...}.
    repo = tmp_path / "hub" / "models--someone--tiny-hubert"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    x = speechlike(640 * 4)
    np.testing.assert_array_equal(
        extract("hubert", x, 4, model="someone/tiny-hubert", device="cpu"),
        extract("hubert", x, 4, model=model, device="cpu"),
    )
    with pytest.raises(AudioFeatureError) as e:
        extract("hubert", x, 4, model="someone/not-cached", device="cpu")
    assert "not-cached" in one_line(e.value) and "Hugging Face cache" in str(e.value)


def test_hubert_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    missing = tmp_path / "no_such_model"
    with pytest.raises(AudioFeatureError) as e:
        extract("hubert", speechlike(640 * 3), 3, model=str(missing))
    msg = one_line(e.value)
    assert str(missing) in msg and "hf download facebook/hubert-large-ls960-ft" in msg and "TALKGS_HUBERT_MODEL" in msg
    monkeypatch.setenv("TALKGS_HUBERT_MODEL", str(missing))
    with pytest.raises(AudioFeatureError, match="no_such_model"):
        extract("hubert", speechlike(640 * 3), 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioFeatureError, match="config.json"):
        extract("hubert", speechlike(640 * 3), 3, model=tmp_path / "empty")


def test_hubert_refuses_another_hidden_size(tiny_hubert):
    _, small = tiny_hubert
    with pytest.raises(AudioFeatureError) as e:
        extract("hubert", speechlike(640 * 3), 3, model=small, device="cpu")
    assert "768" in one_line(e.value) and "1024" in str(e.value)


# ------------------------------------------------------------------------------ imported .npy


def test_deepspeech_can_only_be_imported():
    assert "deepspeech" in available_kinds()
    with pytest.raises(AudioFeatureError) as e:
        extract("deepspeech", np.zeros(6400, np.float32), 10)
    assert "import" in one_line(e.value) and ".npy" in str(e.value)


def test_import_accepts_both_layouts_and_fits_one_frame(tmp_path):
    rng = np.random.default_rng(0)
    ds = rng.standard_normal((40, 16, 29)).astype(np.float32)
    np.save(tmp_path / "ds.npy", ds)
    np.save(tmp_path / "ds_t.npy", ds.transpose(0, 2, 1).astype(np.float64))
    np.testing.assert_array_equal(load_feature_file(tmp_path / "ds.npy", "deepspeech", 40), ds)
    t = load_feature_file(tmp_path / "ds_t.npy", "deepspeech", 40)
    assert t.dtype == np.float32 and t.flags.c_contiguous
    np.testing.assert_array_equal(t, ds)
    np.testing.assert_array_equal(load_feature_file(tmp_path / "ds.npy", "deepspeech"), ds)
    trimmed = load_feature_file(tmp_path / "ds.npy", "deepspeech", 39)
    np.testing.assert_array_equal(trimmed, ds[:39])
    padded = load_feature_file(tmp_path / "ds.npy", "deepspeech", 41)
    assert padded.shape == (41, 16, 29)
    np.testing.assert_array_equal(padded[:40], ds)
    np.testing.assert_array_equal(padded[40], ds[39])
    hu = rng.standard_normal((9, 2, 1024)).astype(np.float16)
    np.save(tmp_path / "aud_hu.npy", hu)
    np.testing.assert_array_equal(load_feature_file(tmp_path / "aud_hu.npy", "hubert", 9), hu.astype(np.float32))


def test_import_rejects_bad_files(tmp_path):
    ds = np.zeros((45, 16, 29), np.float32)
    np.save(tmp_path / "ds.npy", ds)
    with pytest.raises(AudioFeatureError) as e:
        load_feature_file(tmp_path / "ds.npy", "deepspeech", 40)
    assert "45" in one_line(e.value) and "40" in str(e.value)
    with pytest.raises(AudioFeatureError, match="30"):
        load_feature_file(tmp_path / "ds.npy", "deepspeech", 30)
    np.save(tmp_path / "c.npy", np.zeros((40, 16, 30), np.float32))
    with pytest.raises(AudioFeatureError) as e:
        load_feature_file(tmp_path / "c.npy", "deepspeech", 40)
    assert "(16, 30)" in one_line(e.value)
    np.save(tmp_path / "2d.npy", np.zeros((40, 29), np.float32))
    with pytest.raises(AudioFeatureError, match="shape"):
        load_feature_file(tmp_path / "2d.npy", "deepspeech", 40)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(AudioFeatureError) as e:
        load_feature_file(tmp_path / "obj.npy", "deepspeech")
    assert "pickle" in one_line(e.value)
    (tmp_path / "p.npy").write_bytes(pickle.dumps(ds))
    with pytest.raises(AudioFeatureError) as e:
        load_feature_file(tmp_path / "p.npy", "deepspeech")
    one_line(e.value)
    good = (tmp_path / "ds.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(good[: len(good) // 2])
    with pytest.raises(AudioFeatureError) as e:
        load_feature_file(tmp_path / "cut.npy", "deepspeech")
    one_line(e.value)
    nan = ds.copy()
    nan[3, 2, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(AudioFeatureError, match="NaN"):
        load_feature_file(tmp_path / "nan.npy", "deepspeech")
    with pytest.raises(AudioFeatureError) as e:
        load_feature_file(tmp_path / "absent.npy", "deepspeech")
    assert "absent.npy" in one_line(e.value)
    with pytest.raises(AudioFeatureError, match="known kinds"):
        load_feature_file(tmp_path / "ds.npy", "wav2vec")


# ------------------------------------------------------------------------------ talkgs features


@pytest.fixture(scope="module")
def dataset_copy(tmp_path_factory, request):
    """A copy of the real prepared anchor dataset (data/anchor if present, else prepared once)."""
    from talkgs.data.format import read_meta
    from talkgs.errors import DatasetError

    src = REPO / "data" / "anchor"
    try:
        read_meta(src)
    except DatasetError:
        src = request.getfixturevalue("anchor_dataset")
    dst = tmp_path_factory.mktemp("features") / "dataset"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("inspect", ".work", "audio_phones*", "audio_deepspeech*", "audio_hubert*"))
    meta = json.loads((dst / "meta.json").read_text())
    meta["audio"]["features"] = {k: v for k, v in meta["audio"]["features"].items() if k == "mel"}
    (dst / "meta.json").write_text(json.dumps(meta, indent=2))
    return dst


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from talkgs.cli import main

    rc = main(["features", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@needs_pocketsphinx
def test_features_command_adds_phones_to_a_dataset(dataset_copy, capsys):
    import torch

    from talkgs.data import load_dataset

    root = dataset_copy
    before = _digests(root)
    meta0 = json.loads((root / "meta.json").read_text())
    n = meta0["n_frames"]
    rc, out, err = _cli(capsys, str(root), "--kind", "phones", "--no-progress")
    assert rc == 0, err
    assert "audio_phones.npy" in out
    meta = json.loads((root / "meta.json").read_text())
    assert meta["audio"]["features"]["phones"] == {"file": "audio_phones.npy", "shape": [n, 16, 41]}
    meta["audio"]["features"].pop("phones")
    assert meta == meta0  # nothing else in meta.json changed
    after = _digests(root)
    assert {k: v for k, v in after.items() if k not in ("meta.json", "audio_phones.npy")} == {
        k: v for k, v in before.items() if k != "meta.json"
    }
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no temporary files left
    arr = np.load(root / "audio_phones.npy")
    assert arr.dtype == np.float16 and arr.shape == (n, 16, 41)
    ds = load_dataset(root, audio_kind="phones", load_images=False)
    assert ds.audio.shape == (n, 16, 41) and ds.audio.dtype == torch.float32
    assert torch.equal(ds.audio.sum(-1), torch.ones(n, 16))
    assert (ds.audio[:, 8].argmax(-1) != 0).float().mean() > 0.5  # mostly speech, not SIL

    # Again without --force: refused, one line, nothing touched.
    snap = _digests(root)
    rc, out, err = _cli(capsys, str(root), "--kind", "phones", "mel", "--no-progress")
    assert rc == 2 and err.startswith("talkgs: ") and err.count("\n") == 1
    assert "--force" in err and "phones" in err
    assert _digests(root) == snap


def test_features_command_imports_and_replaces_with_force(dataset_copy, capsys, tmp_path):
    from talkgs.data import load_dataset

    root = dataset_copy
    n = json.loads((root / "meta.json").read_text())["n_frames"]
    rng = np.random.default_rng(3)
    ds = rng.standard_normal((n + 1, 16, 29)).astype(np.float32)  # one extra frame is trimmed
    np.save(tmp_path / "aud_ds.npy", ds.transpose(0, 2, 1))  # the original loader's layout
    rc, out, err = _cli(capsys, str(root), "--kind", "deepspeech", "--import", str(tmp_path / "aud_ds.npy"))
    assert rc == 0, err
    meta = json.loads((root / "meta.json").read_text())
    assert meta["audio"]["features"]["deepspeech"] == {"file": "audio_deepspeech.npy", "shape": [n, 16, 29], "from": "imported"}
    loaded = load_dataset(root, audio_kind="deepspeech", load_images=False).audio.numpy()
    np.testing.assert_array_equal(loaded, ds[:n].astype(np.float16).astype(np.float32))

    # Refused without --force; replaced with it.
    snap = _digests(root)
    np.save(tmp_path / "aud_ds2.npy", np.ones((n, 16, 29), np.float32))
    rc, _, err = _cli(capsys, str(root), "--kind", "deepspeech", "--import", str(tmp_path / "aud_ds2.npy"))
    assert rc == 2 and err.startswith("talkgs: ") and err.count("\n") == 1 and _digests(root) == snap
    rc, _, err = _cli(capsys, str(root), "--kind", "deepspeech", "--import", str(tmp_path / "aud_ds2.npy"), "--force")
    assert rc == 0, err
    assert (np.load(root / "audio_deepspeech.npy") == 1).all()

    # A frame count off by more than one: one line naming both counts, nothing written.
    snap = _digests(root)
    np.save(tmp_path / "aud_hu.npy", np.zeros((n + 5, 2, 1024), np.float16))
    rc, _, err = _cli(capsys, str(root), "--kind", "hubert", "--import", str(tmp_path / "aud_hu.npy"))
    assert rc == 2 and err.count("\n") == 1 and str(n) in err and str(n + 5) in err
    assert _digests(root) == snap

    # Unknown kind, two kinds with --import, deepspeech without --import: one-line errors.
    for args in (["--kind", "wav2vec"], ["--kind", "deepspeech", "hubert", "--import", str(tmp_path / "aud_hu.npy")],
                 ["--kind", "deepspeech", "--force"]):
        rc, _, err = _cli(capsys, str(root), *args, "--no-progress")
        assert rc == 2 and err.startswith("talkgs: ") and err.count("\n") == 1, (args, err)
    assert _digests(root) == snap


def test_prepare_accepts_several_audio_kinds():
    import tyro

    from talkgs.commands.prepare import PrepareConfig

    cfg = tyro.cli(PrepareConfig, args=["clip.mp4", "-o", "out", "--audio-features", "mel", "phones"])
    assert cfg.audio_features == ("mel", "phones")
    assert all(k in available_kinds() for k in cfg.audio_features)
