"""Small shared helpers: atomic file writes, bf16 capability."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_save", "use_bf16", "resolve_device",
           "quiet_item_graph_break"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save through a temp file + rename."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def use_bf16(requested: bool | None = None, device: str = "cpu") -> bool:
    """Resolve a ``bf16`` setting: ``None`` means "only where the hardware has native bf16".

    On a CPU without AVX512-BF16/AMX, bf16 autocast is emulated and ~10x *slower* than fp32
    (measured on this project's 2-core AVX2 machine: ResNet-20 step 3.6 s vs 0.33 s), so the
    default turns it on only when oneDNN reports native bf16 support (or on a bf16-capable GPU).
    """
    if requested is not None:
        return bool(requested)
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private op missing in some builds: be safe
        return False


def resolve_device(requested: str | None = "auto") -> torch.device:
    """``"auto"``/None: the local GPU when CUDA is available (``cuda:$LOCAL_RANK`` under torchrun),
    else the CPU; anything else is passed to :class:`torch.device` (``"cpu"``, ``"cuda:1"``).

    On CUDA, TF32 is switched off: the quantized models rely on fp32 sums of small integers being
    exact (integer-exact inference), which TF32 convolutions and matmuls are not.
    """
    if requested in (None, "auto"):
        if torch.cuda.is_available():
            requested = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        else:
            requested = "cpu"
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"unknown device {requested!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if dev.index is not None:
            torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {requested!r} (use auto, cpu, cuda or cuda:N)")
    return dev


class _DropItemGraphBreak(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Graph break from `Tensor.item()`")


_ITEM_FILTER = _DropItemGraphBreak()


def quiet_item_graph_break() -> None:
    """Drop torch.compile's ~30-line "Graph break from `Tensor.item()`" hint (idempotent).

    The weight quantizers read their ``initialized`` flag with ``bool()``: a known, measured graph
    break (a branch-free version compiles to one graph but trained slower, docs/LOG.md session 28).
    Process-wide once called (train-classifier calls it when it compiles); other dynamo warnings
    still print.
    """
    lg = logging.getLogger("torch._dynamo.variables.tensor")
    if _ITEM_FILTER not in lg.filters:
        lg.addFilter(_ITEM_FILTER)
