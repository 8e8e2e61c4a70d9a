"""Build and run an exported model with the host C compiler (tests, benchmarks, `--build`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

__all__ = ["CFLAGS", "find_cc", "compile_c", "run_c", "object_sizes"]

#: the flags the export is guaranteed to build with
CFLAGS: tuple[str, ...] = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")


def find_cc() -> str | None:
    """The C compiler to use: $CC, else gcc, else cc (None if there is none)."""
    for c in (os.environ.get("CC"), "gcc", "cc"):
        if c and shutil.which(c):
            return c
    return None


def _cc(cc: str | None) -> str:
    cc = cc or find_cc()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    return cc


def compile_c(out_dir: str | os.PathLike, flags: tuple[str, ...] | list[str] = CFLAGS, exe: str = "model",
              cc: str | None = None) -> Path:
    """``cc FLAGS *.c -o exe`` inside out_dir; returns the executable. Raises RuntimeError on failure."""
    d = Path(out_dir)
    srcs = sorted(p.name for p in d.glob("*.c"))
    r = subprocess.run([_cc(cc), *flags, *srcs, "-o", exe], cwd=d, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"C build failed ({' '.join(flags)}):\n{r.stderr[-4000:]}")
    return d / exe


def run_c(exe: str | os.PathLike, images: np.ndarray, timeout: float | None = 600) -> tuple[np.ndarray, np.ndarray]:
    """Feed uint8 NCHW images to a built model on stdin; returns (classes int64[N], logits int64[N, classes])."""
    x = np.ascontiguousarray(np.asarray(images, dtype=np.uint8))
    r = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"{exe} exited with {r.returncode}: {r.stderr.decode(errors='replace')[-2000:]}")
    rows = [list(map(int, line.split())) for line in r.stdout.decode().splitlines() if line.strip()]
    if len(rows) != len(x):
        raise RuntimeError(f"{exe} printed {len(rows)} lines for {len(x)} images")
    a = np.asarray(rows, dtype=np.int64).reshape(len(x), -1)
    return a[:, 0], a[:, 1:]


def run_c_codes(exe: str | os.PathLike, patches: np.ndarray, timeout: float | None = 600) -> np.ndarray:
    """Feed uint8 [N, 3, 32, 32] patches to a built patch encoder; returns its bits uint8 [N, MB_CODE_BITS]."""
    x = np.ascontiguousarray(np.asarray(patches, dtype=np.uint8))
    r = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"{exe} exited with {r.returncode}: {r.stderr.decode(errors='replace')[-2000:]}")
    rows = [line.strip() for line in r.stdout.decode().splitlines() if line.strip()]
    if len(rows) != len(x) or len({len(l) for l in rows}) > 1 or any(set(l) - {"0", "1"} for l in rows):
        raise RuntimeError(f"{exe} printed {len(rows)} malformed code lines for {len(x)} patches")
    return (np.frombuffer("".join(rows).encode(), np.uint8) - ord("0")).reshape(len(x), -1)


def object_sizes(out_dir: str | os.PathLike, flags: tuple[str, ...] | list[str] = CFLAGS,
                 cc: str | None = None) -> dict[str, dict[str, int]]:
    """Compile each .c to an object and read ``size`` (Berkeley: text incl. rodata, data, bss)."""
    d = Path(out_dir)
    size = shutil.which("size")
    if size is None:
        raise RuntimeError("`size` (binutils) not found")
    out = {}
    for src in sorted(d.glob("*.c")):
        obj = src.with_suffix(".o")
        r = subprocess.run([_cc(cc), *flags, "-c", src.name, "-o", obj.name], cwd=d, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"C build failed:\n{r.stderr[-4000:]}")
        s = subprocess.run([size, obj.name], cwd=d, capture_output=True, text=True, check=True).stdout.splitlines()
        text, data, bss = map(int, s[1].split()[:3])
        out[src.stem] = {"text": text, "data": data, "bss": bss}
        obj.unlink()
    return out
