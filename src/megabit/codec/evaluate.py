"""Rate-distortion evaluation of the patch codec against classical anchors (behind ``megabit eval-codec``).

For every image and every rate (bits/patch) it records, from **real file sizes**:

* ``bpp_fixed``: the fixed-rate .mbc (raw packed code bits, header and CRC included);
* ``bpp_real``: the .mbc as written by ``megabit compress`` (``entropy="auto"``: rANS-coded bits
  when smaller), decoded end to end from those bytes;
* PSNR (RGB), MS-SSIM (RGB) and blockiness of the full PURENET output and of the ablation without
  the refinement module (per-patch decoding + tiling only);
* anchors (JPEG/WebP/AVIF/HEIF) at the largest quality whose real size is <= ``bpp_fixed``.

Anchor results depend only on the image and the target size, so they can be cached in a JSON file
(``anchor_cache``) and reused between model versions.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ..data.images import list_images, load_rgb, pad_to_multiple
from ..fmt.mbc import CRC, HEADER
from ..models.patch_codec import PATCH
from . import context_model as cmod
from . import entropy_model as em
from .anchors import available_anchors, encode_at_bpp
from .api import Codec, _refine_tiled, _to_tensor, coded_files, decode_header_bits, encode_bits_of, reconstruct
from .metrics import blockiness, ms_ssim, psnr
from .search import SearchConfig, search_bits

__all__ = ["evaluate_codec", "fixed_bpp", "machine_info", "plot_rd", "PUBLISHED"]

PUBLISHED = ("jpeg", "webp", "bpg_444_x265_ycbcr", "vtm", "compressai-bmshj2018-factorized_mse_cpu",
             "compressai-bmshj2018-hyperprior_mse_cpu", "compressai-mbt2018_mse_cpu", "compressai-cheng2020-anchor_mse_cpu")


def fixed_bpp(width: int, height: int, rate_bits: int, patch: int = 32) -> float:
    """Real bpp of a fixed-rate .mbc file (header + packed bits + CRC)."""
    p = math.ceil(width / patch) * math.ceil(height / patch)
    return 8 * (HEADER.size + CRC.size + (p * rate_bits + 7) // 8) / (width * height)


def machine_info() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count_visible": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _to_uint8(x: torch.Tensor, h: int, w: int) -> np.ndarray:
    return x[0, :, :h, :w].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _quality(ref: np.ndarray, out: np.ndarray) -> dict:
    return {"psnr": round(psnr(ref, out), 4), "ms_ssim": round(ms_ssim(ref, out), 5), "blockiness": round(blockiness(out), 4)}


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return round(float(np.mean(vals)), 5) if vals else None


def anchor_cache_from_results(*paths: str | os.PathLike) -> dict:
    """Anchor-cache entries (``"image|rate|anchor"``) taken from earlier ``eval-codec --json`` results.

    Anchor results depend only on the image and the target size (``bpp_fixed``), so a finished
    evaluation of one model can supply them for the next; the image size and target are stored in the
    key's row and checked again when the cache is used. Partial or malformed files are refused."""
    cache: dict = {}
    for path in paths:
        try:
            d = json.loads(Path(path).read_text())
            per = d["per_image"]
            rows = [row for rs in per.values() for row in rs]
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
            raise ValueError(f"not an eval-codec result file: {path} ({type(e).__name__})") from None
        if d.get("partial"):
            raise ValueError(f"{path} is a partial result; anchors are taken from finished evaluations only")
        for row in rows:
            for a in d.get("anchors", []):
                if isinstance(row.get(a), dict):
                    cache[f"{row['image']}|{row['rate_bits']}|{a}"] = {**row[a], "_size": [row["width"], row["height"]],
                                                                        "_bpp_fixed": row["bpp_fixed"]}
    return cache


