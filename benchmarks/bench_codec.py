"""Benchmark: patch-codec encode / decode time on one image vs Pillow JPEG and WebP (same run).

    nice -n 19 python benchmarks/bench_codec.py [--image ../shared/data/kodak/kodim23.png] [--trials 5]
        [--model codec-nested] [--out results/codec_bench.json]

Prints and saves the machine, library versions, trial count and median seconds per call, and the
ratio of each codec step to the anchors' (JPEG / WebP / AVIF / HEIF, whichever this Pillow build has,
at <= the same bpp, found by binary search, with the settings `eval-codec` uses), and Mpixel/s.
Single-threaded torch (the shared 2-core machine of the project). Also times the lossless second
stages alone on the same code bits (bit table = ``entropy_model``, context model = ``context_model``;
numba compiled before timing), and the share of the decode they take; and the adaptive rate
(``compress --bpp``) at the fixed-rate file's size, as ratios to the fixed-rate encode and decode.
"""
import argparse
import json
import statistics
import time

import torch

from megabit.codec.anchors import available_anchors, encode_at_bpp, load_bytes, save_bytes
from megabit.codec import context_model as cmod
from megabit.codec import entropy_model as em
from megabit.codec.api import compress_image, decompress_bytes, encode_bits_of, load_codec
from megabit.codec.evaluate import machine_info
from megabit.data.images import load_rgb
from megabit.utils import atomic_write_text


def median_time(fn, trials):
    ts = []
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default="../shared/data/kodak/kodim23.png")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--model", default=None)
    ap.add_argument("--rate", type=int, default=256)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    img = load_rgb(a.image)
    codec = load_codec(a.model)
    data = compress_image(img, codec, a.rate)
    n_pix = img.shape[0] * img.shape[1]
    bpp = 8 * len(data) / n_pix
    ctx = codec.ctx
    res = {"image": a.image, "shape": list(img.shape), "rate_bits": a.rate, "bpp": bpp, "trials": a.trials,
           "machine": machine_info(), "model": codec.name,
           "ctx_model": None if ctx is None else {"hidden_units_per_channel": 0 if ctx.hidden_weight is None else int(ctx.hidden_weight.shape[1])}}
    res["mbc_encode_s"] = median_time(lambda: compress_image(img, codec, a.rate), a.trials)
    res["mbc_decode_s"] = median_time(lambda: decompress_bytes(data, codec), a.trials)
    # adaptive rate (compress --bpp) held to the fixed-rate file's size: the sender decodes every rate
    adaptive = compress_image(img, codec, bpp=bpp)
    res["adaptive_bpp"] = 8 * len(adaptive) / n_pix
    res["mbc_adaptive_encode_s"] = median_time(lambda: compress_image(img, codec, bpp=bpp), a.trials)
    res["mbc_adaptive_decode_s"] = median_time(lambda: decompress_bytes(adaptive, codec), a.trials)
    res["adaptive_encode_ratio_vs_fixed"] = res["mbc_adaptive_encode_s"] / res["mbc_encode_s"]
    res["adaptive_decode_ratio_vs_fixed"] = res["mbc_adaptive_decode_s"] / res["mbc_decode_s"]
    bits, gh, gw = encode_bits_of(img, codec, a.rate)
    stages = {"table": (em.encode_bits, em.decode_bits, codec.bit_probs)}
    if codec.ctx is not None:
        stages["ctx"] = (cmod.encode, cmod.decode, codec.ctx)
    for name, (enc, dec, m) in stages.items():
        blob = enc(bits, gh, gw, m)
        assert (dec(blob, gh, gw, a.rate, m) == bits).all()  # also compiles the numba kernels
        res[f"{name}_stage_bytes"] = len(blob)
        res[f"{name}_stage_encode_s"] = median_time(lambda: enc(bits, gh, gw, m), a.trials)
        res[f"{name}_stage_decode_s"] = median_time(lambda: dec(blob, gh, gw, a.rate, m), a.trials)
        res[f"{name}_stage_share_of_decode"] = res[f"{name}_stage_decode_s"] / res["mbc_decode_s"]
    # anchors with the exact settings of `eval-codec` (megabit.codec.anchors), at <= the same bpp
    for name in available_anchors():
        q = encode_at_bpp(img, name, bpp)["quality"]
        blob = save_bytes(img, name, q)
        res[f"{name}_quality"] = q
        res[f"{name}_bpp"] = 8 * len(blob) / n_pix
        res[f"{name}_encode_s"] = median_time(lambda: save_bytes(img, name, q), a.trials)
        res[f"{name}_decode_s"] = median_time(lambda: load_bytes(blob, name), a.trials)
        res[f"encode_ratio_vs_{name}"] = res["mbc_encode_s"] / res[f"{name}_encode_s"]
        res[f"decode_ratio_vs_{name}"] = res["mbc_decode_s"] / res[f"{name}_decode_s"]
    for k in [k for k in res if k.endswith(("_encode_s", "_decode_s")) and "_stage_" not in k]:
        res[k[:-2] + "_mpix_per_s"] = n_pix / 1e6 / res[k]
    print(json.dumps(res, indent=1))
    if a.out:
        atomic_write_text(a.out, json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
