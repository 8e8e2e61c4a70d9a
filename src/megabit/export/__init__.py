"""Deployment: exact bit budget, raw bit-packing, integer-only inference."""
from .bitpack import MBIT, budget, budget_table, pack_model, unpack_model
from .integer import IntegerNQE, IntegerPatchEncoder

__all__ = ["MBIT", "budget", "budget_table", "pack_model", "unpack_model", "IntegerNQE", "IntegerPatchEncoder"]
