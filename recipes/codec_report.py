"""Markdown tables from results/codec_*.json (pasted into docs/codec.md).

    python recipes/codec_report.py results/codec_kodak.json results/codec_clic2025-val-half.json
"""
import json
import sys

for path in sys.argv[1:]:
    r = json.load(open(path))
    print(f"\n### {r['dataset'].rstrip('/').split('/')[-1]} ({r['n_images']} images{', PARTIAL' if r.get('partial') else ''}) — `{path}`\n")
    if r.get("label"):
        print(f"{r['label']}; {r.get('hardware', '')}.\n")
    an = r["anchors"]
    head = "| bits/patch | bpp fixed | bpp real (rANS) | PSNR | MS-SSIM | blockiness | no-refine PSNR / blockiness | " + " | ".join(
        f"{a.upper()} bpp / PSNR / MS-SSIM" for a in an) + " |"
    print(head)
    print("|" + "---|" * (7 + len(an)))
    for rate, m in sorted(r["mean"].items(), key=lambda kv: int(kv[0])):
        cells = [rate, f"{m['bpp_fixed']:.4f}"]
        if m.get("psnr") is not None:
            nr = m["no_refine"]
            cells += [f"{m['bpp_real']:.4f}", f"{m['psnr']:.2f}", f"{m['ms_ssim']:.4f}", f"{m['blockiness']:.2f}",
                      f"{nr['psnr']:.2f} / {nr['blockiness']:.2f}"]
        else:
            cells += ["-"] * 5
        for a in an:
            x = m[a]
            cells.append(f"{x['bpp']:.4f} / {x['psnr']:.2f} / {x['ms_ssim']:.4f}" + (f" ({x['n_over_target']} over)" if x["n_over_target"] else ""))
        print("| " + " | ".join(cells) + " |")
    real = [a for a in ("jpeg", "webp", "avif", "heif") if f"{a}@real" in next(iter(r["mean"].values()))]
    if real:  # the second stages and the anchors at the real rate of the file megabit writes
        print("\n| bits/patch | bpp: fixed / bit table / context model (real) | PSNR | "
              + " | ".join(f"{a.upper()} at <= real size: bpp / PSNR / MS-SSIM | gap dB" for a in real) + " |")
        print("|" + "---|" * (3 + 2 * len(real)))
        for rate, m in sorted(r["mean"].items(), key=lambda kv: int(kv[0])):
            cells = [rate, f"{m['bpp_fixed']:.4f} / {m['bpp_ans']:.4f} / {m.get('bpp_ctx', float('nan')):.4f}",
                     f"{m['psnr']:.2f}"]
            for a in real:
                x = m[f"{a}@real"]
                cells += [f"{x['bpp']:.4f} / {x['psnr']:.2f} / {x['ms_ssim']:.4f}"
                          + (f" ({x['n_over_target']} over)" if x["n_over_target"] else ""), f"{m['psnr'] - x['psnr']:+.2f}"]
            print("| " + " | ".join(cells) + " |")
