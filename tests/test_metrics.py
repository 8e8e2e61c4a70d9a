import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from megabit.metrics import bd_psnr, bd_rate, ms_ssim, psnr, ssim


def test_psnr_known_value():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.1
    y[1] += 0.01
    assert torch.allclose(psnr(x, y), torch.tensor([20.0, 40.0], dtype=torch.float64))


def _ssim_naive(x, y, win=11, sigma=1.5, k1=0.01, k2=0.03):
    """Direct (non-separable) SSIM from Wang et al. 2004, valid windows only."""
    g = np.exp(-((np.arange(win) - (win - 1) / 2) ** 2) / (2 * sigma**2))
    w2 = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = k1**2, k2**2
    H, W = x.shape
    vals = []
    for i in range(H - win + 1):
        for j in range(W - win + 1):
            a, b = x[i:i + win, j:j + win], y[i:i + win, j:j + win]
            ma, mb = (w2 * a).sum(), (w2 * b).sum()
            va, vb = (w2 * a * a).sum() - ma**2, (w2 * b * b).sum() - mb**2
            cov = (w2 * a * b).sum() - ma * mb
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_naive_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 20, 24, generator=g)
    y = (x + 0.1 * torch.randn(1, 1, 20, 24, generator=g)).clamp(0, 1)
    assert float(ssim(x, y)) == pytest.approx(_ssim_naive(x[0, 0].double().numpy(), y[0, 0].double().numpy()), abs=1e-9)


def test_ms_ssim_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 192, 176, generator=g)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2, dtype=torch.float64))
    n1 = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    n2 = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    a, b = ms_ssim(x, n1), ms_ssim(x, n2)
    assert bool((a > b).all()) and bool((b > 0).all())
    assert torch.allclose(ms_ssim(n1, x), a)
    with pytest.raises(ValueError, match="larger than 160"):
        ms_ssim(x[..., :160, :160], x[..., :160, :160])


def test_ms_ssim_single_scale_is_ssim():
    x = torch.rand(1, 3, 64, 64)
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    assert float(ms_ssim(x, y, weights=(1.0,))) == pytest.approx(float(torch.relu(ssim(x, y))), rel=1e-9)


@given(f=st.floats(0.3, 3.0), d=st.floats(-2.0, 2.0), method=st.sampled_from(["cubic", "pchip"]))
@settings(max_examples=30, deadline=None)
def test_bd_rate_and_psnr_analytic(f, d, method):
    r = [0.1, 0.25, 0.5, 0.9, 1.6]
    q = [27.0, 30.5, 33.0, 35.5, 38.0]
    # same qualities at f times the rate: BD-rate = 100 (f - 1) exactly
    assert bd_rate(r, q, [f * x for x in r], q, method) == pytest.approx(100 * (f - 1), rel=1e-9, abs=1e-9)
    # same rates, d dB better everywhere: BD-PSNR = d exactly
    assert bd_psnr(r, q, r, [x + d for x in q], method) == pytest.approx(d, abs=1e-9)


def test_bd_rate_on_exact_cubic_curves():
    # log R = c(P) is a cubic: the cubic fit is exact; a test curve log R + log(1.2) gives exactly +20 %
    P = np.array([30.0, 32.0, 34.0, 36.0, 38.0])
    logR = 0.002 * (P - 30) ** 3 - 0.01 * (P - 30) ** 2 + 0.25 * (P - 30) - 2
    assert bd_rate(np.exp(logR), P, 1.2 * np.exp(logR), P) == pytest.approx(20.0, abs=1e-8)
    # a test curve sampled at other qualities on the same law has BD-rate 0
    P2 = P + 0.7
    logR2 = 0.002 * (P2 - 30) ** 3 - 0.01 * (P2 - 30) ** 2 + 0.25 * (P2 - 30) - 2
    assert bd_rate(np.exp(logR), P, np.exp(logR2), P2) == pytest.approx(0.0, abs=1e-8)


def test_bd_errors():
    with pytest.raises(ValueError, match="at least 4"):
        bd_rate([1, 2, 3], [30, 31, 32], [1, 2, 3], [30, 31, 32])
    with pytest.raises(ValueError, match="positive"):
        bd_rate([0, 1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="overlap"):
        bd_rate([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [11, 12, 13, 14])
    with pytest.raises(ValueError, match="method"):
        bd_rate([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], method="akima")


def test_docstring_examples():
    import doctest

    import megabit.metrics

    res = doctest.testmod(megabit.metrics)
    assert res.attempted > 0 and res.failed == 0


# Reference values from the `bjontegaard` package 1.3.0 (FAU-LMS, whose PCHIP matches the JCT-VC/JVET
# Excel sheet to 10 decimals) on its README's x265 data and on CompressAI's published Kodak curves
# (bmshj2018-hyperprior as anchor, mbt2018-mean as test, first 8 points, psnr-rgb).
_X265 = ([9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851],
         [9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987])
_REF = {("x265", "cubic"): (-4.420462706026296, 0.12040941911471303),
        ("x265", "pchip"): (-4.417485350589045, 0.11969278542479489),
        ("compressai", "cubic"): (-6.769330366804239, None),
        ("compressai", "pchip"): (-6.832750005692723, None)}


_COMPRESSAI = (  # CompressAI's published Kodak points (shared/compressai_kodak_results, *_mse_cpu.json)
    [0.131293402778, 0.208892822266, 0.31985812717, 0.478356255425, 0.668684217665, 0.938825819227, 1.259172227648, 1.66022406684],
    [27.581536793334, 29.196694121385, 30.972168705499, 32.838191117041, 34.526242761101, 36.743364617623, 38.583855844432, 40.556873700152],
    [0.12392171224, 0.197981092665, 0.307244194878, 0.460611979167, 0.661665174696, 0.914404975043, 1.234208848741, 1.61908976237],
    [27.699472968534, 29.35880587664, 31.128916719552, 32.950675277149, 34.96831704422, 36.911094038549, 38.837509429614, 40.633313979198],
)


@pytest.mark.parametrize("data", ["x265", "compressai"])
@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_bd_matches_reference_implementation(data, method):
    curves = _X265 if data == "x265" else _COMPRESSAI
    rate, dpsnr = _REF[(data, method)]
    assert bd_rate(*curves, method=method) == pytest.approx(rate, abs=1e-6)
    if dpsnr is not None:
        assert bd_psnr(*curves, method=method) == pytest.approx(dpsnr, abs=1e-6)
    try:  # and live against the package when it is installed (test extra)
        import bjontegaard
    except ImportError:
        return
    assert bd_rate(*curves, method=method) == pytest.approx(bjontegaard.bd_rate(*curves, method=method), abs=1e-6)
    assert bd_psnr(*curves, method=method) == pytest.approx(bjontegaard.bd_psnr(*curves, method=method), abs=1e-6)
