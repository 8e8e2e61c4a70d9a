import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from megabit.models import NQEConfig, LayerSpec, NQE


def tiny_cfg(**kw) -> NQEConfig:
    return NQEConfig(name="test-tiny", layers=(LayerSpec(8, levels=5, pool=True), LayerSpec(16, levels=3, groups=2, pool=True),
                                               LayerSpec(16, levels=2, groups=2, pool=True)), head_levels=3, **kw)


def make_bsn_model(seed: int = 0, cfg: NQEConfig | None = None, fit: bool = False, **bsn) -> NQE:
    """A small model with random weights, BN statistics from random data, converted to BSN
    (``fit``: by the calibrated conversion, on those images; ``bsn``: convert_to_bsn's BSN fields)."""
    torch.manual_seed(seed)
    m = NQE(cfg or tiny_cfg())
    m.train()
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        for _ in range(3):
            m(x)
    m.eval()
    m.convert_to_bsn(x if fit else None, **bsn)
    return m.eval()


@pytest.fixture
def bsn_model():
    return make_bsn_model()


def write_cifar_batches(root, n_train=40, n_test=20, seed=0):
    """Synthetic CIFAR-10 python batches (the standard format a user has)."""
    import pickle

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    per = n_train // 5
    for k in range(1, 6):
        d = {b"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, per))}
        with open(root / f"data_batch_{k}", "wb") as f:
            pickle.dump(d, f)
    d = {b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n_test))}
    with open(root / "test_batch", "wb") as f:
        pickle.dump(d, f)
    return root


@pytest.fixture
def cifar_root(tmp_path):
    return write_cifar_batches(tmp_path / "cifar")


def make_bsn_patch_codec(seed: int = 0):
    """The tiny patch codec with random weights, BN statistics from random patches, converted to BSN."""
    from megabit.models.patch_codec import PatchCodec, PatchCodecConfig

    torch.manual_seed(seed)
    m = PatchCodec(PatchCodecConfig.tiny())
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randint(0, 256, (2, 3, 64, 64)).float(), rate_bits=64)
    m.g_a.convert_to_bsn()
    m.cfg = m.g_a.cfg
    return m.eval()


def load_recipe(name: str):
    """Import ``recipes/NAME.py`` (recipes are scripts, not a package) as a module."""
    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def corrupt_bytes(original: bytes, data) -> bytes | None:
    """A hypothesis-drawn corruption of a file: a bit flip, a truncation, appended or overwritten
    bytes. None when the overwrite happened to leave the file unchanged."""
    from hypothesis import strategies as st

    buf = bytearray(original)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "bytes"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    elif kind == "extend":
        buf += data.draw(st.binary(min_size=1, max_size=20))
    else:
        i = data.draw(st.integers(0, len(buf) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=16))
        buf[i : i + len(chunk)] = chunk
    return None if bytes(buf) == original else bytes(buf)
