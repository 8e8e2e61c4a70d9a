import json
from dataclasses import replace

import numpy as np
import torch
import pytest
from PIL import Image

from megabit.cli import compress, decompress, eval_codec, train_codec
from megabit.cli.main import main as megabit_main


def _img(path, size=(70, 45), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)
    return path


def _photos(tmp_path, n=6):
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(n):
        _img(d / f"{i}.png", size=(64, 64), seed=i)
    return d


def test_compress_decompress_file(tmp_path, tiny_model_file):
    src = _img(tmp_path / "a.png", mode="RGBA")
    # tiny model rates are 32/64 bits, so 0.125 bpp (128 bits) must be refused
    with pytest.raises(ValueError, match="rates"):
        compress.main([str(src), "-o", str(tmp_path / "a.mbc"), "--rate", "0.125", "--model", str(tiny_model_file)])
    assert not (tmp_path / "a.mbc").exists()
    assert megabit_main(["compress", str(src), "-o", str(tmp_path / "b.mbc"), "--model", str(tiny_model_file)]) == 2


def test_roundtrip_and_folders(tmp_path, tiny_model_file, monkeypatch):
    from megabit.cli import compress as c

    monkeypatch.setattr(c, "RATES", {"0.03125": 32, "0.0625": 64})
    src = _img(tmp_path / "a.png", mode="L")
    assert c.main([str(src), "-o", str(tmp_path / "a.mbc"), "--rate", "0.0625", "--model", str(tiny_model_file)]) == 0
    assert decompress.main([str(tmp_path / "a.mbc"), "-o", str(tmp_path / "a_out.png"), "--model", str(tiny_model_file)]) == 0
    out = Image.open(tmp_path / "a_out.png")
    assert out.mode == "L" and out.size == (70, 45)  # a gray source comes back gray ...
    rgb = tmp_path / "a_rgb.png"
    assert decompress.main([str(tmp_path / "a.mbc"), "-o", str(rgb), "--model", str(tiny_model_file), "--rgb"]) == 0
    rgb = Image.open(rgb)
    assert rgb.mode == "RGB" and rgb.size == (70, 45)  # ... unless RGB is asked for, and then it is its luma
    assert np.array_equal(np.asarray(rgb.convert("L")), np.asarray(out))
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(2):
        _img(d / f"{i}.png", size=(33 + i, 20), seed=i)
    assert c.main([str(d), "-o", str(tmp_path / "mbc"), "--rate", "0.03125", "--model", str(tiny_model_file)]) == 0
    assert decompress.main([str(tmp_path / "mbc"), "-o", str(tmp_path / "png"), "--model", str(tiny_model_file)]) == 0
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["0.png", "1.png"]