def evaluate_codec(
    data_root: str | os.PathLike,
    codec: Codec | None,
    rates: tuple[int, ...] = (128, 256, 512),
    anchors: tuple[str, ...] | None = None,
    limit: int | None = None,
    anchor_cache: str | os.PathLike | None = None,
    progress: bool = True,
    partial_json: str | os.PathLike | None = None,
    extra: dict | None = None,
    seed_cache: dict | None = None,
    search: SearchConfig | None = None,
    anchors_at_real: tuple[str, ...] = (),
) -> dict:
    """Evaluate on every image of ``data_root``; ``codec=None`` evaluates the anchors only.

    ``anchors_at_real``: anchors also encoded at the model's real (entropy-coded) rate of each image,
    ``row["jpeg@real"]`` etc. (not cached: the target depends on the model), so the PSNR gap is read
    at the same bpp as the file megabit writes, not only at the fixed rate.

    ``search``: encoder-side code search (:mod:`megabit.codec.search`); each row then also holds the
    encoder-only result of the same image (``no_search``), so the gain is paired.

    ``partial_json``: rewrite the result (``"partial": true``) there after every image."""
    files = list_images(data_root)[:limit]
    anchors = tuple(available_anchors()) if anchors is None else tuple(anchors)
    cache: dict = {}
    if anchor_cache and Path(anchor_cache).is_file():
        cache = json.loads(Path(anchor_cache).read_text())
    for k, v in (seed_cache or {}).items():
        cache.setdefault(k, v)
    rows: dict[int, list[dict]] = {r: [] for r in rates}
    t_model = 0.0
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc=f"eval {Path(data_root).name}", unit="img")
    for f in it:
        img = load_rgb(f)
        h, w = img.shape[:2]
        for r in rates:
            row: dict = {"image": f.name, "width": w, "height": h, "rate_bits": r, "bpp_fixed": round(fixed_bpp(w, h, r), 5)}
            if codec is not None:
                t0 = time.time()
                bits, gh, gw = encode_bits_of(img, codec, r)
                if search is not None and search.steps:
                    enc_bits = bits
                    bits = search_bits(codec, _to_tensor(pad_to_multiple(img, PATCH)), enc_bits, r, search)
                    x0 = reconstruct(enc_bits, gh, gw, r, codec)
                    row["no_search"] = {**_quality(img, _to_uint8(x0, h, w)),
                                        "ideal_bpp_model": round(em.ideal_bits(enc_bits, gh, gw, codec.bit_probs) / (w * h), 5),
                                        "bits_changed": round(float((enc_bits != bits).mean()), 5)}
                coded = coded_files(bits, gh, gw, codec, w, h, 3, r)
                ans = coded["ans"]
                if "ctx" in coded:
                    row.update({"bpp_ctx": round(8 * len(coded["ctx"]) / (w * h), 5),
                                "ideal_bpp_ctx": round(cmod.ideal_bits(bits, gh, gw, codec.ctx) / (w * h), 5)})
                auto = min(coded.values(), key=len)
                # end to end from the bytes actually written: parse, check, entropy-decode the bits
                _, dec_bits, _ = decode_header_bits(auto, codec)
                if not np.array_equal(dec_bits, bits):
                    raise RuntimeError(f"bitstream round trip failed on {f.name}")
                xp = reconstruct(dec_bits, gh, gw, r, codec, refine=False)  # PURENET without refinement
                with torch.no_grad():
                    xr = _refine_tiled(codec.model, xp / 255.0, r / codec.model.cfg.max_bits) * 255.0
                t_model += time.time() - t0
                out, norefine = (_to_uint8(t, h, w) for t in (xr, xp))
                row.update({"bpp_ans": round(8 * len(ans) / (w * h), 5), "bpp_real": round(8 * len(auto) / (w * h), 5),
                            "ideal_bpp_model": round(em.ideal_bits(bits, gh, gw, codec.bit_probs) / (w * h), 5)})
                row.update(_quality(img, out))
                row["no_refine"] = _quality(img, norefine)
                for a in anchors_at_real:
                    res = encode_at_bpp(img, a, row["bpp_real"])
                    row[f"{a}@real"] = {"bpp": round(res["bpp"], 5), "over_target": res["over_target"],
                                        **_quality(img, res["decoded"])}
            for a in anchors:
                key = f"{f.name}|{r}|{a}"
                hit = cache.get(key)
                if hit is not None and (hit.get("_size", [w, h]) != [w, h] or hit.get("_bpp_fixed", row["bpp_fixed"]) != row["bpp_fixed"]):
                    hit = None  # a different image under the same name: recompute
                if hit is None:
                    res = encode_at_bpp(img, a, row["bpp_fixed"])
                    q = _quality(img, res["decoded"])
                    cache[key] = {"quality": res["quality"], "bpp": round(res["bpp"], 5), "over_target": res["over_target"], **q,
                                  "_size": [w, h], "_bpp_fixed": row["bpp_fixed"]}
                row[a] = {k: v for k, v in cache[key].items() if not k.startswith("_")}
            rows[r].append(row)
        if anchor_cache:
            from ..utils import atomic_write_text

            atomic_write_text(anchor_cache, json.dumps(cache))
        if partial_json:
            from ..utils import atomic_write_text

            part = {**_result(data_root, codec, rates, anchors, rows, t_model, len(rows[rates[0]]), len(files), search), **(extra or {})}
            atomic_write_text(partial_json, json.dumps(part, indent=1))
    return {**_result(data_root, codec, rates, anchors, rows, t_model, len(files), len(files), search), **(extra or {})}


