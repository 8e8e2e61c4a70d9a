"""``megabit decompress IN.mbc|FOLDER -o OUT.png|FOLDER [--model M] [--no-refine] [--rgb]``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit decompress", description="Decompress .mbc bitstreams to PNG (RGB; gray for a gray source).")
    p.add_argument("input", help="a .mbc file, or a folder of .mbc files")
    p.add_argument("-o", "--output", required=True, help="output PNG (or folder when the input is a folder)")
    p.add_argument("--model", default=None, help="model name or .pt file (default: the bundled model named in the file)")
    p.add_argument("--no-refine", action="store_true", help="skip the refinement module (ablation: visible patch seams)")
    p.add_argument("--rgb", action="store_true", help="always write RGB (default: gray PNG when the source was gray)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from ..codec.api import decompress_file, load_codec

    src, dst = Path(a.input), Path(a.output)
    if not src.exists():
        raise ValueError(f"no such file or folder: {src}")
    codec = load_codec(a.model) if a.model else None
    if src.is_dir():
        from tqdm import tqdm

        files = sorted(p for p in src.iterdir() if p.suffix == ".mbc")
        if not files:
            raise ValueError(f"no .mbc files in {src}")
        dst.mkdir(parents=True, exist_ok=True)
        cache: dict = {}
        for f in tqdm(files, desc="decompress", unit="img"):
            c = codec
            if c is None:  # the bundled model named in each file, loaded once per id
                from ..codec.registry import MODELS
                from ..fmt.mbc import unpack_mbc

                h, _ = unpack_mbc(f.read_bytes())
                if h.model_id not in MODELS:
                    raise ValueError(f"{f.name} needs a model file (model id {h.model_id}); pass --model")
                if h.model_id not in cache:
                    cache[h.model_id] = load_codec(MODELS[h.model_id][0])
                c = cache[h.model_id]
            decompress_file(f, dst / (f.stem + ".png"), c, refine=not a.no_refine, rgb=a.rgb)
        print(f"{len(files)} files -> {dst}")
    else:
        w, h = decompress_file(src, dst, codec, refine=not a.no_refine, rgb=a.rgb)
        print(f"{src} -> {dst} ({w}x{h})")
    return 0
