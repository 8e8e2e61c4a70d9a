import math

import numpy as np

from megabit.codec.anchors import encode_at_bpp
from megabit.codec.metrics import blockiness, ms_ssim, psnr


def test_psnr_known_value():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # MSE = 256 / 192
    assert math.isclose(psnr(a, b), 10 * math.log10(255**2 * 192 / 256), rel_tol=1e-12)


def test_ms_ssim_monotone_and_shared_impl_agrees():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (200, 200, 3)).astype(np.uint8)
    n1 = np.clip(a + rng.normal(0, 5, a.shape), 0, 255).astype(np.uint8)
    n2 = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    s1, s2 = ms_ssim(a, n1), ms_ssim(a, n2)
    assert 1 > s1 > s2 > 0
    small = ms_ssim(a[:150, :150], n1[:150, :150])  # local fallback (4 scales)
    assert abs(small - s1) < 0.05


def test_blockiness():
    rng = np.random.default_rng(0)
    smooth = rng.integers(100, 110, (64, 64, 3)).astype(np.uint8)
    assert 0.5 < blockiness(smooth) < 1.5
    blocky = smooth.copy()
    blocky[:, 32:] += 40
    blocky[32:, :] += 40
    assert blockiness(blocky) > 20


def test_anchor_matches_target():
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    r = encode_at_bpp(img, "jpeg", 3.0)
    assert r["bpp"] <= 3.0 and not r["over_target"]
    assert encode_at_bpp(img, "jpeg", 0.01)["over_target"]


def test_ms_ssim_torch_is_differentiable_and_matches_the_metric():
    import torch

    from megabit.codec.metrics import ms_ssim, ms_ssim_torch

    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    y = torch.from_numpy(b).permute(2, 0, 1)[None].float().requires_grad_(True)
    v = ms_ssim_torch(x, y)
    assert abs(float(v.detach()) - ms_ssim(a, b)) < 1e-4
    (1 - v).sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    # moving y towards x raises MS-SSIM: the gradient points the right way
    y2 = (y - 2.0 * y.grad / y.grad.abs().max()).detach()
    assert float(ms_ssim_torch(x, y2)) > float(v.detach())
