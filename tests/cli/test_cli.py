import json

import pytest

from megabit.cli.main import main
from megabit.hub import bundled_classifier_path
from tests.conftest import make_bsn_model


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_commands(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "budget" in out and "eval-classifier" in out


def test_budget_json(capsys):
    rc, out, _ = run(capsys, "budget", "nqe-1mbit", "--json")
    t = json.loads(out)
    assert rc == 0 and t["total_bits"] <= 1 << 20 and t["fits"]


def test_budget_of_a_preset_names_its_bundled_file(capsys):
    """A preset's table is its architecture; the trained model bundled under the name (per-channel BSN
    scales for nqe-1mbit-hr) is reported next to it with its file's exact bits."""
    from megabit.hub import DEFAULT_CLASSIFIER, bundled_classifier_path

    path = bundled_classifier_path(DEFAULT_CLASSIFIER)
    if path is None:
        pytest.skip("no bundled default")
    rc, out, _ = run(capsys, "budget", DEFAULT_CLASSIFIER, "--json")
    t = json.loads(out)
    b = t["bundled"]
    assert rc == 0 and b["total_bits"] == 8 * path.stat().st_size == 8 * b["file_bytes"] <= 1 << 20
    rc, out, _ = run(capsys, "budget", b["path"], "--json")
    assert rc == 0 and json.loads(out)["raw_total_bits"] == b["raw_total_bits"] >= t["total_bits"]
    rc, out, _ = run(capsys, "budget", "nqe-tiny", "--json")
    assert rc == 0 and "bundled" not in json.loads(out)


def test_budget_coded_estimate_predicts_the_packed_file(capsys):
    """--coder: a preset's .mbit size before training; HEQ levels are equiprobable, so it predicts the
    trained, bundled file to well under 1 %, and the wider preset fits 2^20 only when entropy-coded."""
    from megabit.hub import bundled_classifier_path

    rc, out, _ = run(capsys, "budget", "nqe-1mbit", "--json", "--coder", "tans")
    est = json.loads(out)["coded_estimate"]
    real = 8 * bundled_classifier_path("nqe-1mbit").stat().st_size
    assert rc == 0 and abs(est["total_bits"] - real) / real < 0.005
    rc, out, _ = run(capsys, "budget", "nqe-1mbit-ans", "--json", "--coder", "tans")
    t = json.loads(out)
    assert rc == 0 and not t["fits"] and t["total_bits"] > 1 << 20
    assert t["coded_estimate"]["fits"] and t["coded_estimate"]["total_bits"] <= 1 << 20


def test_errors_are_one_line(capsys, tmp_path):
    for argv in (["budget", "nope"], ["budget", str(tmp_path / "m.mbit"), "--coder", "tans"],
                 ["eval-codec", "--data-root", str(tmp_path), "--anchors-only", "--anchors-from", str(tmp_path / "r.json")],
                 ["eval-classifier", "--data-root", str(tmp_path / "missing")],
                 ["inspect", str(tmp_path / "missing.mbit")], ["frobnicate"]):
        rc, out, err = run(capsys, *argv)
        assert rc == 2, argv
        assert err.count("\n") == 1 and "Traceback" not in err, err
    bad = tmp_path / "bad.mbit"
    bad.write_bytes(b"MBIT" + b"\0" * 40)
    rc, _, err = run(capsys, "inspect", str(bad))
    assert rc == 2 and err.startswith("megabit: error:")


def test_pack_inspect_eval_roundtrip(capsys, tmp_path, cifar_root):
    from megabit.train.classifier import save_classifier

    m = make_bsn_model()
    save_classifier(m, tmp_path / "m.pt")
    for coder in ("raw", "tans"):
        out_f = tmp_path / f"m-{coder}.mbit"
        rc, out, _ = run(capsys, "pack", str(tmp_path / "m.pt"), "-o", str(out_f), "--coder", coder, "--json")
        assert rc == 0
        rc, out, _ = run(capsys, "inspect", str(out_f), "--json")
        ins = json.loads(out)
        assert ins["total_bits"] == 8 * out_f.stat().st_size and "bits_per_weight" in ins
        rc, out, _ = run(capsys, "budget", str(out_f), "--json")
        assert json.loads(out)["total_bits"] == 8 * out_f.stat().st_size
    accs, bits = [], []
    for path in (tmp_path / "m.pt", tmp_path / "m-tans.mbit"):
        rc, out, _ = run(capsys, "eval-classifier", str(path), "--data-root", str(cifar_root), "--json", "--integer")
        r = json.loads(out)
        assert rc == 0 and r["integer_mismatches"] == 0
        accs.append(r["accuracy"])
        bits.append((r["total_bits"], r.get("raw_total_bits")))
    assert accs[0] == accs[1]  # a packed file evaluates exactly like the unpacked model
    # a .pt reports its raw budget; its .mbit the file's size, and the same raw count next to it
    assert bits[1] == (8 * (tmp_path / "m-tans.mbit").stat().st_size, bits[0][0]) and bits[0][1] is None


@pytest.mark.skipif(bundled_classifier_path() is None, reason="no bundled model")
def test_demo_and_default_eval(capsys, tmp_path):
    from megabit.hub import sample_cifar_path

    rc, out, _ = run(capsys, "demo", "--no-codec", "--out", str(tmp_path))
    assert rc == 0 and "accuracy on the bundled sample" in out and "0 mismatches" in out
    rc, out, _ = run(capsys, "eval-classifier", "--data-root", str(sample_cifar_path()), "--json")
    assert rc == 0 and json.loads(out)["accuracy"] > 0.5


def test_a_closed_pipe_is_not_an_error_line():
    """`megabit budget nqe-1mbit | head -1`: the reader leaves early; no 'megabit: error' and no traceback."""
    import subprocess
    import sys

    code = ("import sys, time; time.sleep(0.5); from megabit.cli.main import main; "
            "sys.exit(main(['budget', 'nqe-1mbit']))")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the child writes anything
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1
    assert "error" not in err and "Traceback" not in err, err
