"""Metrics (PSNR, SSIM, ST-LPIPS, lip metrics) and the image losses built on them."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from talkgs.errors import TalkgsError
from talkgs.metrics import image as im
from talkgs.metrics import lips as lp
from talkgs.metrics import lpips as lpm
from talkgs.train import losses

CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/anchor_cnn_512_25fps.mp4"


def _stlpips_available() -> bool:
    try:
        lpm._import_stlpips()
    except TalkgsError:
        return False
    return True


needs_stlpips = pytest.mark.skipif(not _stlpips_available(), reason="stlpips-pytorch not installed (talkgs[metrics])")


def textured(h: int = 48, w: int = 56, b: int = 1, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Smooth random texture ``[b, h, w, 3]`` in [0, 1] (structure at several scales)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(b, 3, h, w, dtype=torch.float64)
    for cell in (4, 8, 16):
        coarse = torch.rand(b, 3, h // cell + 2, w // cell + 2, generator=g, dtype=torch.float64)
        out += F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    out = (out - out.amin()) / (out.amax() - out.amin())
    return out.permute(0, 2, 3, 1).contiguous().to(dtype)


def naive_ssim(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5, valid: bool = False) -> float:
    """Mean SSIM of ``[H, W, C]`` images with an explicit 2-D Gaussian window per pixel."""
    x = np.arange(window) - (window - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    w2 = np.outer(g, g)
    w2 /= w2.sum()
    r = window // 2
    pad = 0 if valid else r
    vals = []
    for c in range(a.shape[2]):
        pa = np.pad(a[:, :, c], pad)
        pb = np.pad(b[:, :, c], pad)
        wa = np.lib.stride_tricks.sliding_window_view(pa, (window, window))
        wb = np.lib.stride_tricks.sliding_window_view(pb, (window, window))
        mu_a = np.einsum("ijkl,kl->ij", wa, w2)
        mu_b = np.einsum("ijkl,kl->ij", wb, w2)
        var_a = np.einsum("ijkl,kl->ij", wa * wa, w2) - mu_a**2
        var_b = np.einsum("ijkl,kl->ij", wb * wb, w2) - mu_b**2
        cov = np.einsum("ijkl,kl->ij", wa * wb, w2) - mu_a * mu_b
        c1, c2 = 0.01**2, 0.03**2
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        vals.append(s)
    return float(np.mean(vals))


# ---- PSNR -----------------------------------------------------------------------------


def test_psnr_identical_is_capped_and_known_mse():
    a = textured(b=2)
    assert torch.equal(im.psnr(a, a), torch.full((2,), 100.0, dtype=a.dtype))
    b = torch.full((1, 8, 8, 3), 0.5, dtype=torch.float64)
    c = b + 0.1  # MSE 0.01 -> 20 dB
    assert im.psnr(b, c).item() == pytest.approx(20.0, abs=1e-9)
    assert im.psnr(b * 255, c * 255, data_range=255.0).item() == pytest.approx(20.0, abs=1e-9)
    assert im.mse_to_psnr(0.01) == pytest.approx(20.0) and im.mse_to_psnr(0.0) == 100.0


def test_psnr_mask_measures_only_masked_pixels():
    a = torch.zeros(2, 10, 10, 3)
    b = a.clone()
    b[:, :, 5:] = 0.5  # error only on the right half
    mask = torch.zeros(2, 10, 10, dtype=torch.bool)
    mask[:, :, :5] = True
    assert torch.equal(im.psnr(a, b, mask=mask), torch.full((2,), 100.0))
    mask[1, :, 5:] = True  # second image: half the pixels wrong by 0.5 -> MSE 0.125
    out = im.psnr(a, b, mask=mask)
    assert out[0].item() == 100.0
    assert out[1].item() == pytest.approx(10 * math.log10(1 / 0.125), abs=1e-4)
    empty = torch.zeros(2, 10, 10)
    assert torch.isnan(im.psnr(a, b, mask=empty)).all()


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(TalkgsError, match="shapes differ"):
        im.psnr(torch.zeros(1, 4, 4, 3), torch.zeros(1, 4, 5, 3))


# ---- SSIM -----------------------------------------------------------------------------


def test_ssim_identical_symmetric_and_monotone_in_noise():
    a = textured(b=2)
    assert torch.allclose(im.ssim(a, a), torch.ones(2, dtype=a.dtype), atol=1e-12)
    g = torch.Generator().manual_seed(1)
    scores = []
    for sigma in (0.02, 0.05, 0.1, 0.2):
        noisy = (a + sigma * torch.randn(a.shape, generator=g, dtype=a.dtype)).clamp(0, 1)
        s_ab, s_ba = im.ssim(a, noisy), im.ssim(noisy, a)
        assert torch.allclose(s_ab, s_ba, atol=1e-12)
        scores.append(s_ab)
    for lo_noise, hi_noise in zip(scores, scores[1:]):
        assert (hi_noise < lo_noise).all()
    assert (scores[0] < 1).all() and (scores[-1] > -1).all()


@pytest.mark.parametrize("valid", [False, True])
def test_ssim_matches_naive_2d_window(valid):
    a = textured(30, 37, seed=3)
    g = torch.Generator().manual_seed(4)
    b = (a + 0.08 * torch.randn(a.shape, generator=g, dtype=a.dtype)).clamp(0, 1)
    ref = naive_ssim(a[0].numpy(), b[0].numpy(), valid=valid)
    assert im.ssim(a, b, valid=valid).item() == pytest.approx(ref, abs=1e-6)
    # float32 (what training uses) agrees to the required 1e-4
    assert im.ssim(a.float(), b.float(), valid=valid).item() == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("valid", [False, True])
def test_ssim_by_rows_and_banded_matrices_equals_ssim_by_convolution_with_its_gradients(valid):
    """``blur="rows"`` (1-D convolutions over rows, then columns) and ``blur="matmul"`` (two
    banded-matrix products) give the depthwise convolution's SSIM map and the same gradient to the
    prediction, zero-padded or valid; an unknown method is refused."""
    a = textured(24, 20, b=2, seed=7)  # float64: the same sums agree to rounding
    b = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(8), dtype=a.dtype)).clamp(0, 1)
    maps, grads = {}, {}
    for blur in ("conv", "rows", "matmul"):
        x = a.clone().requires_grad_(True)
        maps[blur] = im.ssim_map(x, b, valid=valid, blur=blur)
        maps[blur].mean().backward()
        grads[blur] = x.grad
    for blur in ("rows", "matmul"):
        torch.testing.assert_close(maps[blur], maps["conv"], atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(grads[blur], grads["conv"], atol=1e-12, rtol=1e-8)
    assert (maps["conv"] < 0.999).any()  # the noise is seen: the comparison is not between two constants
    # float32 (what training uses): within the 1e-4 the SSIM tests require
    f32 = {blur: im.ssim_map(a.float(), b.float(), valid=valid, blur=blur) for blur in ("conv", "rows", "matmul")}
    for blur in ("rows", "matmul"):
        torch.testing.assert_close(f32[blur], f32["conv"], atol=1e-4, rtol=0)
    with pytest.raises(TalkgsError, match="conv, rows or matmul"):
        im.ssim_map(a, b, blur="fft")


def test_ssim_map_shapes_mask_and_batch_independence():
    a = textured(24, 20, b=3, seed=5)
    b = textured(24, 20, b=3, seed=6)
    assert im.ssim_map(a, b).shape == (3, 24, 20, 3)
    assert im.ssim_map(a, b, valid=True).shape == (3, 14, 10, 3)
    batched = im.ssim(a, b)
    single = torch.stack([im.ssim(a[i], b[i])[0] for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-12)
    ones = torch.ones(3, 24, 20)
    assert torch.allclose(im.ssim(a, b, mask=ones), batched, atol=1e-12)
    half = torch.zeros(3, 24, 20)
    half[:, :12] = 1
    expected = im.ssim_map(a, b)[:, :12].mean(dim=(1, 2, 3))
    assert torch.allclose(im.ssim(a, b, mask=half), expected, atol=1e-12)
    with pytest.raises(TalkgsError, match="odd"):
        im.ssim(a, b, window=10)


# ---- losses built on them ---------------------------------------------------------------


def test_l1_and_dssim_values_masks_and_gradients():
    a = textured(16, 16, b=2, dtype=torch.float32)
    b = (a + 0.1).clamp(0, 1)
    assert losses.l1(a, a).item() == 0.0
    assert losses.l1(torch.zeros(1, 4, 4, 3), torch.full((1, 4, 4, 3), 0.25)).item() == pytest.approx(0.25)
    m = torch.zeros(1, 4, 4)
    m[:, :2] = 1
    gt = torch.zeros(1, 4, 4, 3)
    gt[:, 2:] = 1.0  # wrong only outside the mask
    assert losses.l1(torch.zeros(1, 4, 4, 3), gt, mask=m).item() == 0.0
    assert losses.l1(torch.zeros(1, 4, 4, 3), gt, mask=torch.zeros(1, 4, 4)).item() == 0.0
    assert losses.dssim(a, a).item() == pytest.approx(0.0, abs=1e-6)
    d = losses.dssim(a, b)
    assert d.item() == pytest.approx(1.0 - im.ssim(a, b).mean().item(), abs=1e-6) and d.item() > 0
    p = b.clone().requires_grad_(True)
    (losses.l1(p, a) + 0.2 * losses.dssim(p, a)).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_alpha_attention_and_deformation_regularisers():
    alpha = torch.zeros(1, 2, 2, 1)
    alpha[0, 0, 0, 0] = 1.0
    inside = torch.tensor([[[True, True], [False, False]]])
    outside = ~inside
    # (1 - alpha) inside: pixel (0,1) -> 1 of 4 px; alpha outside: 0
    assert losses.alpha_loss(alpha, inside, outside).item() == pytest.approx(0.25)
    assert losses.alpha_loss(alpha, outside, inside).item() == pytest.approx(0.5 + 0.25)
    att = torch.tensor([[[0.5, 0.0], [1.0, 0.0]]])
    assert losses.attention_reg(att, inside).item() == pytest.approx(0.5 / 4)
    d = {"xyz": torch.tensor([[1.0, -1.0]]), "scale": torch.tensor([[-3.0]])}
    assert losses.deformation_reg(d).item() == pytest.approx(1.0 + 3.0)
    assert losses.deformation_reg({}).item() == 0.0
    with pytest.raises(TalkgsError, match="inside_mask"):
        losses.alpha_loss(alpha, torch.ones(1, 3, 2), outside)


# ---- lips crop / patches ----------------------------------------------------------------


def test_lips_crop_always_returns_min_size_square_crops():
    H = W = 64
    img = torch.arange(H * W * 3, dtype=torch.float32).reshape(1, H, W, 3) / (H * W * 3)
    images = img.repeat(5, 1, 1, 1)
    boxes = torch.tensor(
        [
            [5.0, 5.0, 5.0, 5.0],  # size 0 near the corner
            [60.0, 60.0, 80.0, 80.0],  # partly outside
            [-100.0, -100.0, -90.0, -90.0],  # entirely outside
            [10.0, 12.0, 50.0, 40.0],  # normal, 40 x 28
            [30.0, 30.0, 20.0, 20.0],  # inverted
        ]
    )
    int_boxes = losses.safe_square_boxes(boxes, H, W, min_size=32)
    sides = int_boxes[:, 2] - int_boxes[:, 0]
    assert torch.equal(sides, int_boxes[:, 3] - int_boxes[:, 1])
    assert (sides >= 32).all()
    assert (int_boxes[:, :2] >= 0).all() and (int_boxes[:, 2:] <= 64).all()
    assert int_boxes[0].tolist() == [0, 0, 32, 32]
    assert int_boxes[1].tolist() == [32, 32, 64, 64]
    assert int_boxes[3].tolist() == [10, 6, 50, 46]  # square of side 40 around the centre (30, 26)
    crops = losses.lips_crop(images, boxes, min_size=32)
    assert crops.shape == (5, 40, 40, 3)
    assert torch.equal(crops[3], img[0, 6:46, 10:50])  # the largest crop is not resampled
    crops32 = losses.lips_crop(images[:3], boxes[:3], min_size=32)
    assert crops32.shape == (3, 32, 32, 3)
    assert torch.equal(crops32[1], img[0, 32:64, 32:64])
    # an image smaller than min_size: the whole image, upsampled
    tiny = torch.rand(2, 16, 20, 3)
    out = losses.lips_crop(tiny, torch.zeros(2, 4), min_size=32)
    assert out.shape == (2, 32, 32, 3)
    assert losses.lips_crop(images, boxes, min_size=32, out_size=48).shape == (5, 48, 48, 3)
    with pytest.raises(TalkgsError, match="NaN"):
        losses.lips_crop(images[:1], torch.tensor([[float("nan"), 0.0, 1.0, 1.0]]))


def test_random_patches_align_pred_and_gt_and_are_reproducible():
    pred = torch.rand(2, 50, 60, 3)
    gt = 2.0 * pred  # exact in floating point
    g1 = torch.Generator().manual_seed(7)
    p, q = losses.random_patches(pred, gt, (20, 30), n=4, generator=g1)
    assert p.shape == q.shape and p.shape[0] == 8 and 20 <= p.shape[1] <= 30 and p.shape[1] == p.shape[2]
    assert torch.equal(q, 2.0 * p)  # same places in both
    g2 = torch.Generator().manual_seed(7)
    p2, _ = losses.random_patches(pred, gt, (20, 30), n=4, generator=g2)
    assert torch.equal(p, p2)
    # every patch is a real window of its own image
    s = p.shape[1]
    for k in range(8):
        src = pred[k // 4].unfold(0, s, 1).unfold(1, s, 1)  # [H-s+1, W-s+1, 3, s, s]
        hit = (src == p[k].permute(2, 0, 1)).flatten(2).all(-1)
        assert hit.any()
    big, _ = losses.random_patches(pred, gt, (100, 120), n=1)
    assert big.shape[1:3] == (50, 50)


def test_fill_boxes_blanks_only_the_box():
    img = torch.rand(1, 8, 8, 3)
    out = losses.fill_boxes(img, torch.tensor([[2, 3, 5, 6]]), value=torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(out[0, 3:6, 2:5], torch.tensor([0.0, 1.0, 0.0]).expand(3, 3, 3))
    keep = torch.ones(8, 8, dtype=torch.bool)
    keep[3:6, 2:5] = False
    assert torch.equal(out[0][keep], img[0][keep])


# ---- LPIPS ------------------------------------------------------------------------------


def _real_frame() -> torch.Tensor | None:
    """Frame 10 of the anchor clip, area-downsampled to 128 x 128 (``[1, 128, 128, 3]``;
    small because ST-LPIPS costs ~1 s per 256^2 pair on the 2-core CI machine)."""
    if not CLIP.exists():
        return None
    try:
        import av
    except ImportError:
        return None
    with av.open(str(CLIP)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == 10:
                rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).float() / 255.0
                break
    x = F.avg_pool2d(rgb.permute(2, 0, 1)[None], 4)
    return x.permute(0, 2, 3, 1).contiguous()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = im.gaussian_kernel_1d(2 * int(3 * sigma) + 1, sigma, x.dtype, x.device)
    y = x.permute(0, 3, 1, 2)
    n = k.numel()
    y = F.pad(y, (n // 2,) * 4, mode="replicate")
    y = F.conv2d(y, k.view(1, 1, n, 1).expand(3, 1, n, 1), groups=3)
    y = F.conv2d(y, k.view(1, 1, 1, n).expand(3, 1, 1, n), groups=3)
    return y.permute(0, 2, 3, 1)


@needs_stlpips
def test_lpips_identical_zero_and_shift_noise_blur_ordering():
    frame = _real_frame()
    if frame is None:
        pytest.skip(f"real-image LPIPS ordering needs {CLIP} and PyAV")
    H, W = frame.shape[1:3]
    a = frame[:, :, : W - 2]
    shifted = frame[:, :, 2:]
    g = torch.Generator().manual_seed(0)
    noisy = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    blurred = _blur(a, 2.0)  # measured at 128^2: shift 0.011, noise 0.11, blur 0.28
    d = lpm.lpips(torch.cat([a, a, a, a]), torch.cat([a, shifted, noisy, blurred]))
    assert d.shape == (4,)
    same, shift, noise, blur = d.tolist()
    assert same < 1e-6
    assert same < shift < noise < blur, d.tolist()


@needs_stlpips
def test_lpips_model_is_frozen_cached_and_passes_gradients():
    model = lpm.load_lpips("alex", "cpu")
    assert model is lpm.load_lpips("alex", torch.device("cpu"))
    assert all(not p.requires_grad for p in model.parameters())
    parent = torch.nn.Sequential(model)
    parent.train()
    assert not model.training and not any(m.training for m in model.modules())
    a = textured(48, 48, dtype=torch.float32, seed=1)
    b = textured(48, 48, dtype=torch.float32, seed=2).requires_grad_(True)
    d = lpm.lpips(a, b)
    assert d.shape == (1,) and d.item() > 0.01
    assert lpm.lpips(a, a).item() < 1e-6
    d.sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0
    # a second call gives the same value (eval mode: no dropout)
    assert lpm.lpips(a, b.detach()).item() == pytest.approx(d.item(), rel=1e-6)
    lpm.lpips(torch.rand(1, 21, 21, 3), torch.rand(1, 21, 21, 3))  # the measured minimum runs
    with pytest.raises(TalkgsError, match="at least 21 px"):
        lpm.lpips(torch.rand(1, 20, 64, 3), torch.rand(1, 20, 64, 3))
    with pytest.raises(TalkgsError, match="unknown LPIPS network"):
        lpm.load_lpips("squeeze")


@needs_stlpips
def test_lpips_on_degenerate_lips_box_and_patches_does_not_crash():
    a = textured(64, 64, b=2, dtype=torch.float32, seed=3)
    b = textured(64, 64, b=2, dtype=torch.float32, seed=4)
    boxes = torch.tensor([[30.0, 30.0, 30.0, 30.0], [70.0, -5.0, 70.0, -5.0]])
    v = losses.lips_lpips(a, b, boxes, min_size=8)
    assert torch.isfinite(v) and v.item() > 0
    assert losses.lips_lpips(a, a, boxes).item() < 1e-6
    g = torch.Generator().manual_seed(0)
    pl = losses.patch_lpips(a, b, patch_size=(24, 32), n=2, generator=g)
    assert torch.isfinite(pl) and pl.item() > 0
    with pytest.raises(TalkgsError, match="at least 21 px"):
        losses.patch_lpips(a, b, patch_size=(8, 12))


def test_stand_ins_only_for_missing_modules_and_removed_after():
    real = types.ModuleType("talkgs_test_real_module")
    sys.modules["talkgs_test_real_module"] = real
    missing = "talkgs_test_surely_missing_module"
    try:
        with lpm._stand_ins(("talkgs_test_real_module", missing)) as placed:
            assert placed == [missing]
            assert sys.modules["talkgs_test_real_module"] is real
            stub = sys.modules[missing]
            from talkgs_test_surely_missing_module import anything  # noqa: F401  (import works)

            with pytest.raises(TalkgsError, match="not installed"):
                stub.sub.function()
        assert missing not in sys.modules
        assert sys.modules["talkgs_test_real_module"] is real
    finally:
        del sys.modules["talkgs_test_real_module"]


@needs_stlpips
def test_stlpips_import_leaves_no_stand_ins_behind():
    lpm.load_lpips("alex", "cpu")
    for name in lpm._UNUSED_IMPORTS:
        assert not isinstance(sys.modules.get(name), lpm._StandIn), name


def test_missing_stlpips_raises_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "stlpips_pytorch", None)
    monkeypatch.setitem(sys.modules, "stlpips_pytorch.stlpips", None)
    with pytest.raises(TalkgsError, match=r"talkgs\[metrics\]"):
        lpm._import_stlpips()


# ---- lip metrics --------------------------------------------------------------------------


def _lips(seed: int = 0, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    base = np.stack([30 * np.cos(t), 12 * np.sin(t)], axis=-1) + 200
    return base[None] + rng.normal(0, 1.0, (n, 40, 2))


def test_lmd_zero_for_identical_and_translated_positive_for_deformed():
    gt = _lips()
    assert np.allclose(lp.lmd(gt, gt), 0.0)
    moved = gt + np.array([[[13.0, -7.5]]])
    assert np.allclose(lp.lmd(moved, gt), 0.0, atol=1e-9)
    c = gt.mean(axis=1, keepdims=True)
    scaled = c + 2.0 * (gt - c)  # each point moves by its distance to the centroid
    expected = np.linalg.norm(gt - c, axis=-1).mean(axis=1)
    assert np.allclose(lp.lmd(scaled, gt), expected)
    opened = gt.copy()
    opened[:, :20, 1] += 4.0  # one half moves 4 px, the other stays: mean distance 2 px
    assert np.allclose(lp.lmd(opened, gt), 2.0)
    assert np.allclose(lp.lmd(torch.from_numpy(scaled), torch.from_numpy(gt)), expected)
    with pytest.raises(TalkgsError, match="differ"):
        lp.lmd(gt, gt[:, :20])


def test_mediapipe_lips_indices_match_facemesh():
    conn = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")
    assert sorted({i for e in conn.FACEMESH_LIPS for i in e}) == list(lp.MEDIAPIPE_LIPS_40)
    lm = np.random.default_rng(0).random((2, 478, 2))
    assert np.array_equal(lp.lips_landmarks(lm), lm[:, list(lp.MEDIAPIPE_LIPS_40)])


def test_mouth_opening_correlation_is_nan_safe():
    x = np.sin(np.linspace(0, 6, 50))
    assert lp.mouth_opening_correlation(x, 3 * x + 1) == pytest.approx(1.0)
    assert lp.mouth_opening_correlation(x, -x) == pytest.approx(-1.0)
    r = lp.pearson(x, np.full(50, 0.1))
    assert r.r == 0.0 and not r.defined
    r = lp.pearson(np.full(50, 1e6), x)
    assert r.r == 0.0 and not r.defined
    y = x.copy()
    y[[3, 7]] = np.nan
    r = lp.pearson(x, y)
    assert r.defined and r.n == 48 and r.r == pytest.approx(1.0)
    assert lp.pearson([1.0], [2.0]) == lp.Correlation(0.0, False, 1)
    noise = np.random.default_rng(1).normal(size=50)
    assert abs(lp.mouth_opening_correlation(x, noise)) < 0.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    a = textured(40, 44, b=2, dtype=torch.float32, seed=8)
    b = textured(40, 44, b=2, dtype=torch.float32, seed=9)
    ac, bc = a.cuda(), b.cuda()
    assert torch.allclose(im.psnr(ac, bc).cpu(), im.psnr(a, b), atol=1e-4)
    assert torch.allclose(im.ssim(ac, bc).cpu(), im.ssim(a, b), atol=1e-5)
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [30.0, 30.0, 60.0, 50.0]])
    assert torch.equal(losses.lips_crop(ac, boxes.cuda()).cpu(), losses.lips_crop(a, boxes))
    if _stlpips_available():
        assert torch.allclose(lpm.lpips(ac, bc).cpu(), lpm.lpips(a, b), atol=1e-4)
        assert lpm.load_lpips("alex", "cuda") is lpm.load_lpips("alex", ac.device)


# ----------------------------------------------------------------------------- mouth metrics

MOUTH_FRAMES = (1617, 1717)  # the anchor's first 100 val frames


@pytest.fixture(scope="module")
def anchor_mouths(anchor_dataset):
    """The anchor's frames MOUTH_FRAMES (uint8), their tracked landmarks and mouth opening."""
    from talkgs.data import format as fmt
    from talkgs.media import read_frames

    a, b = MOUTH_FRAMES
    with np.load(anchor_dataset / fmt.TRACKS) as z:
        landmarks, opening, all_landmarks = z["landmarks"][a:b], z["mouth_open"][a:b], z["landmarks"]
    return read_frames(anchor_dataset / fmt.FRAMES, start=a, stop=b), landmarks, opening, all_landmarks


