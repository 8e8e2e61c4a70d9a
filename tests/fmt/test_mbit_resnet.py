import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from megabit.cli.main import main as megabit_main
from megabit.fmt.mbit import MbitError, read_mbit
from megabit.fmt.mbit_resnet import encode_resnet_mbit, inspect_resnet_mbit, read_resnet_mbit, write_resnet_mbit
from megabit.models.resnet import ResNet, ResNetConfig, export_codes
from tests.conftest import corrupt_bytes


def _model(levels=5, step_rule="absmax", per_channel=False, edge_levels=255, seed=0):
    torch.manual_seed(seed)
    m = ResNet(ResNetConfig(levels=levels, step_rule=step_rule, per_channel=per_channel, edge_levels=edge_levels,
                            widths=(4, 8, 8), blocks_per_stage=1))
    m.train()
    m(torch.rand(8, 3, 32, 32))  # set the steps and BatchNorm statistics
    if step_rule == "learned":
        with torch.no_grad():
            for q in (mod.quant for mod in m.modules() if hasattr(mod, "quant")):
                if q.spec.step_rule == "learned":
                    q.step.mul_(0.7)  # a step the absmax rule would not give: the file must carry it
    return m.eval()


_FILE = encode_resnet_mbit(_model())


@settings(max_examples=12, deadline=None)
@given(levels=st.sampled_from([2, 3, 4, 5, 7, 15]), rule=st.sampled_from(["absmax", "learned", "heq"]),
       per_channel=st.booleans(), edge=st.sampled_from([0, 255]), coder=st.sampled_from(["tans", "rans", "raw"]),
       seed=st.integers(0, 3))
def test_roundtrip_is_exact(levels, rule, per_channel, edge, coder, seed):
    m = _model(levels, rule, per_channel, edge, seed)
    data = encode_resnet_mbit(m, coder=coder)
    m2 = read_resnet_mbit(data)
    a, b = export_codes(m), export_codes(m2)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k]["codes"], b[k]["codes"])
        assert np.array_equal(np.asarray(a[k]["unit"]), np.asarray(b[k]["unit"]))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    ins = inspect_resnet_mbit(data)
    assert ins["total_bits"] == 8 * len(data) and ins["n_weights"] == sum(v["codes"].size for v in a.values())


def test_entropy_coding_beats_raw_and_the_nqe_reader_refuses_it():
    tans, raw = encode_resnet_mbit(_model(15), coder="tans"), encode_resnet_mbit(_model(15), coder="raw")
    # payloads only: on this toy net's tiny layers the frequency tables cost more than they save
    assert inspect_resnet_mbit(tans)["weight_bits"] < inspect_resnet_mbit(raw)["weight_bits"]
    with pytest.raises(MbitError, match="ResNet"):
        read_mbit(tans)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_corruption_is_one_clean_error(data):
    buf = corrupt_bytes(_FILE, data)
    if buf is None:
        return
    with pytest.raises(MbitError):
        read_resnet_mbit(buf)


def test_pack_and_inspect_cli(tmp_path, capsys):
    m = _model(7)
    pt = tmp_path / "model.pt"
    torch.save({"config": m.cfg.to_dict(), "state_dict": m.state_dict(), "result": {}}, pt)
    out = tmp_path / "m.mbit"
    assert megabit_main(["pack", str(pt), "-o", str(out), "--json"]) == 0
    packed = json.loads(capsys.readouterr().out)
    assert packed["kind"] == "resnet" and packed["file_bytes"] == out.stat().st_size
    assert megabit_main(["inspect", str(out), "--json"]) == 0
    ins = json.loads(capsys.readouterr().out)
    assert ins["total_bits"] == 8 * out.stat().st_size
    assert megabit_main(["budget", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_bits"] == 8 * out.stat().st_size
    assert megabit_main(["budget", str(pt), "--json"]) == 0  # the model.pt: the file pack wrote from it
    assert json.loads(capsys.readouterr().out)["total_bits"] == 8 * out.stat().st_size
    # the packed file runs as the model did
    with torch.no_grad():
        x = torch.rand(2, 3, 32, 32)
        assert torch.equal(read_resnet_mbit(out)(x), m(x))
    (tmp_path / "cut.mbit").write_bytes(out.read_bytes()[:-5])
    assert megabit_main(["inspect", str(tmp_path / "cut.mbit")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("megabit: error:")
    assert write_resnet_mbit(m, tmp_path / "w.mbit") == (tmp_path / "w.mbit").stat().st_size


def test_eval_classifier_reads_the_resnet_pt_and_its_mbit_alike(tmp_path, capsys, cifar_root):
    m = _model(5)
    pt = tmp_path / "run" / "model.pt"
    pt.parent.mkdir()
    torch.save({"config": m.cfg.to_dict(), "state_dict": m.state_dict(), "result": {}}, pt)
    out = tmp_path / "m.mbit"
    assert megabit_main(["pack", str(pt), "-o", str(out), "--coder", "rans"]) == 0
    again = tmp_path / "again.mbit"  # a packed ResNet re-packs (here: back to tANS) with the same codes
    assert megabit_main(["pack", str(out), "-o", str(again), "--json"]) == 0
    capsys.readouterr()
    res = {}
    for src in (pt.parent, out, again):
        assert megabit_main(["eval-classifier", str(src), "--data-root", str(cifar_root), "--json", "--no-tta"]) == 0
        res[src] = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in res.values()} == {"resnet"}
    assert res[pt.parent]["accuracy"] == res[out]["accuracy"] == res[again]["accuracy"]
    assert res[out]["total_bits"] == 8 * out.stat().st_size and res[again]["total_bits"] == 8 * again.stat().st_size
    assert res[pt.parent]["total_bits"] == 8 * len(encode_resnet_mbit(m, meta={"source": str(pt.parent)}))
    assert megabit_main(["eval-classifier", str(out), "--data-root", str(cifar_root), "--integer"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "integer" in err[0]