def test_user_errors_exit_2(tmp_path, tiny_model_file, capsys):
    assert megabit_main(["decompress", str(tmp_path / "missing.mbc"), "-o", str(tmp_path / "x.png")]) == 2
    (tmp_path / "bad.mbc").write_bytes(b"MBCF" + bytes(10))
    assert megabit_main(["decompress", str(tmp_path / "bad.mbc"), "-o", str(tmp_path / "x.png"),
                         "--model", str(tiny_model_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("megabit: error:") for line in err)
    assert megabit_main(["compress", str(tmp_path), "-o", str(tmp_path / "o"), "--rate", "0.3"]) == 2


def test_eval_codec(tmp_path, tiny_model_file):
    d = tmp_path / "eval"
    d.mkdir()
    _img(d / "x.png", size=(64, 40))
    js, png = tmp_path / "r.json", tmp_path / "rd.png"
    assert eval_codec.main(["--data-root", str(d), "--model", str(tiny_model_file), "--rates", "32", "64",
                            "--anchors", "jpeg", "--json", str(js), "--plot", str(png)]) == 0
    r = json.loads(js.read_text())
    # the image count (a per-image dict once shadowed the file list: n_images said 2 or 3)
    assert r["n_images"] == r["n_images_planned"] == len(r["per_image"]["64"]) == 1 and not r["partial"]
    m = r["mean"]["64"]
    assert m["bpp_fixed"] == pytest.approx(8 * (40 + 4 * 64 // 8) / (64 * 40))
    assert {"psnr", "ms_ssim", "blockiness", "bpp_real", "no_refine", "jpeg", "jpeg@real", "webp@real"} <= set(m)
    assert m["jpeg"]["bpp"] <= m["bpp_fixed"] or m["jpeg"]["n_over_target"] == 1
    row = r["per_image"]["64"][0]
    assert row["jpeg@real"]["bpp"] <= row["bpp_real"] or row["jpeg@real"]["over_target"]
    assert png.stat().st_size > 1000

    # --anchors-from: a second evaluation reuses the anchors of the first, computing none of them
    from megabit.codec import evaluate as ev

    def boom(*a, **k):
        raise AssertionError("anchor recomputed")

    orig = ev.encode_at_bpp
    ev.encode_at_bpp = boom
    try:
        js2 = tmp_path / "r2.json"
        assert eval_codec.main(["--data-root", str(d), "--model", str(tiny_model_file), "--rates", "32", "64",
                                "--anchors", "jpeg", "--json", str(js2), "--anchors-from", str(js),
                                "--anchors-at-real"]) == 0  # (anchors at the real rate are never cached)
        strip = lambda rows: {k: [{q: v for q, v in x.items() if not q.endswith("@real")} for x in xs]  # noqa: E731
                              for k, xs in rows.items()}
        assert json.loads(js2.read_text())["per_image"] == strip(r["per_image"])
        # another image under the same name (other size): the stored anchor is not used
        _img(d / "x.png", size=(64, 48))
        with pytest.raises(AssertionError, match="recomputed"):
            eval_codec.main(["--data-root", str(d), "--model", str(tiny_model_file), "--rates", "32",
                             "--anchors", "jpeg", "--anchors-from", str(js)])
    finally:
        ev.encode_at_bpp = orig
    (tmp_path / "bad.json").write_text("{}")
    assert megabit_main(["eval-codec", "--data-root", str(d), "--anchors-only", "--anchors", "jpeg",
                         "--anchors-from", str(tmp_path / "bad.json")]) == 2


@pytest.fixture
def small_batches(monkeypatch):
    """train-codec with tiny batches and crops (the CLI builds TrainCodecConfig from its options)."""
    from megabit.codec import train as mod

    orig = mod.TrainCodecConfig
    monkeypatch.setattr(mod, "TrainCodecConfig",
                        lambda **kw: orig(**{**kw, "batch_patches": 8, "batch_crops": 2, "crop": 64, "n_val": 2}))


@pytest.mark.parametrize("loss,binarize,bsn_init", [("mse", "ste", "quantile"), ("ms-ssim", "stochastic", "fit")])
def test_train_codec_smoke(tmp_path, capsys, loss, binarize, bsn_init, small_batches):
    d = _photos(tmp_path)
    out = tmp_path / "run"
    args = ["--data-root", str(d), "--out", str(out), "--tiny", "--minutes", "0.01", "0.01", "0.01", "0.01", "--loss", loss,
            "--binarize", binarize, "--bsn-init", bsn_init, "--bsn-calib-patches", "64"]
    assert train_codec.main(args) == 0
    assert ('"bsn_fit"' in capsys.readouterr().out) == (bsn_init == "fit")  # the calibrated conversion ran
    res = json.loads((out / "result.json").read_text())
    assert set(res["val_psnr"]) == {"32", "64"}
    from megabit.codec.api import load_codec

    c = load_codec(out / "model.pt")
    assert c.model.cfg.norm == "bsn" and c.bit_probs.shape == (64, 6)
    # resume of a finished run is a no-op that still writes the model
    assert train_codec.main(args + ["--resume"]) == 0


def test_bsn_start_from_qat_bn_end_reproduces_the_runs_transition(tmp_path):
    """qat_bn_end.pt keeps the BN model, its teacher and the config; write_bsn_start converts it as the
    run itself did at the qat_bn -> qat_bsn transition, and the arm folder resumes to a finished model."""
    from megabit.codec import train as tr
    from megabit.models.patch_codec import PatchCodecConfig

    d = _photos(tmp_path)
    tcfg = tr.TrainCodecConfig(minutes=(0.01, 0.01, 0.0, 0.0), batch_patches=8, batch_crops=2, crop=64, n_val=2,
                               bsn_calib_patches=64, threads=1, bsn_init="quantile")
    tr.train_codec(d, tmp_path / "run", tcfg, PatchCodecConfig.tiny(), log=lambda s: None)
    bn_end = tmp_path / "run" / "qat_bn_end.pt"
    obj = torch.load(bn_end, map_location="cpu", weights_only=True)
    assert obj["teacher"] is not None and obj["train_config"]["bsn_calib_patches"] == 64
    train, _ = tr.split_train_val(tr.load_folder(d), 2)
    # zero qat_bsn and refine minutes: the run's final model is its converted encoder, untouched
    final = torch.load(tmp_path / "run" / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    for meth in ("quantile", "fit"):
        arm = tmp_path / meth
        m = tr.write_bsn_start(arm, bn_end, replace(tcfg, bsn_init=meth), train, log=lambda s: None)
        sd = m.state_dict()
        same = all(torch.equal(sd[k], final[k]) for k in final)
        assert same == (meth == "quantile")  # the run converted by quantile; fit gives other offsets
        st = torch.load(arm / "checkpoint.pt", map_location="cpu", weights_only=False)
        assert st["stage"] == tr.STAGES.index("qat_bsn") and st["teacher"] is not None
        (tmp_path / f"{meth}_start.pt").write_bytes((arm / "checkpoint.pt").read_bytes())
        res = tr.train_codec(d, arm, replace(tcfg, minutes=(0.0, 0.0, 0.01, 0.0)), resume=True, log=lambda s: None)
        assert [r["stage"] for r in res["metrics"]][-1] == "qat_bsn" and (arm / "model.pt").is_file()
    # a qat_bn_end.pt without its teacher (older runs): refused, unless a checkpoint of the run gives it
    torch.save({**obj, "teacher": None, "teacher_config": None}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="no teacher"):
        tr.write_bsn_start(tmp_path / "x", tmp_path / "old.pt", tcfg, train)
    torch.save([1, 2], tmp_path / "list.pt")
    for bn, src in ((tmp_path / "list.pt", None), (tmp_path / "old.pt", tmp_path / "list.pt")):
        with pytest.raises(ValueError, match="is not a train-codec"):
            tr.write_bsn_start(tmp_path / "z", bn, tcfg, train, teacher_from=src)
    assert not (tmp_path / "z").exists() and not (tmp_path / "x").exists()  # no half-made run folder
    m = tr.write_bsn_start(tmp_path / "y", tmp_path / "old.pt", tcfg, train, teacher_from=tmp_path / "fit_start.pt")
    assert all(torch.equal(v, final[k]) for k, v in m.state_dict().items())


def test_bundled_model_roundtrip(tmp_path):
    from megabit.codec.registry import DEFAULT_MODEL, asset_path

    if not asset_path(DEFAULT_MODEL).is_file():
        pytest.skip("no bundled codec model")
    src = _img(tmp_path / "a.png", size=(50, 37))
    assert megabit_main(["compress", str(src), "-o", str(tmp_path / "a.mbc"), "--rate", "0.125"]) == 0
    assert megabit_main(["decompress", str(tmp_path / "a.mbc"), "-o", str(tmp_path / "a.png.out.png")]) == 0
    assert Image.open(tmp_path / "a.png.out.png").size == (50, 37)


def test_train_codec_init_trains_the_decoder_only(tmp_path, tiny_model_file, small_batches):
    """--init: encoder frozen, bit table kept, so the encoder hash (and old files) stay valid."""
    d = _photos(tmp_path)
    out = tmp_path / "run"
    from megabit.codec.api import load_codec, model_hash

    args = ["--data-root", str(d), "--out", str(out), "--init", str(tiny_model_file),
            "--minutes", "5", "5", "5", "0.01", "--device", "cpu", "--lr-refine-dec", "1.0"]
    assert train_codec.main(args) == 0
    old, new = load_codec(tiny_model_file), load_codec(out / "model.pt")
    for (k, a), b in zip(old.model.g_a.state_dict().items(), new.model.g_a.state_dict().values()):
        assert torch.equal(a, b), k
    assert np.array_equal(old.bit_probs, new.bit_probs)
    assert model_hash(old.model, old.bit_probs) == model_hash(new.model, new.bit_probs)
    changed = [k for k, v in new.model.refine.state_dict().items() if not torch.equal(v, old.model.refine.state_dict()[k])]
    assert changed, "the refinement module did not train"
    res = json.loads((out / "result.json").read_text())
    assert res["init"] == str(tiny_model_file)
    # only the refine stage ran: every metric record belongs to it
    assert {m["stage"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())} == {"refine"}


def test_train_codec_init_refuses_an_unfinished_model(tmp_path):
    from megabit.codec.train import load_init, save_codec
    from megabit.models.patch_codec import PatchCodec, PatchCodecConfig

    p = tmp_path / "float.pt"
    save_codec(PatchCodec(PatchCodecConfig.tiny().with_(quantize=False)), p)
    with pytest.raises(ValueError, match="not a finished codec"):
        load_init(str(p))
    with pytest.raises(ValueError, match="not found|unknown codec model"):
        load_init(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a patch codec model file"):
        load_init(str(tmp_path / "junk.pt"))


def test_train_codec_init_refine_warm_starts_only_the_refinement(tmp_path, tiny_model_file, small_batches):
    """--init-refine: a fresh run (new encoder) whose refinement module starts from another model's."""
    from megabit.codec.api import load_codec

    d = _photos(tmp_path)
    out = tmp_path / "run"
    # all stage budgets ~0: the refine module must come out as the init model's
    args = ["--data-root", str(d), "--out", str(out), "--init-refine", str(tiny_model_file), "--tiny",
            "--minutes", "0.001", "0.001", "0.001", "0", "--device", "cpu"]
    assert train_codec.main(args) == 0
    with pytest.raises(ValueError, match="fresh runs"):
        train_codec.main(["--data-root", str(d), "--out", str(tmp_path / "r2"), "--init", str(tiny_model_file),
                          "--init-refine", str(tiny_model_file), "--minutes", "0", "0", "0", "0"])
    assert not (tmp_path / "r2").exists()
    old, new = load_codec(tiny_model_file), load_codec(out / "model.pt")
    for k, v in old.model.refine.state_dict().items():
        assert torch.equal(v, new.model.refine.state_dict()[k]), k
    # the encoder is a fresh one (trained from scratch), not the init model's
    assert any(not torch.equal(v, new.model.g_a.state_dict()[k]) for k, v in old.model.g_a.state_dict().items())


def test_files_of_every_bundled_model_still_decode(tmp_path):
    """A new default model must not orphan files written with an older bundled one: the .mbc header's
    model id picks the bundled model that wrote it."""
    from megabit.codec.registry import DEFAULT_MODEL, MODELS, asset_path

    names = [n for n, _ in MODELS.values() if asset_path(n).is_file()]
    if len(names) < 2:
        pytest.skip("fewer than two bundled codec models")
    src = _img(tmp_path / "a.png", size=(40, 33))
    for n in names:
        f = tmp_path / f"{n}.mbc"
        args = ["compress", str(src), "-o", str(f), "--rate", "0.125"] + ([] if n == DEFAULT_MODEL else ["--model", n])
        assert megabit_main(args) == 0
        assert megabit_main(["decompress", str(f), "-o", str(tmp_path / f"{n}.png")]) == 0
        assert Image.open(tmp_path / f"{n}.png").size == (40, 33)
    assert len({(tmp_path / f"{n}.mbc").read_bytes() for n in names}) == len(names)


def test_eval_codec_rates_in_bits_or_bpp():
    p = eval_codec.build_parser()
    assert p.parse_args(["--data-root", "x", "--rates", "0.125", "256", "0.5"]).rates == [128, 256, 512]
    for bad in ("0.3", "abc", "0", "-256"):
        with pytest.raises(SystemExit):
            p.parse_args(["--data-root", "x", "--rates", bad])


def test_train_codec_init_stage_qat_bsn_trains_encoder_and_decoder(tmp_path, tiny_model_file, small_batches):
    """--init-stage qat_bsn: the encoder (still BSN, still quantized) and g_s train, then the refine
    stage; the bit table is refitted, so the model hash changes (a new model)."""
    from megabit.codec.api import load_codec, model_hash

    d = _photos(tmp_path)
    out = tmp_path / "run"
    args = ["--data-root", str(d), "--out", str(out), "--init", str(tiny_model_file), "--init-stage", "qat_bsn",
            "--minutes", "5", "5", "0.01", "0.01", "--device", "cpu"]
    assert train_codec.main(args) == 0
    old, new = load_codec(tiny_model_file), load_codec(out / "model.pt")
    assert new.model.cfg.quantize and new.model.cfg.norm == "bsn"
    assert any(not torch.equal(v, new.model.g_a.state_dict()[k]) for k, v in old.model.g_a.state_dict().items())
    assert model_hash(old.model, old.bit_probs) != model_hash(new.model, new.bit_probs)
    res = json.loads((out / "result.json").read_text())
    assert res["init_stage"] == "qat_bsn"
    # the float / qat_bn minutes are skipped: the records are qat_bsn then refine
    stages = [m["stage"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert stages[0] == "qat_bsn" and stages[-1] == "refine" and set(stages) == {"qat_bsn", "refine"}
    with pytest.raises(SystemExit):
        train_codec.main(args[:-7] + ["--init-stage", "float", "--minutes", "0", "0", "0", "0"])


def test_budget_of_a_codec_counts_its_encoder_as_its_raw_packed_file(tmp_path, tiny_model_file, capsys):
    """`megabit budget` on a codec (model.pt or its packed encoder) = the raw .mbit's weight and offset bits."""
    from megabit.fmt.mbit import inspect_mbit, read_mbit
    from megabit.models.patch_codec import budget

    assert megabit_main(["budget", str(tiny_model_file), "--json"]) == 0
    t = json.loads(capsys.readouterr().out)
    cfg = torch.load(tiny_model_file, map_location="cpu", weights_only=False)["config"]
    assert t["layers"][-1]["name"] == "code" and t["layers"][-1]["weights"] == cfg["code_channels"] * cfg["enc_layers"][-1]["out"]
    raw = tmp_path / "enc.mbit"
    assert megabit_main(["pack", str(tiny_model_file), "-o", str(raw), "--coder", "raw"]) == 0
    capsys.readouterr()
    ins = inspect_mbit(read_mbit(raw))
    assert [r["weight_bits"] for r in t["layers"]] == [r["coded_bits"] for r in ins["layers"]]
    offsets = sum(r["norm_bits"] for r in t["layers"]) - len(t["layers"]) * cfg["shift_bits"]
    assert offsets == 8 * ins["norm_bytes"]  # offsets byte-aligned per layer here; the shifts sit in headers
    # the packed file: per-layer rows of the model, total = every byte of the file
    assert megabit_main(["budget", str(raw), "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["layers"] == t["layers"] and f["total_bits"] == 8 * raw.stat().st_size
    assert f["raw_total_bits"] == t["total_bits"] == budget(read_mbit(raw).codec_config)["total_bits"]


def test_train_codec_init_adds_a_code_context_and_keeps_the_context_models(tmp_path, tiny_codec, small_batches):
    """--init with --code-context: the decoder gains a (trained) cross-patch context module, the
    encoder hash is unchanged (old files decode with the new model), and the init's second-stage
    context models travel into the new model.pt, so it still compresses with --entropy ctx."""
    from megabit.codec.api import compress_image, decompress_bytes, load_codec
    from megabit.codec.train import save_codec

    from .test_codec_context import random_model

    init = tmp_path / "init.pt"
    ctx, lin = random_model(4, 5, 1, hidden=2), random_model(4, 5, 2)
    save_codec(tiny_codec.model, init, {"bit_probs": torch.from_numpy(tiny_codec.bit_probs),
                                        "ctx_model": ctx.to_bytes(), "ctx_alt": {"linear": lin.to_bytes()}})
    d, out = _photos(tmp_path), tmp_path / "run"
    args = ["--data-root", str(d), "--out", str(out), "--init", str(init), "--minutes", "5", "5", "5", "0.01",
            "--device", "cpu", "--code-context", "8"]
    assert train_codec.main(args) == 0
    old, new = load_codec(init), load_codec(out / "model.pt")
    assert new.model.cfg.code_context == 8 and new.model_hash == old.model_hash
    assert any(v.abs().max() > 0 for v in new.model.ctx.out.state_dict().values()), "the context module did not train"
    assert new.ctx.digest() == ctx.digest() and new.ctx_alt["linear"].digest() == lin.digest()
    img = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    data = compress_image(img, old, 64, entropy="ctx")
    assert decompress_bytes(data, new).shape == img.shape  # a file of the init model decodes with the new one
    assert megabit_main(["train-codec", "--data-root", str(d), "--out", str(tmp_path / "r2"),
                         "--code-context", "-1"]) == 2
