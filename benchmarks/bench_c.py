"""Throughput of the exported C model vs megabit's PyTorch paths, and its flash/RAM vs 1 Mbit.

    python benchmarks/bench_c.py [--model nqe-1mbit] [--encoder codec-nested] [--n 100] [--trials 3]

Runs, on the same images in the same run: the compiled C export (gcc -O2, and -O3 -march=native;
weights decoded on the fly for every image, single thread), the fake-quant PyTorch model
(`mbit_to_model`) and the integer Python reference (`IntegerNQE`). Anchor: the fake-quant
PyTorch model; ratios are C / anchor. Each path is timed by wall clock and by CPU time (the C
process's user+sys from getrusage, the Python process's `time.process_time`, all threads), since
a shared machine makes wall clock noisy: `*_cpu_img_s` is images per CPU-second. The C logits are
checked bit-exact against the integer reference. Without a bundled model, a random model of the
nqe-1mbit architecture is used (its accuracy is meaningless; its speed and size are not) and the
result says so. The second shipped model, the patch encoder of the bundled codec (``--encoder``),
is timed the same way on the 384 patches of the bundled Kodak image (anchor: the codec's PyTorch
``compress``; C bits checked against the integer reference). Saves results/bench_c.json with the machine, versions, trials, medians and this
script's source.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from megabit.data import load_cifar10
from megabit.export import IntegerNQE
from megabit.export.c import compile_c, export_c, find_cc, object_sizes
from megabit.fmt.mbit import encode_mbit, mbit_to_integer, mbit_to_model, read_mbit
from megabit.hub import DEFAULT_CLASSIFIER, bundled_classifier_path, sample_cifar_path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _run_c_timed(exe: Path, x: np.ndarray, trials: int) -> tuple[dict, str]:
    """Run the binary on x (stdin) trials + 1 times (the first is a warm-up): (rates, last stdout)."""
    data = x.tobytes()
    walls, cpus, out = [], [], b""
    for _ in range(trials + 1):  # first run: warm-up (page cache, CPU frequency)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run([str(exe)], input=data, capture_output=True, check=True).stdout
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return _rates(len(x), walls[1:], cpus[1:]), out.decode()


def time_c(exe: Path, x: np.ndarray, trials: int) -> tuple[dict, np.ndarray]:
    rates, out = _run_c_timed(exe, x, trials)
    return rates, np.asarray([list(map(int, l.split()))[1:] for l in out.splitlines()], dtype=np.int64)


def time_py(fn, n: int, trials: int) -> dict:
    fn()
    walls, cpus = [], []
    for _ in range(trials):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return _rates(n, walls, cpus)


def _rates(n: int, walls: list[float], cpus: list[float]) -> dict:
    w, c = statistics.median(walls), statistics.median(cpus)
    return {"wall_s": walls, "cpu_s": cpus, "wall_img_s": n / w, "cpu_img_s": n / max(c, 1e-9)}


def time_c_codes(exe: Path, x: np.ndarray, trials: int) -> tuple[dict, np.ndarray]:
    rates, out = _run_c_timed(exe, x, trials)
    return rates, np.asarray([[int(c) for c in l] for l in out.split()], dtype=np.uint8)


def bench_encoder(name: str, trials: int, tmp: Path) -> dict:
    """The bundled codec's patch encoder: C vs PyTorch compress vs the integer reference."""
    from PIL import Image

    from megabit.codec.api import load_codec
    from megabit.codec.demo import DEMO_IMAGE
    from megabit.export import IntegerPatchEncoder
    from megabit.models.patch_codec import patchify

    codec = load_codec(name)
    ie = IntegerPatchEncoder.from_model(codec.model)
    img = torch.from_numpy(np.asarray(Image.open(DEMO_IMAGE).convert("RGB")).copy()).permute(2, 0, 1)[None]
    p = patchify(img).contiguous()
    rate = max(codec.model.cfg.rates)
    with torch.no_grad():
        ref = ie(p).reshape(len(p), -1).numpy()
        out = {"model": f"patch encoder of {codec.name}", "n_patches": len(p), "image": DEMO_IMAGE.name,
               "pytorch_fake_quant": time_py(lambda: codec.model.compress(img.float(), rate), len(p), trials),
               "python_integer": time_py(lambda: ie(p), len(p), trials)}
    anchor = out["pytorch_fake_quant"]
    mm = export_c(name, tmp / "enc").memory_map
    out["memory_map"] = {k: mm[k] for k in ("lut", "flash", "ram", "budget", "macs_per_image")}
    exe = compile_c(tmp / "enc", ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"), exe="enc_O2")
    r, bits = time_c_codes(exe, p.numpy(), trials)
    r["bit_exact_vs_integer"] = bool(np.array_equal(bits, ref))
    r["vs_fake_quant_cpu"] = r["cpu_img_s"] / anchor["cpu_img_s"]
    r["vs_python_integer_cpu"] = r["cpu_img_s"] / out["python_integer"]["cpu_img_s"]
    out["c_O2"] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_CLASSIFIER, help="bundled name or .mbit path")
    ap.add_argument("--encoder", default="codec-nested", help="bundled codec whose patch encoder is timed ('' to skip)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--out", default="results/bench_c.json")
    a = ap.parse_args()
    if find_cc() is None:
        sys.exit("bench_c: no C compiler")

    path = Path(a.model) if Path(a.model).exists() else bundled_classifier_path(a.model)
    if path is not None:
        mbit, src, note = path.read_bytes(), str(path), "trained model"
    else:  # no bundled model yet: a random model with the same architecture (speed and size are real)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import make_bsn_model
        from megabit.models import get_preset

        net0 = IntegerNQE.from_model(make_bsn_model(cfg=get_preset(a.model).with_(name=f"{a.model}-random")))
        mbit, src = encode_mbit(net0, coder="tans"), f"random {a.model} (no bundled model)"
        note = "RANDOM weights with the nqe-1mbit architecture: no trained model was bundled at run time"
    f = read_mbit(mbit)
    net, model = mbit_to_integer(f), mbit_to_model(f).eval()
    x = load_cifar10(sample_cifar_path(), "test").x[: a.n]
    xn = x.numpy()

    res = {"machine": {"platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
                       "loadavg_at_start": os.getloadavg(), "torch_threads": torch.get_num_threads(),
                       "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                       "cc": subprocess.run([find_cc(), "--version"], capture_output=True, text=True).stdout.splitlines()[0]},
           "model": src, "note": note, "coder": f.sections[1].coder, "n_images": len(x), "trials": a.trials,
           "timing": "median over trials; wall clock and CPU time (see docstring)"}

    with torch.no_grad():
        ref = net(x).numpy()
        res["pytorch_fake_quant"] = time_py(lambda: model(x), len(x), a.trials)
        res["python_integer"] = time_py(lambda: net(x), len(x), a.trials)
    anchor = res["pytorch_fake_quant"]
    with tempfile.TemporaryDirectory() as tmp:
        for lut in ("flash", "ram"):
            d = Path(tmp) / lut
            mm = export_c(mbit, d, lut=lut).memory_map
            res[f"memory_map_lut_{lut}"] = {k: mm[k] for k in ("flash", "ram", "budget", "macs_per_image")}
            for tag, flags in (("O2", ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")),
                               ("O3_native", ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O3", "-march=native"))):
                exe = compile_c(d, flags, exe=f"model_{tag}")
                r, logits = time_c(exe, xn, a.trials)
                r["bit_exact_vs_integer"] = bool(np.array_equal(logits, ref))
                r["vs_fake_quant_cpu"] = r["cpu_img_s"] / anchor["cpu_img_s"]
                r["vs_fake_quant_wall"] = r["wall_img_s"] / anchor["wall_img_s"]
                r["vs_python_integer_cpu"] = r["cpu_img_s"] / res["python_integer"]["cpu_img_s"]
                res[f"c_{tag}_lut_{lut}"] = r
            res[f"object_sizes_O2_lut_{lut}"] = object_sizes(d)
        if a.encoder:
            res["patch_encoder"] = bench_encoder(a.encoder, a.trials, Path(tmp))
    res["python_integer"]["vs_fake_quant_cpu"] = res["python_integer"]["cpu_img_s"] / anchor["cpu_img_s"]
    res["source"] = Path(__file__).read_text()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"model: {src} ({note}); {len(x)} images, {a.trials} trials; load {res['machine']['loadavg_at_start']}")
    for k in ("pytorch_fake_quant", "python_integer", "c_O2_lut_flash", "c_O3_native_lut_flash", "c_O2_lut_ram",
              "c_O3_native_lut_ram"):
        r = res[k]
        extra = f"  x{r['vs_fake_quant_cpu']:.2f} vs fake-quant (CPU)" if "vs_fake_quant_cpu" in r else ""
        extra += f"  bit-exact {r['bit_exact_vs_integer']}" if "bit_exact_vs_integer" in r else ""
        print(f"{k:<24} {r['cpu_img_s']:9.1f} img/CPU-s {r['wall_img_s']:9.1f} img/s wall{extra}")
    for lut in ("flash", "ram"):
        mm = res[f"memory_map_lut_{lut}"]
        print(f"lut={lut}: flash {mm['flash']['total']:,} B ({mm['budget']['flash_data_bits']:,} data bits of 1 Mbit: "
              f"{'fits' if mm['budget']['flash_data_fits'] else 'over'}), RAM {mm['ram']['total']:,} B")
    if "patch_encoder" in res:
        e = res["patch_encoder"]
        print(f"{e['model']} ({e['n_patches']} patches): PyTorch {e['pytorch_fake_quant']['cpu_img_s']:.0f}, "
              f"integer {e['python_integer']['cpu_img_s']:.0f}, C -O2 {e['c_O2']['cpu_img_s']:.0f} patches/CPU-s "
              f"(x{e['c_O2']['vs_fake_quant_cpu']:.2f}), bit-exact {e['c_O2']['bit_exact_vs_integer']}; "
              f"flash {e['memory_map']['flash']['total']:,} B, RAM {e['memory_map']['ram']['total']:,} B")


if __name__ == "__main__":
    main()