def test_mouth_crops_are_one_size_centred_on_the_lips_and_a_frame_matches_itself(anchor_mouths):
    from talkgs.metrics import mouth as mm

    frames, landmarks, _, all_landmarks = anchor_mouths
    side = mm.mouth_crop_side(all_landmarks)
    face = float(np.median(mm.face_height(all_landmarks)))
    assert side % 2 == 0 and abs(side - mm.MOUTH_CROP_FRACTION * face) <= 1
    assert mm.mouth_crop_side(all_landmarks, 0.125) == max(mm.MOUTH_CROP_MIN_PX, 2 * round(side * 0.125 / 2))
    h, w = frames.shape[1:3]
    centres = mm.lip_centres(landmarks)
    boxes = mm.mouth_crop_boxes(centres, side, w, h)
    assert np.all(boxes[:, 2] - boxes[:, 0] == side) and np.all(boxes[:, 3] - boxes[:, 1] == side)
    assert np.abs((boxes[:, :2] + boxes[:, 2:]) / 2 - centres).max() <= 0.5 + 1e-9  # inside the image here
    lips = landmarks[:, lp.MEDIAPIPE_LIPS_40]
    assert np.all(lips.min(1) >= boxes[:, :2]) and np.all(lips.max(1) <= boxes[:, 2:])  # the whole mouth is in
    edge = mm.mouth_crop_boxes(np.array([[1.0, h - 2.0]]), side, w, h)[0]  # moved inside, same size
    assert edge.tolist() == [0, h - side, side, h]
    gt = torch.from_numpy(mm.cut(frames, boxes)).float() / 255
    assert gt.shape == (len(frames), side, side, 3)
    assert torch.all(im.psnr(gt, gt) == im.PSNR_MAX_DB) and torch.allclose(im.ssim(gt, gt), torch.ones(len(gt)))
    later = torch.from_numpy(mm.cut(frames[1:], boxes[:-1])).float() / 255  # the next frame in the same boxes
    assert im.psnr(later, gt[:-1]).mean() < 45 and im.ssim(later, gt[:-1]).mean() < 0.99


