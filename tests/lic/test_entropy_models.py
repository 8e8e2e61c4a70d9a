import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from megabit.models.lic import EntropyBottleneck, GaussianConditional, get_scale_table, pmf_to_quantized_cdf


@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=40), st.integers(8, 16))
@settings(max_examples=50, deadline=None)
def test_quantized_cdf_is_valid(pmf, prec):
    if sum(pmf) * 2**prec < 1 or len(pmf) >= 2**prec:
        return
    if np.round(np.float32(pmf) * np.float32(2**prec)).sum() == 0:
        with pytest.raises(ValueError):
            pmf_to_quantized_cdf(pmf, prec)
        return
    cdf = pmf_to_quantized_cdf(pmf, prec)
    assert cdf[0] == 0 and cdf[-1] == 2**prec and len(cdf) == len(pmf) + 1
    assert np.all(np.diff(cdf) >= 1)


def test_bottleneck_likelihood_sums_to_one():
    eb = EntropyBottleneck(3).eval()
    # the initial density is wide (init_scale 10): sum over a wide support
    v = torch.arange(-1000, 1001, dtype=torch.float).view(1, 1, -1).repeat(1, 3, 1)
    p, _, _ = eb._likelihood(v.permute(1, 0, 2))
    assert torch.allclose(p.sum(-1), torch.ones(3, 1), atol=1e-4)


def test_gaussian_conditional_roundtrip_and_escape():
    gc = GaussianConditional(None)
    gc.update_scale_table(get_scale_table())
    y = torch.randn(2, 4, 3, 5) * 4
    y[0, 0, 0, 0] = 1e4  # far outside every CDF: escape path
    scales = torch.rand(2, 4, 3, 5) * 5
    means = torch.randn(2, 4, 3, 5)
    idx = gc.build_indexes(scales)
    s = gc.compress(y, idx, means=means)
    assert len(s) == 2
    assert torch.equal(gc.decompress(s, idx, means=means), gc.quantize(y, "dequantize", means))


def test_gaussian_likelihood_matches_normal_cdf():
    gc = GaussianConditional(None, scale_bound=0.11)
    y = torch.tensor([0.0, 1.0, -2.0])
    s = torch.tensor([1.0, 2.0, 0.5])
    _, p = gc(y, s, training=False)
    n = torch.distributions.Normal(0.0, s)
    ref = n.cdf(y + 0.5) - n.cdf(y - 0.5)
    assert torch.allclose(p, ref, atol=1e-6)


def test_build_indexes_picks_first_table_entry_at_or_above():
    gc = GaussianConditional([0.5, 1.0, 2.0], scale_bound=0.11)
    assert gc.build_indexes(torch.tensor([0.1, 0.5, 0.7, 1.0, 1.5, 9.0])).tolist() == [0, 0, 1, 1, 2, 2]


def test_compress_without_update_is_a_clear_error():
    eb = EntropyBottleneck(2)
    with pytest.raises(ValueError, match="update"):
        eb.compress(torch.zeros(1, 2, 2, 2))
