import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from megabit.export import IntegerNQE, budget_table, pack_model, unpack_model
from megabit.train.classifier import predict_logits
from tests.conftest import make_bsn_model, tiny_cfg


@pytest.mark.parametrize("fit", [False, True], ids=["quantile-conversion", "fitted-conversion"])
def test_integer_matches_fake_quant_exactly(fit):
    bsn_model = make_bsn_model(fit=fit)
    torch.manual_seed(1)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    net = IntegerNQE.from_model(bsn_model)
    li = net(x)
    assert li.dtype == torch.int64
    lf = bsn_model(x)
    alpha = bsn_model.head.log_alpha.exp()
    assert torch.equal(torch.round(lf / alpha).long(), li)
    assert torch.equal(net.predict(x, tta=True).argmax(1), predict_logits(bsn_model, x, tta=True).argmax(1))
    # the decision scores are the integer path's, value for value: a tie between two classes stays a
    # tie (summing alpha-scaled fp32 logits over the flip broke 2 of 10,000 ties on a trained model)
    for tta in (False, True, 2):
        assert torch.equal(predict_logits(bsn_model, x, tta=tta), net.predict(x, tta=tta).float())


def test_integer_needs_bsn():
    from megabit.models import NQE

    with pytest.raises(ValueError, match="BSN"):
        IntegerNQE.from_model(NQE(tiny_cfg()))


def test_integer_rejects_bad_input(bsn_model):
    net = IntegerNQE.from_model(bsn_model)
    with pytest.raises(ValueError):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError):
        net(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000))
def test_budget_equals_packed_bits_and_roundtrip(seed):
    m = make_bsn_model(seed)
    net = IntegerNQE.from_model(m)
    data, nbits = pack_model(net)
    t = budget_table(m.cfg)
    assert nbits == t["total_bits"]
    assert len(data) == t["packed_bytes"] == (nbits + 7) // 8
    net2 = unpack_model(m.cfg, data)
    for a, b in zip(net.layers, net2.layers):
        assert np.array_equal(a.codes, b.codes) and a.shift == b.shift and np.array_equal(a.offsets, b.offsets)
    assert np.array_equal(net.head.codes, net2.head.codes) and np.array_equal(net.head.bias, net2.head.bias)


def test_unpack_rejects_wrong_size(bsn_model):
    data, _ = pack_model(IntegerNQE.from_model(bsn_model))
    with pytest.raises(ValueError):
        unpack_model(bsn_model.cfg, data[:-1])


def test_preset_budget_numbers():
    from megabit.models import get_preset

    t = budget_table(get_preset("nqe-1mbit"))
    # hand count: weights x bits + per layer (4-bit shift + 12-bit offsets) + head bias
    cfg = get_preset("nqe-1mbit")
    cin, total = 3, 0
    for L in cfg.layers:
        n = L.out * cin // L.groups * 9
        total += n * {2: 1, 3: 2, 5: 3}[L.levels] + 4 + 12 * L.out
        cin = L.out
    total += 10 * cin * 3 + 10 * 16
    assert t["total_bits"] == total
