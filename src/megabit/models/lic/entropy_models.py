"""Entropy models of learned image codecs, with CompressAI's parametrization and buffer names.

* :class:`EntropyBottleneck` -- the non-parametric *factorized prior* of Balle et al., "Variational
  image compression with a scale hyperprior" (ICLR 2018, appendix 6.1): per channel, a monotone
  cumulative ``c(x) = sigmoid(f_K o ... o f_1(x))`` with ``f_k(x) = H_k x + b_k (+ a_k * tanh)``,
  likelihood ``P(v) = c(v + 1/2) - c(v - 1/2)``. Parameters ``_matrix{i}``, ``_bias{i}``,
  ``_factor{i}``, ``quantiles``; buffers ``target``.
* :class:`GaussianConditional` -- ``P(v | sigma, mu) = Phi((v - mu + 1/2)/sigma) - Phi((v - mu - 1/2)/sigma)``,
  coded with one integer CDF per entry of ``scale_table`` (buffers ``scale_table``, ``scale_bound``).

Both share the coding buffers ``_quantized_cdf`` [n_cdfs, max_len] (int32, 16-bit precision, row
``j`` valid on ``[0, _cdf_length[j])``, last symbol an escape for out-of-range values),
``_offset`` [n_cdfs] and ``_cdf_length`` [n_cdfs], filled by ``update()``; the tables are built with
the same rounding as CompressAI's ``pmf_to_quantized_cdf`` (:func:`pmf_to_quantized_cdf`).
Bitstreams are produced by :func:`megabit.entropy.rans.encode_with_cdfs` (CompressAI's
``encode_with_indexes`` contract; the bytes are megabit's, not CompressAI's).

Legacy CompressAI checkpoints that stored the bottleneck as ``_matrices.{i}``/``_biases.{i}``/
``_factors.{i}`` (nn.ParameterList, CompressAI <= 1.1) are renamed on load, as CompressAI does.

>>> import torch
>>> eb = EntropyBottleneck(2)
>>> _ = eb.update()
>>> z = torch.randn(1, 2, 4, 4) * 3
>>> s = eb.compress(z)
>>> bool(torch.equal(eb.decompress(s, z.shape[-2:]), eb.quantize(z, "dequantize", eb._get_medians())))
True
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import LowerBound

__all__ = ["EntropyModel", "EntropyBottleneck", "GaussianConditional", "pmf_to_quantized_cdf", "get_scale_table"]

SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256, 64


def get_scale_table(min: float = SCALES_MIN, max: float = SCALES_MAX, levels: int = SCALES_LEVELS) -> Tensor:
    """CompressAI's default table: ``exp(linspace(log 0.11, log 256, 64))``."""
    return torch.exp(torch.linspace(math.log(min), math.log(max), levels))


def pmf_to_quantized_cdf(pmf: Sequence[float] | np.ndarray | Tensor, precision: int = 16) -> np.ndarray:
    """Integer CDF with ``cdf[0] = 0``, ``cdf[-1] = 2**precision`` and every symbol frequency >= 1.

    Same arithmetic as CompressAI's C++ ``pmf_to_quantized_cdf``: ``round(p * 2^prec)`` in float32,
    renormalized with integer division, then each zero-frequency symbol steals one count from the
    smallest frequency > 1 (first such, in index order).

    >>> pmf_to_quantized_cdf([0.5, 0.25, 0.25, 0.0], 4).tolist()
    [0, 8, 11, 15, 16]
    """
    p = np.asarray(pmf.detach().cpu().numpy() if isinstance(pmf, Tensor) else pmf, dtype=np.float32)
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise ValueError("pmf must be finite and non-negative")
    M = 1 << int(precision)
    cdf = np.zeros(p.size + 1, dtype=np.int64)
    cdf[1:] = np.round(p * np.float32(M)).astype(np.int64)
    total = int(cdf.sum())
    if total == 0:
        raise ValueError("pmf sums to zero at this precision")
    cdf = (M * cdf) // total
    cdf = np.cumsum(cdf)
    cdf[-1] = M
    i = 0
    n = cdf.size
    while True:
        zeros = np.flatnonzero(np.diff(cdf[i:]) == 0)
        if zeros.size == 0:
            break
        i += int(zeros[0])
        freq = np.diff(cdf)
        cand = np.where(freq > 1, freq, np.iinfo(np.int64).max)
        best = int(np.argmin(cand))
        if freq[best] <= 1:
            raise ValueError("cannot give every symbol a non-zero frequency at this precision")
        if best < i:
            cdf[best + 1: i + 1] -= 1
        else:
            cdf[i + 1: best + 1] += 1
        i += 1
        if i >= n - 1:
            break
    return cdf


