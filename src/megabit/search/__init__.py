"""Mixed-precision search for learned image codecs: FMPQ (arXiv 2506.01221).

Pipeline (each stage a function; ``megabit fmpq`` wraps them)::

    layer_sensitivity(model, calib, lmbda)   -> SensitivityTable  zeta_n(b), n layers x b in 2..8
    adaptive_search(table, target_bits)      -> SearchResult      Algorithm 1 + search on beta
        (grid_search / exhaustive_search are the baselines)
    result.to_plan(table)                    -> QuantPlan         JSON, exact size in bits
    prepare_quantized(model, plan); qat_finetune(model, images, QATConfig(...)); save_quantized(...)
    (QuantPlan(..., granularity="tensor") for one weight scale per layer; act_bits=8 for W?A8)

Works on any ``nn.Module`` with the CompressAI contract (``g_a``, ``g_s``, ``forward`` returning
``{"x_hat", "likelihoods"}``), including a CompressAI model object.
"""

from .actquant import ActQuant, act_quant_modules, apply_act_quant, calibrate_act_quant
from .adaptive import SearchResult, adaptive_search, exhaustive_search, fill_budget, grid_search, predicted_cost, size_bounds
from .allocate import allocate, size_at_beta, uniform_bits
from .plan import QuantPlan
from .qat import QATConfig, apply_plan, load_quantized, prepare_quantized, qat_finetune, save_quantized
from .quantize import (
    FakeQuant,
    LayerInfo,
    apply_bits,
    bake,
    export_codes,
    fake_quantize,
    float_param_bits,
    layer_infos,
    plan_size_bits,
    quantizable_layers,
)
from .coded import coded_size
from .rd import check_codec_contract, evaluate_bitstream, evaluate_likelihood, rd_loss_value
from .sensitivity import SensitivityTable, layer_sensitivity

__all__ = [
    "SensitivityTable", "layer_sensitivity", "allocate", "size_at_beta", "uniform_bits",
    "SearchResult", "adaptive_search", "grid_search", "exhaustive_search", "fill_budget", "predicted_cost", "size_bounds",
    "QuantPlan", "QATConfig", "apply_plan", "prepare_quantized", "qat_finetune", "save_quantized", "load_quantized",
    "FakeQuant", "LayerInfo", "apply_bits", "bake", "export_codes", "fake_quantize", "float_param_bits",
    "layer_infos", "plan_size_bits", "quantizable_layers", "check_codec_contract", "evaluate_bitstream", "evaluate_likelihood", "coded_size",
    "rd_loss_value", "ActQuant", "apply_act_quant", "calibrate_act_quant", "act_quant_modules",
]
