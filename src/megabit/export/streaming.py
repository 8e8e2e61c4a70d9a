"""Decode-at-inference: run a .mbit network decoding each layer's weights just before use.

After arXiv 2406.06237 ("Efficient Neural Compression with Inference-time Decoding"): the
weights stay entropy-coded in memory; at inference each layer's payload is ANS-decoded right
before the layer runs and the decoded codes are dropped right after, so the decoded weights of
the whole model are never resident at once — peak decoded-weight memory is the largest
layer's, not the sum of all layers'.

::

    .mbit bytes (coded, resident) ──► for each section:  decode ─► int conv / head ─► drop
                                                          (one layer's int8 codes alive)

:class:`StreamingIntegerNQE` computes exactly what :class:`~megabit.export.integer.IntegerNQE`
computes (same integer arithmetic, bit-exact logits, tested); only the weight lifetime differs.
Decoding is repeated on every ``forward`` call — that is the point (memory for latency); batch
the images to amortize it.

Memory accounting (:attr:`StreamingIntegerNQE.last_stats`): ``decoded_bytes`` is the bytes of the
decoded weight codes (int8) plus per-channel offsets / head bias (int64) of the layers alive at
the same time; its peak is recorded per call. :func:`peak_memory` also measures the peak of
numpy allocations with :mod:`tracemalloc` (the ANS decoder's temporaries included; torch
activations are not seen by tracemalloc).

>>> import torch
>>> from megabit.fmt.mbit import encode_mbit
>>> from megabit.export.integer import IntegerNQE
>>> from megabit.models import NQE, get_preset
>>> m = NQE(get_preset("nqe-tiny")).eval().convert_to_bsn()
>>> data = encode_mbit(IntegerNQE.from_model(m), coder="tans")
>>> net = StreamingIntegerNQE(data)
>>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
>>> bool(torch.equal(net(x), IntegerNQE.from_model(m)(x)))
True
>>> net.last_stats["peak_decoded_bytes"] == max(net.layer_decoded_bytes())
True
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable

import numpy as np
import torch

from ..fmt import spec as S
from ..fmt.mbit import MbitFile, decode_conv, decode_head, mbit_to_integer, read_mbit
from .integer import IntegerNQE, IntHead, IntLayer, apply_int_head, apply_int_layer

__all__ = ["StreamingIntegerNQE", "apply_int_layer", "apply_int_head", "peak_memory"]


def _decoded_nbytes(item: IntLayer | IntHead) -> int:
    extra = item.offsets if isinstance(item, IntLayer) else item.bias
    return int(item.codes.nbytes + np.asarray(extra).nbytes)


class StreamingIntegerNQE:
    """Integer NQE inference straight from a .mbit file, one decoded layer at a time.

    ``src``: a path, the file's bytes, or a parsed :class:`~megabit.fmt.mbit.MbitFile`. The
    file is parsed and CRC-checked once; only the coded sections are kept.
    ``on_decode(name, nbytes)``: optional hook called after each layer is decoded (for tracing).
    """

    def __init__(self, src: str | os.PathLike | bytes | MbitFile, on_decode: Callable[[str, int], None] | None = None):
        self.file = src if isinstance(src, MbitFile) else read_mbit(src)
        if self.file.kind != "nqe-classifier":
            raise ValueError(f"streaming inference runs classifiers; this .mbit holds a {self.file.kind}")
        self.cfg = self.file.config
        self.on_decode = on_decode
        self.last_stats: dict = {}

    @property
    def coded_bytes(self) -> int:
        """Bytes of the resident, still-coded file."""
        return int(self.file.size)

    def layer_decoded_bytes(self) -> list[int]:
        """Decoded bytes of each layer (codes int8 + offsets/bias int64), in execution order."""
        out, cin = [], self.cfg.in_channels
        for sec in self.file.sections:
            if sec.tag == S.SECTION_CONV:
                L = decode_conv(sec, self.cfg, cin)
                cin = L.codes.shape[0]
                out.append(_decoded_nbytes(L))
            elif sec.tag == S.SECTION_HEAD:
                out.append(_decoded_nbytes(decode_head(sec, self.cfg, cin)))
        return out

    def forward(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 NCHW images -> int64 logits (identical to ``IntegerNQE.forward``)."""
        x = torch.as_tensor(x)
        if x.dtype != torch.uint8:
            raise ValueError(f"integer inference takes uint8 images, got {x.dtype}")
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected NCHW images with {self.cfg.in_channels} channels, got shape {tuple(x.shape)}")
        a = x.to(torch.int32) - 128
        live = peak = 0
        cin, logits = self.cfg.in_channels, None
        # Sections are decoded with decode_conv/decode_head directly rather than through
        # iter_decoded_layers: a generator keeps its last yielded layer referenced while it
        # decodes the next one, which would make two layers resident at once.
        for sec in self.file.sections:
            if sec.tag == S.SECTION_CONV:
                L = decode_conv(sec, self.cfg, cin)
                nb = _decoded_nbytes(L)
                live += nb
                peak = max(peak, live)
                if self.on_decode:
                    self.on_decode(f"blocks.{sec.index}", nb)
                a = apply_int_layer(a, L, self.cfg.act_bits)
                cin = L.codes.shape[0]
                del L
                live -= nb
            elif sec.tag == S.SECTION_HEAD:
                H = decode_head(sec, self.cfg, cin)
                nb = _decoded_nbytes(H)
                live += nb
                peak = max(peak, live)
                if self.on_decode:
                    self.on_decode("head", nb)
                logits = apply_int_head(a, H)
                del H
                live -= nb
        if logits is None:
            raise ValueError("the .mbit file has no head section")
        self.last_stats = {"peak_decoded_bytes": peak, "coded_bytes": self.coded_bytes}
        return logits

    __call__ = forward


def peak_memory(src: str | os.PathLike | bytes | MbitFile, x: torch.Tensor, streaming: bool = True) -> dict:
    """Peak memory of one inference from a .mbit file, streaming or decode-everything-first.

    Returns ``{"logits", "peak_decoded_bytes", "sum_decoded_bytes", "max_layer_decoded_bytes",
    "tracemalloc_peak_bytes"}``. ``peak_decoded_bytes`` is the accounted peak of decoded weight
    bytes (streaming: the largest layer; full: all layers). ``tracemalloc_peak_bytes`` is the peak
    of Python/numpy allocations during the call (decoder temporaries included, torch tensors not),
    measured from the start of the call; the parsed file is created before tracing starts.
    """
    f = src if isinstance(src, MbitFile) else read_mbit(src)
    stream = StreamingIntegerNQE(f)
    sizes = stream.layer_decoded_bytes()
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        if streaming:
            logits = stream(x)
            peak_dec = stream.last_stats["peak_decoded_bytes"]
        else:
            net = mbit_to_integer(f)
            logits = net(x)
            peak_dec = sum(_decoded_nbytes(i) for i in [*net.layers, net.head])
            del net
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was:
            tracemalloc.stop()
    return {"logits": logits, "streaming": streaming, "peak_decoded_bytes": int(peak_dec),
            "sum_decoded_bytes": int(sum(sizes)), "max_layer_decoded_bytes": int(max(sizes)),
            "tracemalloc_peak_bytes": int(peak - base)}
