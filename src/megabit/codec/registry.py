"""Bundled codec models: the on-disk model ids written into .mbc files (one table, explicit ints)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODELS", "DEFAULT_MODEL", "CUSTOM_MODEL_ID", "asset_path", "model_id_of"]

#: model id (u16 in the .mbc header) -> (name, file in megabit/assets). Never renumber.
MODELS: dict[int, tuple[str, str]] = {
    1: ("codec-nested", "codec-nested.pt"),  # v2 (sessions 2+4); kept so that its .mbc files still decode
    2: ("codec-nested-v3", "codec-nested-v3.pt"),  # session 5: 68-minute float stage
    3: ("codec-nested-v4", "codec-nested-v4.pt"),  # session 22: v3 + 75-min continuation from its BSN QAT stage
    4: ("codec-nested-v5", "codec-nested-v5.pt"),  # session 26: fresh 95-min run on 2 native-bf16 cores (3.3x v3's float steps)
}
DEFAULT_MODEL = "codec-nested-v5"
#: id written for a model loaded from a user path; its hash still identifies it
CUSTOM_MODEL_ID = 0

_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def asset_path(name: str) -> Path:
    for _, (n, f) in MODELS.items():
        if n == name:
            return _ASSETS / f
    raise ValueError(f"unknown codec model {name!r}; bundled: {', '.join(n for n, _ in MODELS.values())}")


def model_id_of(name: str) -> int:
    for i, (n, _) in MODELS.items():
        if n == name:
            return i
    return CUSTOM_MODEL_ID
