"""ResNet models (the entropy-coded-weights study, ``recipes/resnet_table1.py``) in a ``.mbit`` file.

Same container as the NQE files (:mod:`megabit.fmt.mbit`: header, CRC-checked sections); the
config JSON has ``"kind": "resnet"`` and a :class:`~megabit.models.resnet.ResNetConfig`. Then one
section per stored tensor, in the fixed order of :func:`stored_tensors` (the model's
``state_dict`` order; ``index`` = position in that list):

    QTENSOR (tag 5)  a quantized layer's weight: levels u16 | n_steps u16 | n_weights u32 |
                     table_bytes u32 | n_steps float32 steps | frequency table | weight payload
                     (level indices 0..levels-1, row-major, coded raw / tANS / rANS as in the NQE files)
    FLOAT   (tag 6)  any other tensor (BatchNorm weight/bias/running mean/var, FC bias, float
                     weights): its float32 values, row-major

Decoding gives the same integer codes and steps, so the rebuilt model's quantized weights equal
the trained model's bit for bit. Unlike the NQE files this is a float-scale model (fp32 steps and
BatchNorm), not an integer-only one. Its size is what ``resnet_table1.py`` reports as
``mbit_bytes``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from ..export.bitpack import _codes_to_index
from ..models.resnet import ResNet, ResNetConfig, quantized_layers
from ..utils import atomic_write_bytes
from . import spec as S
from .mbit import MbitError, Section, _code_weights, _container, check_tensor_sections, read_container, read_qtensor

__all__ = ["encode_resnet_mbit", "write_resnet_mbit", "read_resnet_mbit", "inspect_resnet_mbit", "stored_tensors"]

_SKIP = ("num_batches_tracked", ".quant.step", ".quant.initialized")


def stored_tensors(model: ResNet) -> list[tuple[str, bool]]:
    """(state_dict key, quantized?) of every tensor a file stores, in file order."""
    q = {f"{n}.weight" for n, _ in quantized_layers(model)}
    return [(k, k in q) for k in model.state_dict() if not k.endswith(_SKIP)]


@torch.no_grad()
def encode_resnet_mbit(model: ResNet, coder: str = "tans", table_log: int | None = None, n_streams: int = 1,
                       meta: dict | None = None) -> bytes:
    """Serialize a (trained) ResNet: codes and steps of its quantized layers, float32 for the rest."""
    if coder not in S.CODERS:
        raise ValueError(f"coder must be one of {', '.join(S.CODERS)}, got {coder!r}")
    was = model.training
    model.eval()
    try:
        mods = dict(model.named_modules())
        sd = model.state_dict()
        head = {"kind": "resnet", "config": model.cfg.to_dict(), "meta": meta or {}}
        secs = [Section(S.SECTION_CONFIG, S.CODER_NONE, 0, json.dumps(head, sort_keys=True).encode())]
        for i, (key, quantized) in enumerate(stored_tensors(model)):
            if quantized:
                m = mods[key[: -len(".weight")]]
                codes = m.quant.codes(m.weight.detach().float()).round().cpu().numpy().astype(np.int64)
                steps = m.quant.step.detach().abs().clamp_min(1e-8).float().cpu().numpy() \
                    if m.quant.spec.step_rule == "learned" else m.quant.step.detach().float().cpu().numpy()
                lv = m.quant.spec.levels
                table, payload = _code_weights(codes, lv, coder, table_log, n_streams)
                fixed = S.MBIT_QTENSOR.pack(lv, steps.size, codes.size, len(table))
                secs.append(Section(S.SECTION_QTENSOR, S.CODERS[coder], i,
                                    fixed + steps.astype("<f4").tobytes() + table + payload))
            else:
                secs.append(Section(S.SECTION_FLOAT, S.CODER_NONE, i, sd[key].detach().float().cpu().numpy().astype("<f4").tobytes()))
    finally:
        model.train(was)
    if len(secs) > S.MAX_SECTIONS:
        raise ValueError(f"{len(secs)} sections: more than a .mbit file holds ({S.MAX_SECTIONS})")
    return _container(secs)


def write_resnet_mbit(model: ResNet, path: str | os.PathLike, **kw) -> int:
    """Encode and write atomically; returns the file size in bytes."""
    data = encode_resnet_mbit(model, **kw)
    atomic_write_bytes(path, data)
    return len(data)


def _parse(src) -> tuple[list[Section], ResNet, dict, int]:
    _, secs, obj, size = read_container(src)
    if obj["kind"] != "resnet":
        raise MbitError(f"this .mbit holds a {obj['kind']}, not a ResNet")
    try:
        cfg = ResNetConfig.from_dict(obj["config"])
        if not (all(0 < w <= 4096 for w in cfg.widths) and 0 < cfg.blocks_per_stage <= 256 and 0 < cfg.num_classes <= 100_000):
            raise ValueError("implausible widths / depth / classes")  # never allocate what a bad file asks for
        model = ResNet(cfg)
    except Exception as e:  # noqa: BLE001 - any malformed config is a format error
        raise MbitError(f"bad config section ({type(e).__name__}: {str(e)[:80]})") from None
    check_tensor_sections(secs, stored_tensors(model), model.state_dict())
    return secs, model, obj.get("meta", {}), size


def _qtensor(sec: Section, layer):
    """(codes, steps, table bytes, offset of the table) of ``layer``'s qtensor section, checked against it."""
    shape, spec = layer.weight.shape, layer.quant.spec
    codes, steps, tb, b = read_qtensor(sec, spec.levels, int(np.prod(shape)), shape[0] if spec.per_channel else 1)
    return codes.reshape(shape), steps, tb, b


