import os

import numpy as np
import pytest
import torch

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
torch.set_num_threads(1)

from megabit.models.patch_codec import PatchCodec, PatchCodecConfig  # noqa: E402


def make_tiny_codec(seed: int = 0, bsn: bool = True) -> PatchCodec:
    """Tiny random codec with BN statistics from random images, converted to BSN (as shipped)."""
    torch.manual_seed(seed)
    m = PatchCodec(PatchCodecConfig.tiny())
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randint(0, 256, (4, 3, 64, 64)).float())
    if bsn:
        m.g_a.convert_to_bsn()
        m.cfg = m.g_a.cfg
    return m.eval()


@pytest.fixture(scope="session")
def tiny_codec():
    from megabit.codec.api import Codec

    m = make_tiny_codec()
    probs = np.random.default_rng(0).uniform(0.2, 0.8, (m.cfg.max_bits, 6)).astype(np.float32)
    return Codec.from_model(m, name="codec-tiny", bit_probs=probs)


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory, tiny_codec):
    from megabit.codec.train import save_codec

    p = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_codec(tiny_codec.model, p, {"bit_probs": torch.from_numpy(tiny_codec.bit_probs)})
    return p
