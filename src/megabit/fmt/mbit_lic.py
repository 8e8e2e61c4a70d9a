"""FMPQ-quantized learned image codecs (``megabit fmpq qat``) in a ``.mbit`` file: the model to ship.

Same container as the other ``.mbit`` kinds (:mod:`megabit.fmt.mbit`: header, CRC-checked
sections). The config JSON has ``"kind": "lic"``, the codec's
:class:`~megabit.models.lic.LICConfig` and the bit-width plan
(:class:`~megabit.search.QuantPlan`, which also fixes every layer's weight count). Then one
section per stored tensor, in the fixed order of :func:`stored_tensors` (the quantized model's
``state_dict`` order; ``index`` = position in that list):

    QTENSOR (tag 5)  a quantized layer's weight (plan bit-width b, 2^b - 1 levels): levels u16 |
                     n_steps u16 (= output channels; 1 per layer for a plan with granularity "tensor") | n_weights u32 | table_bytes u32 |
                     n_steps float32 per-channel scales | frequency table | weight payload
                     (level indices 0..levels-1 in the weight's own layout, row-major; raw b-bit
                     packing or rANS / tANS)
    FLOAT   (tag 6)  every other *parameter* (biases, GDN beta/gamma, the factorized entropy
                     bottleneck's density and quantiles): float32 values, row-major

Not stored: buffers that follow from the config (bounds, pedestals, the Gaussian conditional's
scale table) and the integer CDF tables, which ``update(force=True)`` rebuilds deterministically
from the stored parameters on load. The decoded weights equal the trained model's bit for bit
(``code * scale`` in float32, the product the fake quantizer computes), so a codec read from the
file writes the same bitstreams as the one that was packed (tested).

With ``coder="rans"`` or ``"tans"`` a layer whose entropy-coded payload plus table is not smaller
than its raw packing is stored raw (the section's coder byte says which) [I] -- the same per-layer
choice ``megabit fmpq size`` reports; with ``"tans"``, layers above 8 bits (more than 256 levels,
tANS's alphabet limit) use rANS. Float tensors are stored uncompressed: they are counted, not
optimised (a few % of a hyperprior's bytes).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
from torch import nn

from ..export.bitpack import _codes_to_index
from ..utils import atomic_write_bytes
from . import spec as S
from .mbit import MbitError, Section, _code_weights, _container, check_tensor_sections, read_container, read_qtensor

__all__ = ["encode_lic_mbit", "write_lic_mbit", "read_lic_mbit", "inspect_lic_mbit", "stored_tensors"]

_ORIG = ".parametrizations.weight.original"
_SCALE = ".parametrizations.weight.0.scale"
_MAX_CHANNELS = 4096  # a config asking for wider layers is treated as corrupt


def _table_log(coder: str, levels: int) -> int:
    """rANS precision / tANS table size for a layer of ``levels`` symbols [I]: rANS at 16 bits (as
    ``megabit fmpq size``), tANS at 10 bits or one more than the symbol count needs (at most 15)."""
    need = math.ceil(math.log2(levels)) + 1
    return max(16, need) if coder == "rans" else min(15, max(10, need))


def stored_tensors(model: nn.Module) -> list[tuple[str, bool]]:
    """(state_dict key, quantized?) of every tensor a file stores, in file order: the weight of every
    parametrized layer (its ``...original`` key) and every other float parameter."""
    params = {k for k, _ in model.named_parameters()}
    out = []
    for k in model.state_dict():
        if k.endswith(_SCALE):
            continue
        if k.endswith(_ORIG):
            out.append((k, True))
        elif k in params:
            out.append((k, False))
    return out


def _layer(model: nn.Module, key: str) -> nn.Module:
    return model.get_submodule(key[: -len(_ORIG)])


@torch.no_grad()
def encode_lic_mbit(model: nn.Module, plan, codec_config: dict, coder: str = "rans", n_streams: int = 1,
                    meta: dict | None = None) -> bytes:
    """Serialize a quantized codec (:func:`megabit.search.prepare_quantized` + QAT, or
    :func:`megabit.search.load_quantized`): codes and scales of its layers, float32 for the rest."""
    if coder not in S.CODERS:
        raise ValueError(f"coder must be one of {', '.join(S.CODERS)}, got {coder!r}")
    head = {"kind": "lic", "config": dict(codec_config), "plan": plan.to_dict(), "meta": meta or {}}
    secs = [Section(S.SECTION_CONFIG, S.CODER_NONE, 0, json.dumps(head, sort_keys=True).encode())]
    sd = model.state_dict()
    order = stored_tensors(model)
    quantized = {k[: -len(_ORIG)] for k, q in order if q}
    if quantized != set(plan.bits):
        raise ValueError("the model's quantized layers are not the plan's layers")
    for i, (key, q) in enumerate(order):
        if not q:
            secs.append(Section(S.SECTION_FLOAT, S.CODER_NONE, i, sd[key].detach().float().cpu().numpy().astype("<f4").tobytes()))
            continue
        m = _layer(model, key)
        fq = m.parametrizations.weight[0]
        codes = fq.codes(m.parametrizations.weight.original).round().cpu().numpy().astype(np.int64)
        steps = fq.scale.detach().abs().clamp_min(1e-12).float().cpu().numpy()
        lv = 2**fq.bits - 1
        use = "rans" if coder == "tans" and lv > 256 else coder  # tANS alphabets stop at 256 symbols (8 bits)
        table, payload = _code_weights(codes, lv, use, _table_log(use, lv) if use != "raw" else None, n_streams)
        if coder != "raw":
            rtable, rpayload = _code_weights(codes, lv, "raw", None, 1)
            if len(rpayload) <= len(table) + len(payload):
                use, table, payload = "raw", rtable, rpayload
        fixed = S.MBIT_QTENSOR.pack(lv, steps.size, codes.size, len(table))
        secs.append(Section(S.SECTION_QTENSOR, S.CODERS[use], i, fixed + steps.astype("<f4").tobytes() + table + payload))
    if len(secs) > S.MAX_SECTIONS:
        raise ValueError(f"{len(secs)} sections: more than a .mbit file holds ({S.MAX_SECTIONS})")
    return _container(secs)


def write_lic_mbit(model: nn.Module, plan, codec_config: dict, path: str | os.PathLike, **kw) -> int:
    """Encode and write atomically; returns the file size in bytes."""
    data = encode_lic_mbit(model, plan, codec_config, **kw)
    atomic_write_bytes(path, data)
    return len(data)


def _parse(src):
    from ..models.lic import LICConfig, build_codec
    from ..search.plan import QuantPlan
    from ..search.qat import apply_plan
    from ..search.quantize import layer_infos

    _, secs, obj, size = read_container(src)
    if obj["kind"] != "lic":
        raise MbitError(f"this .mbit holds a {obj['kind']}, not a quantized image codec")
    try:
        cfg = LICConfig.from_dict(obj["config"])
        if not (0 < cfg.N <= _MAX_CHANNELS and 0 < cfg.M <= _MAX_CHANNELS):
            raise ValueError("implausible channel widths")  # never allocate what a bad file asks for
        plan = QuantPlan.from_dict(obj["plan"])
        model = build_codec(cfg)
        if [li.to_dict() for li in layer_infos(model)] != [li.to_dict() for li in plan.layers]:
            raise ValueError("the plan's layers are not this codec's")
        apply_plan(model, plan)
    except Exception as e:  # noqa: BLE001 - any malformed config/plan is a format error
        raise MbitError(f"bad config section ({type(e).__name__}: {str(e)[:80]})") from None
    check_tensor_sections(secs, stored_tensors(model), model.state_dict())
    return secs, model, plan, obj, size


def _check_act_quant(model: nn.Module) -> None:
    """Activation quantizers read from a file: a finite log-scale in [-80, 80], lower level 0 or -(2^(b-1) - 1)."""
    from ..search.actquant import act_quant_modules

    for name, aq in act_quant_modules(model).items():
        s, lo = float(aq.log_scale.detach()), float(aq.qmin.detach())
        if not (math.isfinite(s) and abs(s) <= 80) or lo not in (0.0, float(-(2 ** (aq.bits - 1) - 1))):
            raise MbitError(f"activation quantizer of {name}: invalid log-scale {s!r} or lower level {lo!r}")


def _qtensor(sec: Section, layer: nn.Module):
    """(codes, per-channel scales, table bytes, table offset) of one layer, checked against the plan."""
    fq = layer.parametrizations.weight[0]
    shape = tuple(layer.parametrizations.weight.original.shape)
    codes, steps, tb, b = read_qtensor(sec, 2**fq.bits - 1, int(np.prod(shape)), fq.scale.numel(), "plan")
    return codes.reshape(shape), steps, tb, b


@torch.no_grad()
def read_lic_mbit(src: str | os.PathLike | bytes):
    """Verify and decode a quantized-codec .mbit: ``(model, plan, header)``, the model in eval mode
    with its CDF tables built, its quantized weights exactly the file's codes times its scales."""
    secs, model, plan, obj, _ = _parse(src)
    sd = model.state_dict()
    new = dict(sd)  # not stored: config constants and CDF tables (rebuilt by update below)
    for sec, (key, q) in zip(secs[1:], stored_tensors(model)):
        t = sd[key]
        if q:
            m = _layer(model, key)
            fq = m.parametrizations.weight[0]
            codes, steps, _, _ = _qtensor(sec, m)
            shape = [1] * codes.ndim
            shape[fq.out_dim] = -1
            s = torch.from_numpy(steps.copy())
            new[key] = torch.from_numpy(codes.astype(np.float32)) * s.reshape(shape)
            new[key[: -len(_ORIG)] + _SCALE] = s
        else:
            new[key] = torch.from_numpy(np.frombuffer(sec.payload, dtype="<f4").astype(np.float32).reshape(t.shape))
    model.load_state_dict(new)
    _check_act_quant(model)
    model.eval()
    model.update(force=True)
    return model, plan, {k: v for k, v in obj.items() if k not in ("plan",)}


