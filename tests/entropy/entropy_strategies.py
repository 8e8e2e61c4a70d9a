"""Shared hypothesis strategies for the entropy-coder tests."""

import numpy as np
from hypothesis import strategies as st

from megabit.entropy import quantize_frequencies


def make_probs(n_alpha: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """Geometric-like probabilities (skew 0 = uniform), randomly permuted."""
    p = np.exp(-skew * np.arange(n_alpha))
    p = p / p.sum()
    return p[rng.permutation(n_alpha)]


@st.composite
def coding_cases(draw, max_len: int = 5000, table_logs=(6, 12)):
    """(symbols, freqs, table_log, n_streams) with freqs from the data or from a smoothed model."""
    n_alpha = draw(st.integers(1, 16))
    skew = draw(st.sampled_from([0.0, 0.5, 1.5, 3.0, 6.0]))
    n = draw(st.one_of(st.integers(0, 40), st.integers(0, max_len)))
    seed = draw(st.integers(0, 2**32 - 1))
    table_log = draw(st.integers(*table_logs))
    n_alpha = min(n_alpha, 2**table_log)
    k = draw(st.one_of(st.sampled_from([1, 4, 8, 32]), st.integers(1, 40)))
    smoothed = draw(st.booleans())
    rng = np.random.default_rng(seed)
    x = rng.choice(n_alpha, size=n, p=make_probs(n_alpha, skew, rng)).astype(np.uint8)
    counts = np.bincount(x, minlength=n_alpha).astype(np.int64)
    if smoothed or counts.sum() == 0:
        counts = counts + 1  # model with every symbol codable (mismatched to the data)
    freqs = quantize_frequencies(counts, table_log)
    return x, freqs, table_log, k
