"""A mixed-precision plan: bit-width per layer, its exact size, and how it was found (JSON file)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from megabit.utils import atomic_write_text

from .quantize import MAX_BITS, MIN_BITS, LayerInfo, check_granularity, plan_size_bits

__all__ = ["QuantPlan", "PLAN_FORMAT"]

PLAN_FORMAT = "megabit-fmpq-plan"


@dataclass
class QuantPlan:
    """``bits[name]`` for every layer in ``layers``; ``meta`` records the search (beta, iterations, ...);
    ``granularity``: one scale per output channel (``"channel"``) or per layer (``"tensor"``);
    ``act_bits``: the layers' inputs quantized to that many bits too (``None``: weight-only)."""

    layers: list[LayerInfo]
    bits: dict[str, int]
    scale_bits: int = 32
    meta: dict[str, Any] = field(default_factory=dict)
    granularity: str = "channel"
    act_bits: int | None = None

    def __post_init__(self) -> None:
        check_granularity(self.granularity)
        if self.act_bits is not None:
            from .actquant import check_act_bits

            check_act_bits(self.act_bits)
        names = [li.name for li in self.layers]
        if set(names) != set(self.bits):
            raise ValueError("plan bits and layers name different layers")
        for name, b in self.bits.items():
            if not isinstance(b, int) or isinstance(b, bool) or not MIN_BITS <= b <= MAX_BITS:
                raise ValueError(f"layer {name}: bit-width {b!r} not an integer in [{MIN_BITS}, {MAX_BITS}]")

    @property
    def size_bits(self) -> int:
        return plan_size_bits(self.layers, self.bits, self.scale_bits, self.granularity)

    @property
    def mean_bits(self) -> float:
        n = sum(li.n_weights for li in self.layers)
        return sum(li.n_weights * self.bits[li.name] for li in self.layers) / n

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": 1, "scale_bits": self.scale_bits,
                "granularity": self.granularity, "act_bits": self.act_bits, "size_bits": self.size_bits,
                "mean_weight_bits": round(self.mean_bits, 4), "layers": [li.to_dict() for li in self.layers],
                "bits": {li.name: self.bits[li.name] for li in self.layers}, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Any) -> "QuantPlan":
        if not isinstance(d, dict) or d.get("format") != PLAN_FORMAT:
            raise ValueError("not a megabit FMPQ plan file")
        if d.get("version") != 1:
            raise ValueError(f"unsupported plan version {d.get('version')!r}")
        try:
            plan = cls([LayerInfo.from_dict(x) for x in d["layers"]], {str(k): v for k, v in d["bits"].items()},
                       int(d.get("scale_bits", 32)), dict(d.get("meta", {})), str(d.get("granularity", "channel")),
                       d.get("act_bits"))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"corrupted plan file: missing or malformed field {e}") from None
        if "size_bits" in d and d["size_bits"] != plan.size_bits:
            raise ValueError(f"corrupted plan file: size_bits {d['size_bits']} != {plan.size_bits} recomputed")
        return plan

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QuantPlan":
        try:
            with open(path) as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: corrupted plan file (not JSON: {e})") from None
        return cls.from_dict(d)
