import numpy as np
import pytest
import torch

from megabit.export.integer import IntegerNQE
from megabit.export.streaming import StreamingIntegerNQE, peak_memory
from megabit.fmt.mbit import encode_mbit, read_mbit
from megabit.models import LayerSpec, NQEConfig
from tests.conftest import make_bsn_model


@pytest.mark.parametrize("coder", ["tans", "rans", "raw"])
def test_streaming_logits_equal_integer_nqe(coder, tmp_path):
    m = make_bsn_model(seed=3)
    net = IntegerNQE.from_model(m)
    data = encode_mbit(net, coder=coder, raw_fallback=False)
    path = tmp_path / "m.mbit"
    path.write_bytes(data)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    ref = net(x)
    for src in (data, path, read_mbit(data)):
        out = StreamingIntegerNQE(src)(x)
        assert out.dtype == torch.int64 and torch.equal(out, ref)


def test_peak_decoded_bytes_is_largest_layer_not_sum():
    m = make_bsn_model(seed=1)
    data = encode_mbit(IntegerNQE.from_model(m), coder="tans", raw_fallback=False)
    seen = []
    s = StreamingIntegerNQE(data, on_decode=lambda name, nb: seen.append((name, nb)))
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    s(x)
    sizes = s.layer_decoded_bytes()
    assert [n for n, _ in seen] == ["blocks.0", "blocks.1", "blocks.2", "head"]
    assert [nb for _, nb in seen] == sizes
    assert s.last_stats["peak_decoded_bytes"] == max(sizes) < sum(sizes)
    assert s.last_stats["coded_bytes"] == len(data)
    st = peak_memory(data, x, streaming=True)
    full = peak_memory(data, x, streaming=False)
    assert torch.equal(st["logits"], full["logits"])
    assert st["peak_decoded_bytes"] == max(sizes) and full["peak_decoded_bytes"] == sum(sizes)


def test_tracemalloc_peak_lower_when_streaming():
    cfg = NQEConfig(name="stream-big", layers=(LayerSpec(64, levels=3, pool=True), LayerSpec(128, levels=3, pool=True),
                                                LayerSpec(128, levels=5, pool=True)), head_levels=3)
    m = make_bsn_model(seed=0, cfg=cfg)
    data = encode_mbit(IntegerNQE.from_model(m), coder="tans", raw_fallback=False)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    st = peak_memory(data, x, streaming=True)
    full = peak_memory(data, x, streaming=False)
    assert torch.equal(st["logits"], full["logits"])
    saved = st["sum_decoded_bytes"] - st["max_layer_decoded_bytes"]
    assert full["tracemalloc_peak_bytes"] - st["tracemalloc_peak_bytes"] > 0.5 * saved


def test_rejects_bad_input():
    data = encode_mbit(IntegerNQE.from_model(make_bsn_model()), coder="tans", raw_fallback=False)
    s = StreamingIntegerNQE(data)
    with pytest.raises(ValueError, match="uint8"):
        s(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        s(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
