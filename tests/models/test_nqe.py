import json

import pytest
import torch

from megabit.models import NQE, NQEConfig, PRESETS, get_preset
from megabit.export import budget_table
from tests.conftest import make_bsn_model, tiny_cfg


def test_preset_fits_one_megabit():
    t = budget_table(get_preset("nqe-1mbit"))
    assert t["total_bits"] <= 1 << 20
    assert t["fits"]
    # mixed precision: 3b first, 1b deep
    bits = [r["bits_per_weight"] for r in t["layers"][:-1]]
    assert bits[0] == 3 and bits[-1] == 1 and bits == sorted(bits, reverse=True)
    assert any(L.groups > 1 for L in get_preset("nqe-1mbit").layers)


def test_config_roundtrip_json():
    for cfg in PRESETS.values():
        assert NQEConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError):
        NQEConfig.from_dict({**tiny_cfg().to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        get_preset("nope")


def test_forward_shapes_and_codes():
    m = NQE(tiny_cfg())
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert m(x).shape == (4, 10)
    f = m.features(x)
    assert set(f.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_bsn_conversion_preserves_predictions_mostly():
    torch.manual_seed(0)
    m = NQE(tiny_cfg())
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    m.train()
    with torch.no_grad():
        for _ in range(5):
            m(x)
    m.eval()
    with torch.no_grad():
        before = m.features(x)
        m.convert_to_bsn()
        after = m.features(x)
    assert m.cfg.norm == "bsn"
    # layer-shared shifts lose the per-channel scales, but most activation codes survive
    assert (before == after).float().mean() > 0.5


def test_float_variant_trains():
    m = NQE(tiny_cfg(quantize=False))
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    m(x).sum().backward()
    assert m.blocks[0].weight.grad is not None
    with pytest.raises(ValueError):
        m.convert_to_bsn()


def test_quant_stats_reports_occupancy():
    m = make_bsn_model()
    st = m.quant_stats()
    assert set(st) == {"blocks.0", "blocks.1", "blocks.2", "head"}
    assert abs(sum(st["blocks.0"]["occupancy"]) - 1) < 1e-6
