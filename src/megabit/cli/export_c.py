"""`megabit export-c MODEL.mbit -o OUT_DIR`: C99 project for a microcontroller (weights decoded on the fly).

MODEL is a packed .mbit file (raw- or tANS-coded; a classifier or a patch encoder) or a bundled name:
nqe-1mbit (classifier) or codec-nested (its patch encoder). OUT_DIR gets
model.h/model.c, the runtime, main.c and memory_map.json; build it with
`gcc -std=c99 -Wall -Wextra -Werror -O2 *.c -o model` (or pass --build).
"""

from __future__ import annotations

import argparse
import json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit export-c", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="packed .mbit file or bundled name (nqe-1mbit-ans-hr, nqe-1mbit-hr, nqe-1mbit, codec-nested)")
    p.add_argument("-o", "--output", required=True, help="output directory (created; files overwritten)")
    p.add_argument("--image-size", type=int, nargs=2, default=(32, 32), metavar=("H", "W"),
                   help="input height and width the static buffers are sized for (default 32 32)")
    p.add_argument("--lut", choices=["auto", "flash", "ram"], default="auto",
                   help="tANS decode tables as const arrays (flash) or built in RAM from the frequency tables; "
                        "auto (default): flash if the flash data then fits in 1 Mbit, else ram")
    p.add_argument("--build", action="store_true", help="also compile OUT_DIR/model with the host C compiler")
    p.add_argument("--json", action="store_true", help="print the memory map as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from megabit.export.c import compile_c, export_c

    res = export_c(a.model, a.output, image_size=tuple(a.image_size), lut=a.lut)
    mm = res.memory_map
    exe = None
    if a.build:
        try:
            exe = compile_c(res.out_dir)
        except RuntimeError as e:  # a bug in the exporter, not a user error: keep the compiler's words
            raise ValueError(str(e).replace("\n", " | ")) from None
    if a.json:
        print(json.dumps(mm | ({"executable": str(exe)} if exe else {})))
        return 0
    f, r, b = mm["flash"], mm["ram"], mm["budget"]
    print(f"{res.out_dir}: {', '.join(p.name for p in res.files)}")
    print(f"flash: {f['data_total']:,} B data ({', '.join(f'{k} {v:,}' for k, v in f['data'].items())}) "
          f"+ ~{f['code_estimate']:,} B code = {f['total']:,} B")
    print(f"ram:   {r['total']:,} B ({', '.join(f'{k} {v:,}' for k, v in r['buffers'].items())})")
    print(f"1 Mbit budget: flash data {b['flash_data_bits']:,} bits -> {'fits' if b['flash_data_fits'] else 'DOES NOT FIT'}"
          + ("" if mm["lut"] == "ram" or b["flash_data_fits"] else " (try --lut ram)") + f" [decode tables: {mm['lut']}]")
    print(f"build: {exe}" if exe else f"build: cd {res.out_dir} && gcc -std=c99 -Wall -Wextra -Werror -O2 *.c -o model")
    return 0