def summarize(rows: dict, anchors, with_model: bool = True) -> dict:
    """Means per rate of per-image rows ``{rate: [row, ...]}`` (the ``mean`` of an eval-codec result)."""
    summary: dict = {}
    for r, rs in rows.items():
        m: dict = {"bpp_fixed": _mean(rs, "bpp_fixed")}
        if with_model:
            for k in ("bpp_real", "bpp_ans", "ideal_bpp_model", "psnr", "ms_ssim", "blockiness"):
                m[k] = _mean(rs, k)
            m["no_refine"] = {k: _mean([x["no_refine"] for x in rs], k) for k in ("psnr", "ms_ssim", "blockiness")}
            for k in ("bpp_ctx", "ideal_bpp_ctx"):
                if rs and k in rs[0]:
                    m[k] = _mean(rs, k)
            for k in [k for k in (rs[0] if rs else {}) if k.endswith("@real")]:
                sub = [x[k] for x in rs]
                m[k] = {q: _mean(sub, q) for q in ("bpp", "psnr", "ms_ssim", "blockiness")}
                m[k]["n_over_target"] = sum(bool(x["over_target"]) for x in sub)
            if rs and "no_search" in rs[0]:
                m["no_search"] = {k: _mean([x["no_search"] for x in rs], k)
                                  for k in ("psnr", "ms_ssim", "blockiness", "ideal_bpp_model", "bits_changed")}
        for a in anchors:
            sub = [x[a] for x in rs]
            m[a] = {k: _mean(sub, k) for k in ("bpp", "psnr", "ms_ssim", "blockiness")}
            m[a]["n_over_target"] = sum(bool(x["over_target"]) for x in sub)
        summary[str(r)] = m
    return summary


def _result(data_root, codec, rates, anchors, rows, t_model, n_done, n_total, search=None) -> dict:
    summary = summarize({r: rows[r] for r in rates}, anchors, codec is not None)
    return {
        "dataset": str(data_root), "n_images": n_done, "n_images_planned": n_total, "partial": n_done < n_total,
        "rates_bits_per_patch": list(rates),
        "model": None if codec is None else {"name": codec.name, "hash": codec.model_hash.hex(),
                                             "config": codec.model.cfg.to_dict(),
                                             "search": (search or SearchConfig()).to_dict()},
        "codec_seconds_per_image_all_rates": round(t_model / max(1, n_done), 3) if codec is not None else None,
        "anchors": list(anchors), "machine": machine_info(), "mean": summary,
        "per_image": {str(r): rows[r] for r in rates},
    }


def _published(root: str | os.PathLike) -> list[tuple[str, list, list, list]]:
    out = []
    for name in PUBLISHED:
        p = Path(root) / f"{name}.json"
        if not p.is_file():
            continue
        d = json.loads(p.read_text())
        res = d["results"]
        out.append((d.get("name", name), res["bpp"], res.get("psnr-rgb", []), res.get("ms-ssim-rgb", [])))
    return out


def plot_rd(result: dict, path: str | os.PathLike, published_root: str | os.PathLike | None = None, max_bpp: float = 1.0) -> None:
    """PSNR and MS-SSIM vs bpp: our codec (fixed and real rate, without refinement), the matched
    anchors and (for Kodak) CompressAI's published points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    rates = sorted(result["mean"], key=int)
    mean = [result["mean"][r] for r in rates]
    for ax, key in zip(axes, ("psnr", "ms_ssim")):
        if published_root:
            for name, bpp, ps, ms in _published(published_root):
                ys = ps if key == "psnr" else ms
                pts = [(b, y) for b, y in zip(bpp, ys) if b <= max_bpp]
                if pts:
                    ax.plot(*zip(*pts), ":", lw=1, alpha=0.6, label=f"{name} (published)")
        for a in result["anchors"]:
            ax.plot([m[a]["bpp"] for m in mean], [m[a][key] for m in mean], "s--", ms=4, label=f"{a.upper()} (Pillow, matched)")
        if result.get("model"):
            ax.plot([m["bpp_fixed"] for m in mean], [m[key] for m in mean], "o-", c="k", lw=2, label="megabit patch codec (fixed rate)")
            ax.plot([m["bpp_real"] for m in mean], [m[key] for m in mean], "o--", c="tab:red", label="megabit, entropy-coded bits (real rate)")
            ax.plot([m["bpp_fixed"] for m in mean], [m["no_refine"][key] for m in mean], "x:", c="gray",
                    label="megabit without refinement")
        ax.set_xlabel("bpp (real file size)")
        ax.set_ylabel("PSNR RGB (dB)" if key == "psnr" else "MS-SSIM RGB")
        ax.grid(alpha=0.3)
        ax.set_xlim(0, max_bpp)
    axes[0].legend(fontsize=6.5, loc="lower right")
    fig.suptitle(f"{Path(result['dataset']).name}: {result['n_images']} images", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