def test_inner_lip_area_and_teeth_follow_the_mouth_and_a_painted_closed_mouth_scores_lower(anchor_mouths):
    """The inside-mouth area of the tracked landmarks follows the mouth opening and does not
    depend on the image size; MediaPipe on frames whose open, toothy mouth is replaced by a closed
    one of the same face (a 'render' that keeps its mouth shut) finds ~no inside area and no
    teeth, so its area ratio and teeth score fall below those of the frames themselves."""
    from talkgs.landmarks import LIPS_OUTER_IDX
    from talkgs.metrics import mouth as mm
    from talkgs.prepare.labels import fill_polygon
    from talkgs.prepare.track import track_video

    frames, landmarks, opening, _ = anchor_mouths
    area = mm.inner_lip_area(landmarks)
    assert np.all(area >= 0) and lp.pearson(area, opening).r > 0.95
    assert np.allclose(mm.inner_lip_area(landmarks * 0.25), area)
    teeth = mm.teeth_fraction(frames, landmarks)
    assert np.all((teeth >= 0) & (teeth <= 1))
    open_ = opening >= mm.OPEN_THRESHOLD
    assert not mm.shows_teeth(teeth[~open_]).any() and mm.shows_teeth(teeth[open_]).sum() >= 5

    pick = np.flatnonzero(open_ & mm.shows_teeth(teeth))[:6]
    closed = int(np.argmin(opening))
    centres = mm.lip_centres(landmarks)
    painted = frames[pick].copy()
    for k, i in enumerate(pick):
        region = fill_polygon(landmarks[i, list(LIPS_OUTER_IDX)], frames.shape[1:3])
        region = cv2_dilate(region, 9)
        dx, dy = np.round(centres[closed] - centres[i]).astype(int)
        painted[k][region] = np.roll(frames[closed], (-dy, -dx), axis=(0, 1))[region]
    gt_area, gt_teeth, gt_open = area[pick], teeth[pick], opening[pick]
    scores = {}
    for name, images in (("same", frames[pick]), ("closed", painted)):
        tr = track_video(list(images), n_frames_hint=len(images), progress=False)
        assert tr.detected.all()
        got_area, got_teeth = mm.inner_lip_area(tr.landmarks), mm.teeth_fraction(images, tr.landmarks)
        scores[name] = {**mm.area_scores(got_area, gt_area, gt_open), **mm.teeth_score(got_teeth, gt_teeth, gt_open)}
    same, shut = scores["same"], scores["closed"]
    assert same["n_open"] == shut["n_open"] == same["n_teeth_gt"] == len(pick)
    assert 0.8 < same["area_ratio_open"] < 1.25 and same["teeth"] >= 0.8, same
    assert shut["area_ratio_open"] < 0.2 and shut["teeth"] == 0.0, shut


def cv2_dilate(mask: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def test_mouth_scores_on_known_series():
    from talkgs.metrics import mouth as mm

    gt_open = np.array([0.0, 0.03, 0.05, 0.01, 0.04])
    gt_area = np.array([0.0, 0.004, 0.008, 0.001, 0.006])
    s = mm.area_scores(0.5 * gt_area, gt_area, gt_open)
    assert s["area_r"] == pytest.approx(1.0) and s["area_ratio_open"] == pytest.approx(0.5) and s["n_open"] == 3
    s = mm.area_scores(np.where(gt_open > 0.02, np.nan, gt_area), gt_area, gt_open)  # the render's face lost
    assert s["n_open"] == 0 and math.isnan(s["area_ratio_open"])
    gt_teeth = np.array([0.5, 0.3, 0.0, 0.4, 0.2])  # open frames 1 and 4 show teeth, frame 2 not
    t = mm.teeth_score(np.array([0.0, 0.2, 0.9, 0.0, np.nan]), gt_teeth, gt_open)
    assert t == {"teeth": 0.5, "n_teeth_gt": 2}
    assert math.isnan(mm.teeth_score(gt_teeth, np.zeros(5), gt_open)["teeth"])