def inspect_lic_mbit(src: str | os.PathLike | bytes) -> dict:
    """Per-layer accounting in which every byte of the file is counted once."""
    from ..entropy import entropy_bits

    secs, model, plan, obj, size = _parse(src)
    rows, n_w, w_bits, float_bytes, table_bytes, scale_bytes = [], 0, 0, 0, 0, 0
    for sec, (key, q) in zip(secs[1:], stored_tensors(model)):
        if not q:
            float_bytes += sec.nbytes
            continue
        m = _layer(model, key)
        codes, steps, tb, b = _qtensor(sec, m)
        lv = 2 ** m.parametrizations.weight[0].bits - 1
        idx = _codes_to_index(codes, lv)
        n = codes.size
        wb = len(sec.payload) - b - tb
        name = key[: -len(_ORIG)]
        rows.append({"name": name, "bits": plan.bits[name], "coder": S.CODER_NAMES[sec.coder], "weights": n,
                     "entropy_bits_per_weight": entropy_bits(np.bincount(idx, minlength=lv)) / n,
                     "coded_bits": 8 * wb, "bits_per_weight": 8 * wb / n, "table_bytes": tb,
                     "scale_bytes": 4 * steps.size, "section_bytes": sec.nbytes})
        n_w += n
        w_bits += 8 * wb
        table_bytes += tb
        scale_bytes += 4 * steps.size
    total = S.MBIT_HEADER.size + secs[0].nbytes + float_bytes + sum(r["section_bytes"] for r in rows)
    assert total == size, "accounting must cover every byte"
    return {"layers": rows, "n_weights": n_w, "weight_bits": w_bits, "bits_per_weight": w_bits / n_w if n_w else 0.0,
            "table_bytes": table_bytes, "scale_bytes": scale_bytes, "float_section_bytes": float_bytes,
            "config_bytes": secs[0].nbytes, "file_bytes": size, "total_bits": 8 * size,
            "plan_size_bits": plan.size_bits, "mean_weight_bits": plan.mean_bits, "kind": "lic",
            "model": obj["config"], "meta": obj.get("meta", {})}
