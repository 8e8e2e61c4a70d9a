"""Report: the patch codec with encoder-side code search vs the NQE encoder alone, same images.

    python recipes/codec_search_report.py --base results/codec_kodak.json \\
        --parts results/codec_kodak_search80_r256.json [more rate files] \\
        --out results/codec_kodak_search80.json --plot results/codec_rd_kodak_search.png \\
        [--published ../shared/compressai_kodak_results]

``--parts`` are ``megabit eval-codec --search STEPS --json`` results (one or several rate sets, same
model and search settings); they are merged into ``--out``. ``--base`` is the encoder-only evaluation
of the same model: every image's encoder-only PSNR recorded by the search run (``no_search``) must
equal the base file's, which checks that both describe the same model and images. Prints a markdown
table (pasted into docs/codec.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from megabit.codec.evaluate import _published, summarize
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--base", required=True)
ap.add_argument("--parts", nargs="+", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--plot", default=None)
ap.add_argument("--published", default=None)
a = ap.parse_args()

base = json.loads(Path(a.base).read_text())
parts = [json.loads(Path(p).read_text()) for p in a.parts]
first = parts[0]
for p, path in zip(parts, a.parts):
    if p["model"]["hash"] != base["model"]["hash"] or p["model"]["search"] != first["model"]["search"]:
        sys.exit(f"{path}: another model or other search settings than {a.parts[0]} / {a.base}")
    if not p["model"]["search"]["steps"]:
        sys.exit(f"{path} was evaluated without --search")
# parts may split a rate's images (e.g. two halves run on two cores): rows are concatenated per rate
merged = {**first, "per_image": {}, "parts": a.parts, "base": a.base, "dataset": base["dataset"]}
for p, path in zip(parts, a.parts):
    for r, rows in p["per_image"].items():
        have = {x["image"] for x in merged["per_image"].setdefault(r, [])}
        if have & {x["image"] for x in rows}:
            sys.exit(f"{path}: images already given by another part at {r} bits")
        merged["per_image"][r] += rows
for r in merged["per_image"]:
    merged["per_image"][r].sort(key=lambda x: x["image"])
merged["mean"] = summarize(merged["per_image"], merged["anchors"])
merged["n_images"] = min(len(v) for v in merged["per_image"].values())
merged["n_images_planned"] = len(base["per_image"][next(iter(base["per_image"]))])
merged["partial"] = any(p.get("partial") for p in parts) or any(
    len(v) < merged["n_images_planned"] for v in merged["per_image"].values())
merged["rates_bits_per_patch"] = sorted(int(r) for r in merged["mean"])
merged["codec_seconds_per_image_all_rates"] = None  # per part: see the part files

# same model, same images: the search run's encoder-only PSNR must be the base run's
for r, rows in merged["per_image"].items():
    ref = {x["image"]: x for x in base["per_image"].get(r, [])}
    for x in rows:
        b = ref.get(x["image"])
        if b is None:
            sys.exit(f"{a.base} has no {x['image']} at {r} bits")
        if abs(b["psnr"] - x["no_search"]["psnr"]) > 1e-3:
            sys.exit(f"{x['image']} at {r} bits: encoder-only PSNR {x['no_search']['psnr']} != base {b['psnr']}")
        x["no_search"]["bpp_real"] = b["bpp_real"]  # the encoder's bits are the same, so is its file


def mean(rows, f):
    return sum(f(x) for x in rows) / len(rows)


table, curves = [], {"enc": [], "search": []}
for r in sorted(merged["per_image"], key=int):
    rows = merged["per_image"][r]
    m = {"n": len(rows), "enc_bpp": mean(rows, lambda x: x["no_search"]["bpp_real"]),
         "enc_psnr": mean(rows, lambda x: x["no_search"]["psnr"]), "enc_msssim": mean(rows, lambda x: x["no_search"]["ms_ssim"]),
         "bpp": mean(rows, lambda x: x["bpp_real"]), "psnr": mean(rows, lambda x: x["psnr"]),
         "msssim": mean(rows, lambda x: x["ms_ssim"]), "blockiness": mean(rows, lambda x: x["blockiness"]),
         "changed": mean(rows, lambda x: x["no_search"]["bits_changed"])}
    for an in merged["anchors"]:
        m[an] = mean(rows, lambda x: x[an]["psnr"])
        m[an + "_bpp"] = mean(rows, lambda x: x[an]["bpp"])
    merged["mean"][r]["no_search"]["bpp_real"] = m["enc_bpp"]
    merged["mean"][r]["n_images"] = m["n"]
    table.append((r, m))
merged["summary"] = {r: {k: round(v, 5) if isinstance(v, float) else v for k, v in m.items()} for r, m in table}
atomic_write_text(a.out, json.dumps(merged, indent=1))
print(f"wrote {a.out}")

steps = merged["model"]["search"]["steps"]
an = merged["anchors"]
print(f"\n| bits/patch | images | NQE encoder: bpp real / PSNR / MS-SSIM | + search ({steps} steps): bpp real / PSNR / MS-SSIM "
      f"| gain dB | bits changed | blockiness | " + " | ".join(f"{x.upper()} bpp / PSNR" for x in an) + " |")
print("|" + "---|" * (7 + len(an)))
for r, m in table:
    print(f"| {r} | {m['n']} | {m['enc_bpp']:.4f} / {m['enc_psnr']:.2f} / {m['enc_msssim']:.4f} | {m['bpp']:.4f} / "
          f"{m['psnr']:.2f} / {m['msssim']:.4f} | {m['psnr'] - m['enc_psnr']:+.2f} | {100 * m['changed']:.1f} % | "
          f"{m['blockiness']:.2f} | " + " | ".join(f"{m[x + '_bpp']:.4f} / {m[x]:.2f}" for x in an) + " |")

if a.plot:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    if a.published:
        for name, bpp, ps, _ in _published(a.published):
            pts = [(b, y) for b, y in zip(bpp, ps) if b <= 0.6]
            if pts:
                ax.plot(*zip(*pts), ":", lw=1, alpha=0.6, label=f"{name} (published)")
    rates = sorted(base["mean"], key=int)
    for x in an:
        ax.plot([base["mean"][r][x]["bpp"] for r in rates], [base["mean"][r][x]["psnr"] for r in rates], "s--", ms=4,
                label=f"{x.upper()} (Pillow, matched)")
    ax.plot([base["mean"][r]["bpp_real"] for r in rates], [base["mean"][r]["psnr"] for r in rates], "o--", c="k",
            label=f"{first['model']['name']}: NQE encoder (real rate)")
    ax.plot([m["bpp"] for _, m in table], [m["psnr"] for _, m in table], "o-", c="tab:red", lw=2,
            label=f"+ encoder-side code search, {steps} steps (real rate)")
    ax.set_xlabel("bpp (real file size)")
    ax.set_ylabel("PSNR RGB (dB)")
    ax.set_xlim(0, 0.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    ax.set_title(f"{Path(merged['dataset']).name}: {table[0][1]['n']} images", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.plot, dpi=110)
    print(f"wrote {a.plot}")
