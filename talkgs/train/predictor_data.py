"""The mouth predictor's training data: the person's voice (the training frames' audio and its
augmented copies) and, optionally, other people's clips, each paired with mouth states in this
person's basis (:mod:`talkgs.train.mouth_predictor` fits the predictor on them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from talkgs.conventions import SAMPLES_PER_FRAME
from talkgs.data import Dataset
from talkgs.data.loader import lifted_offsets
from talkgs.model.mouth import transfer_states
from talkgs.train.mouth_predictor import feature_clips, other_speaker_clips


def predictor_clips(ds: Dataset, states: torch.Tensor, cfg, seed: int = 0, stop=None, basis=None) -> tuple[list, str | None]:
    """Training pairs of the mouth predictor: ``[(name, features [n, W, C], states [n, m])]`` for
    the training frames' audio and its augmented copies, then (``cfg.other_speakers``, with the
    person's :class:`MouthBasis` ``basis``) other people's clips. The clean clip uses the
    dataset's own features (exactly what rendering that audio sees); the copies are extracted
    with the feature kind's extractor. A kind that cannot be computed here (an imported one)
    trains on the clean clip alone."""
    from talkgs.media import read_wav

    train = ds.train_idx.cpu().numpy()
    g0, g1 = int(train.min()) + ds.frame_offset, int(train.max()) + 1 + ds.frame_offset
    rows = np.arange(g0, g1) - ds.frame_offset
    st = states[torch.as_tensor(rows, device=states.device)].cpu().numpy()
    wav, _ = read_wav(ds.root / "audio.wav")
    wav = wav[g0 * SAMPLES_PER_FRAME : g1 * SAMPLES_PER_FRAME]
    mouth_open = ds.tracks["mouth_open"].cpu().numpy()[rows]
    clean = ds.audio[torch.as_tensor(rows, device=ds.device)].float().cpu().numpy()
    from talkgs.data import format as fmt

    options = fmt.feature_options(ds.meta, ds.audio_kind)
    clips, note = feature_clips(ds.audio_kind, wav, st, mouth_open, clean, cfg, seed, stop=stop, options=options)
    if cfg.other_speakers and basis is not None:
        speakers = [other_speaker(Path(root), basis) for root in cfg.other_speakers]
        more, more_note = other_speaker_clips(speakers, ds.audio_kind, st, cfg, seed, stop=stop, options=options)
        clips += more
        note = "; ".join(n for n in (note, more_note) if n) or None
    return clips, note


def other_speaker(root: Path, basis) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """``(name, wav [n * 640], states [n, m], mouth_open [n])`` of another person's prepared clip
    ``root``: the whole clip's audio and its tracked lower-face motion transferred into this
    person's mouth states (:func:`talkgs.model.mouth.transfer_states`). Reads only its meta,
    tracks and audio."""
    from talkgs.data import format as fmt
    from talkgs.media import fit_audio_to_frames, read_wav

    meta = fmt.read_meta(root, check_files=False)
    with torch.no_grad():
        offsets = torch.as_tensor(lifted_offsets(root, meta), device=basis.mean.device)
        st = transfer_states(basis, offsets).float().cpu().numpy()
    wav, _ = read_wav(root / fmt.AUDIO)
    wav = fit_audio_to_frames(wav, int(meta["n_frames"]))
    return root.name, wav, st, fmt.load_tracks(root, ("mouth_open",))["mouth_open"]


def describe_clips(names: list[str]) -> str:
    """What the predictor's clips ``names`` (as :func:`predictor_clips` names them) are, in words:
    e.g. "the voice, 9 augmented copies of it and 1 clip of silence, plus 2 other speakers (16 clips)"."""
    own = [n for n in names if "/" not in n]
    silent = [n for n in own if n == "silent" or n.startswith("room")]
    copies = len(own) - len(silent) - (1 if "clean" in own else 0)
    parts = ["the voice"] if "clean" in own else []
    if copies:
        parts.append(f"{copies} augmented {'copy' if copies == 1 else 'copies'} of it")
    if silent:
        parts.append(f"{len(silent)} {'clip' if len(silent) == 1 else 'clips'} of silence or room tone")
    text = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else "no clip of the voice"
    others = [n for n in names if "/" in n]
    if others:
        speakers = len({n.split("/", 1)[0] for n in others})
        text += (f", plus {speakers} other {'speaker' if speakers == 1 else 'speakers'} "
                 f"({len(others)} {'clip' if len(others) == 1 else 'clips'} with their copies)")
    return text