def _rans():
    from megabit.entropy import rans  # lazy: the coder is only needed for real bitstreams

    return rans


class EntropyModel(nn.Module):
    """Base class: quantization modes, likelihood lower bound, CDF buffers and the rANS calls."""

    _offset: Tensor
    _quantized_cdf: Tensor
    _cdf_length: Tensor

    def __init__(self, likelihood_bound: float = 1e-9, entropy_coder_precision: int = 16,
                 coder_backend: str | None = None):
        super().__init__()
        self.entropy_coder_precision = int(entropy_coder_precision)
        #: rANS backend for this module ("numba" | "python" | None = best available); per module, not global
        self.coder_backend = coder_backend
        self.use_likelihood_bound = likelihood_bound > 0
        if self.use_likelihood_bound:
            self.likelihood_lower_bound = LowerBound(likelihood_bound)
        self.register_buffer("_offset", torch.IntTensor())
        self.register_buffer("_quantized_cdf", torch.IntTensor())
        self.register_buffer("_cdf_length", torch.IntTensor())

    # -- quantization --------------------------------------------------------------------
    def quantize(self, inputs: Tensor, mode: str, means: Tensor | None = None) -> Tensor:
        """``"noise"``: add U(-1/2, 1/2); ``"dequantize"``: round(x - mu) + mu; ``"symbols"``: int round(x - mu)."""
        if mode not in ("noise", "dequantize", "symbols"):
            raise ValueError(f'invalid quantization mode: "{mode}"')
        if mode == "noise":
            return inputs + torch.empty_like(inputs).uniform_(-0.5, 0.5)
        outputs = inputs.clone()
        if means is not None:
            outputs = outputs - means
        outputs = torch.round(outputs)
        if mode == "dequantize":
            return outputs + means if means is not None else outputs
        return outputs.int()

    @staticmethod
    def dequantize(inputs: Tensor, means: Tensor | None = None, dtype: torch.dtype = torch.float) -> Tensor:
        out = inputs.type(dtype)
        return out + means.type(dtype) if means is not None else out

    def _pmf_to_cdf(self, pmf: Tensor, tail_mass: Tensor, pmf_length: Tensor, max_length: int) -> Tensor:
        cdf = torch.zeros((len(pmf_length), max_length + 2), dtype=torch.int32)
        for i, p in enumerate(pmf):
            prob = torch.cat((p[: int(pmf_length[i])], tail_mass[i]), dim=0)
            c = pmf_to_quantized_cdf(prob, self.entropy_coder_precision)
            cdf[i, : c.size] = torch.from_numpy(c.astype(np.int32))
        return cdf.to(pmf.device)

    def _check_updated(self) -> None:
        if self._offset.numel() == 0 or self._quantized_cdf.numel() == 0 or self._cdf_length.numel() == 0:
            raise ValueError("entropy model has no CDF tables: call model.update() first")

    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._check_updated()
        return (
            self._quantized_cdf.detach().cpu().numpy().astype(np.int64),
            self._cdf_length.detach().cpu().numpy().reshape(-1).astype(np.int64),
            self._offset.detach().cpu().numpy().reshape(-1).astype(np.int64),
        )

    # -- coding ----------------------------------------------------------------------------
    def compress(self, inputs: Tensor, indexes: Tensor, means: Tensor | None = None) -> list[bytes]:
        """One rANS string per batch element; symbols ``round(x - mu)`` coded with CDF row ``indexes``."""
        symbols = self.quantize(inputs, "symbols", means)
        if inputs.dim() < 2 or indexes.shape != symbols.shape:
            raise ValueError("inputs and indexes must have the same shape [B, C, ...]")
        tab, lengths, offs = self._tables()
        rans = _rans()
        return [
            rans.encode_with_cdfs(
                symbols[i].reshape(-1).cpu().numpy().astype(np.int32),
                indexes[i].reshape(-1).cpu().numpy().astype(np.int64),
                tab, lengths, offs, precision=self.entropy_coder_precision, backend=self.coder_backend,
            )
            for i in range(symbols.size(0))
        ]

    def decompress(self, strings: Sequence[bytes], indexes: Tensor, dtype: torch.dtype = torch.float,
                   means: Tensor | None = None) -> Tensor:
        if not isinstance(strings, (list, tuple)):
            raise ValueError("strings must be a list of bytes (one per batch element)")
        if len(strings) != indexes.size(0):
            raise ValueError(f"got {len(strings)} strings for a batch of {indexes.size(0)}")
        tab, lengths, offs = self._tables()
        rans = _rans()
        outputs = torch.empty(indexes.size(), dtype=torch.int32)
        for i, s in enumerate(strings):
            vals = rans.decode_with_cdfs(
                s, indexes[i].reshape(-1).cpu().numpy().astype(np.int64), tab, lengths, offs,
                precision=self.entropy_coder_precision, backend=self.coder_backend,
            )
            outputs[i] = torch.from_numpy(np.asarray(vals, dtype=np.int32)).reshape(outputs[i].size())
        return self.dequantize(outputs.to(indexes.device), means, dtype)

    # -- state_dict: the CDF buffers are resized to the checkpoint's before loading ----------
    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args, **kwargs):  # type: ignore[override]
        for name in self._resizable_buffers():
            key = prefix + name
            if key in state_dict:
                cur = getattr(self, name)
                setattr(self, name, torch.empty_like(cur, dtype=state_dict[key].dtype).resize_(state_dict[key].size()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _resizable_buffers(self) -> tuple[str, ...]:
        return ("_offset", "_quantized_cdf", "_cdf_length")


class EntropyBottleneck(EntropyModel):
    """Factorized prior (Balle, Minnen, Singh, Hwang, Johnston, ICLR 2018, sec. 6.1).

    ::

        z --(+U noise | round around the median)--> z_hat
                       |
        per channel c: P(z_hat) = sigmoid(f(z_hat + 1/2)) - sigmoid(f(z_hat - 1/2))
                       f = K small dense layers (softplus(H), b, tanh(a) * tanh gating)
    """

    target: Tensor

    def __init__(self, channels: int, *args: Any, tail_mass: float = 1e-9, init_scale: float = 10,
                 filters: tuple[int, ...] = (3, 3, 3, 3), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        self.tail_mass = float(tail_mass)
        fs = (1,) + self.filters + (1,)
        scale = self.init_scale ** (1 / (len(self.filters) + 1))
        for i in range(len(self.filters) + 1):
            init = float(np.log(np.expm1(1 / scale / fs[i + 1])))
            self.register_parameter(f"_matrix{i:d}", nn.Parameter(torch.full((channels, fs[i + 1], fs[i]), init)))
            self.register_parameter(f"_bias{i:d}", nn.Parameter(torch.empty(channels, fs[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(self.filters):
                self.register_parameter(f"_factor{i:d}", nn.Parameter(torch.zeros(channels, fs[i + 1], 1)))
        self.quantiles = nn.Parameter(torch.tensor([-self.init_scale, 0.0, self.init_scale]).repeat(channels, 1, 1))
        target = float(np.log(2 / self.tail_mass - 1))
        self.register_buffer("target", torch.tensor([-target, 0.0, target]))

    def _get_medians(self) -> Tensor:
        return self.quantiles[:, :, 1:2]

    def update(self, force: bool = False) -> bool:
        """Build the integer CDF tables from the learned density (skipped when already built, unless forced)."""
        if self._offset.numel() > 0 and not force:
            return False
        q = self.quantiles.detach()
        medians = q[:, 0, 1]
        minima = torch.ceil(medians - q[:, 0, 0]).int().clamp(min=0)
        maxima = torch.ceil(q[:, 0, 2] - medians).int().clamp(min=0)
        self._offset = -minima
        pmf_start = medians - minima
        pmf_length = maxima + minima + 1
        max_length = int(pmf_length.max().item())
        samples = torch.arange(max_length, device=q.device)[None, :] + pmf_start[:, None, None]
        with torch.no_grad():
            pmf, lower, upper = self._likelihood(samples, stop_gradient=True)
        pmf = pmf[:, 0, :]
        tail_mass = torch.sigmoid(lower[:, 0, :1]) + torch.sigmoid(-upper[:, 0, -1:])
        self._quantized_cdf = self._pmf_to_cdf(pmf, tail_mass, pmf_length, max_length)
        self._cdf_length = pmf_length + 2
        return True

    def loss(self) -> Tensor:
        """Auxiliary loss that moves ``quantiles`` to the tail-mass / median targets."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def _logits_cumulative(self, inputs: Tensor, stop_gradient: bool) -> Tensor:
        logits = inputs
        for i in range(len(self.filters) + 1):
            matrix = getattr(self, f"_matrix{i:d}")
            bias = getattr(self, f"_bias{i:d}")
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(F.softplus(matrix), logits) + bias
            if i < len(self.filters):
                factor = getattr(self, f"_factor{i:d}")
                if stop_gradient:
                    factor = factor.detach()
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def _likelihood(self, inputs: Tensor, stop_gradient: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        lower = self._logits_cumulative(inputs - 0.5, stop_gradient=stop_gradient)
        upper = self._logits_cumulative(inputs + 0.5, stop_gradient=stop_gradient)
        return torch.sigmoid(upper) - torch.sigmoid(lower), lower, upper

    def forward(self, x: Tensor, training: bool | None = None) -> tuple[Tensor, Tensor]:
        if training is None:
            training = self.training
        perm = [1, 0] + list(range(2, x.dim()))
        xt = x.permute(*perm).contiguous()
        shape = xt.size()
        values = xt.reshape(xt.size(0), 1, -1)
        outputs = self.quantize(values, "noise" if training else "dequantize", self._get_medians())
        # the density is evaluated in float32 even under bf16 autocast: its matmuls set the rate of z
        with torch.autocast(device_type=x.device.type, enabled=False):
            likelihood, _, _ = self._likelihood(outputs.float())
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        outputs = outputs.reshape(shape).permute(*perm).contiguous()
        likelihood = likelihood.reshape(shape).permute(*perm).contiguous()
        return outputs, likelihood

    @staticmethod
    def _build_indexes(size: Sequence[int]) -> Tensor:
        n, c = size[0], size[1]
        view = [1] * len(size)
        view[1] = -1
        return torch.arange(c).view(*view).int().repeat(n, 1, *size[2:])

    def compress(self, x: Tensor) -> list[bytes]:  # type: ignore[override]
        indexes = self._build_indexes(x.size())
        medians = self._get_medians().detach().reshape(1, -1, *([1] * (x.dim() - 2))).expand(x.size(0), -1, *x.shape[2:])
        return super().compress(x, indexes, medians)

    def decompress(self, strings: Sequence[bytes], size: Sequence[int]) -> Tensor:  # type: ignore[override]
        self._check_updated()
        out_size = (len(strings), self._quantized_cdf.size(0), *size)
        indexes = self._build_indexes(out_size)
        medians = self._get_medians().detach().reshape(1, -1, *([1] * len(size))).expand(len(strings), -1, *size)
        return super().decompress(strings, indexes, medians.dtype, medians)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for old, new in (("_matrices.", "_matrix"), ("_biases.", "_bias"), ("_factors.", "_factor")):
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class GaussianConditional(EntropyModel):
    """Conditional Gaussian entropy model (Balle et al. 2018; means as in Minnen et al. 2018).

    ::

        y, sigma (, mu) --> y_hat = round(y - mu) + mu      (U noise in training)
        P(y_hat) = Phi((1/2 - |y_hat - mu|)/sigma) - Phi((-1/2 - |y_hat - mu|)/sigma)
        coding: sigma -> index of the smallest scale_table entry >= sigma -> integer CDF row
    """

    scale_table: Tensor
    scale_bound: Tensor

    def __init__(self, scale_table: Sequence[float] | None, *args: Any, scale_bound: float = 0.11,
                 tail_mass: float = 1e-9, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if scale_table is not None and (list(scale_table) != sorted(scale_table) or any(s <= 0 for s in scale_table)):
            raise ValueError("scale_table must be positive and sorted")
        self.tail_mass = float(tail_mass)
        st = torch.tensor([float(s) for s in scale_table]) if scale_table else torch.Tensor()
        self.register_buffer("scale_table", st)
        self.register_buffer("scale_bound", torch.tensor([float(scale_bound)]))
        self.lower_bound_scale = LowerBound(float(scale_bound) if scale_bound > 0 else float(st[0]))

    def _resizable_buffers(self) -> tuple[str, ...]:
        return ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")

    @staticmethod
    def _standardized_cumulative(inputs: Tensor) -> Tensor:
        return 0.5 * torch.erfc(-(2**-0.5) * inputs)

    def update_scale_table(self, scale_table: Tensor | Sequence[float], force: bool = False) -> bool:
        if self._offset.numel() > 0 and not force:
            return False
        self.scale_table = torch.as_tensor(scale_table, dtype=torch.float32).to(self.scale_bound.device)
        self.update()
        return True

    def update(self) -> None:
        multiplier = -float(torch.special.ndtri(torch.tensor(self.tail_mass / 2, dtype=torch.float64)))
        pmf_center = torch.ceil(self.scale_table * multiplier).int()
        pmf_length = 2 * pmf_center + 1
        max_length = int(torch.max(pmf_length).item())
        samples = torch.abs(torch.arange(max_length, device=pmf_center.device).int() - pmf_center[:, None]).float()
        samples_scale = self.scale_table.unsqueeze(1).float()
        upper = self._standardized_cumulative((0.5 - samples) / samples_scale)
        lower = self._standardized_cumulative((-0.5 - samples) / samples_scale)
        pmf = upper - lower
        tail_mass = 2 * lower[:, :1]
        self._quantized_cdf = self._pmf_to_cdf(pmf, tail_mass, pmf_length, max_length)
        self._offset = -pmf_center
        self._cdf_length = pmf_length + 2

    def _likelihood(self, inputs: Tensor, scales: Tensor, means: Tensor | None = None) -> Tensor:
        values = inputs - means if means is not None else inputs
        scales = self.lower_bound_scale(scales)
        values = torch.abs(values)
        upper = self._standardized_cumulative((0.5 - values) / scales)
        lower = self._standardized_cumulative((-0.5 - values) / scales)
        return upper - lower

    def forward(self, inputs: Tensor, scales: Tensor, means: Tensor | None = None,
                training: bool | None = None) -> tuple[Tensor, Tensor]:
        if training is None:
            training = self.training
        outputs = self.quantize(inputs, "noise" if training else "dequantize", means)
        likelihood = self._likelihood(outputs.float(), scales.float(), means.float() if means is not None else None)
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        return outputs, likelihood

    def build_indexes(self, scales: Tensor) -> Tensor:
        """Index of the first ``scale_table`` entry >= ``max(scale, scale_bound)`` (last entry if none)."""
        if self.scale_table.numel() == 0:
            raise ValueError("empty scale table: call model.update() first")
        scales = self.lower_bound_scale(scales)
        indexes = scales.new_full(scales.size(), len(self.scale_table) - 1).int()
        for s in self.scale_table[:-1]:
            indexes -= (scales <= s).int()
        return indexes