@torch.no_grad()
def read_resnet_mbit(src: str | os.PathLike | bytes) -> ResNet:
    """Verify and decode a ResNet .mbit into a runnable model (eval mode) whose quantized weights
    are exactly the file's codes times its steps."""
    secs, model, _, _ = _parse(src)
    mods = dict(model.named_modules())
    sd = model.state_dict()
    new = dict(sd)  # not stored: BatchNorm's batch counters, the unused steps of float layers
    for sec, (key, quantized) in zip(secs[1:], stored_tensors(model)):
        t = sd[key]
        if quantized:
            m = mods[key[: -len(".weight")]]
            codes, steps, _, _ = _qtensor(sec, m)
            s = torch.from_numpy(steps).reshape(-1, *([1] * (t.dim() - 1))) if steps.size > 1 else torch.tensor(float(steps[0]))
            unit = s if m.quant.spec.levels % 2 else s / 2
            new[key] = torch.from_numpy(codes.astype(np.float32)) * unit  # on the grid: the quantizer gives back codes
            new[key[: -len(".weight")] + ".quant.step"] = torch.from_numpy(steps).expand(m.quant.step.numel()).clone()
            new[key[: -len(".weight")] + ".quant.initialized"] = torch.tensor(True)
        else:
            new[key] = torch.from_numpy(np.frombuffer(sec.payload, dtype="<f4").astype(np.float32).reshape(t.shape))
    model.load_state_dict(new)
    return model.eval()


def inspect_resnet_mbit(src: str | os.PathLike | bytes) -> dict:
    """Per-tensor accounting in which every byte of the file is counted once."""
    from ..entropy import entropy_bits

    secs, model, meta, size = _parse(src)
    mods = dict(model.named_modules())
    rows, n_w, w_bits, float_bytes, table_bytes = [], 0, 0, 0, 0
    for sec, (key, quantized) in zip(secs[1:], stored_tensors(model)):
        if quantized:
            m = mods[key[: -len(".weight")]]
            codes, steps, tb, b = _qtensor(sec, m)
            idx = _codes_to_index(codes, m.quant.spec.levels)
            n = codes.size
            wb = len(sec.payload) - b - tb
            rows.append({"name": key, "coder": S.CODER_NAMES[sec.coder], "weights": n, "levels": m.quant.spec.levels,
                         "entropy_bits_per_weight": entropy_bits(np.bincount(idx, minlength=m.quant.spec.levels)) / n,
                         "coded_bits": 8 * wb, "bits_per_weight": 8 * wb / n, "table_bytes": tb,
                         "step_bytes": 4 * steps.size, "section_bytes": sec.nbytes})
            n_w += n
            w_bits += 8 * wb
            table_bytes += tb
        else:
            float_bytes += sec.nbytes
    total = S.MBIT_HEADER.size + secs[0].nbytes + float_bytes + sum(r["section_bytes"] for r in rows)
    assert total == size, "accounting must cover every byte"
    return {"layers": rows, "n_weights": n_w, "weight_bits": w_bits, "bits_per_weight": w_bits / n_w if n_w else 0.0,
            "table_bytes": table_bytes, "float_section_bytes": float_bytes, "file_bytes": size, "total_bits": 8 * size,
            "limit_bits": 1 << 20, "fits": 8 * size <= (1 << 20), "model": model.cfg.name, "kind": "resnet", "meta": meta}
