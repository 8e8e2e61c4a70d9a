"""Hyperprior image codecs with CompressAI's contract and state_dict layout.

Contract (``compressai.models.CompressionModel``):

* ``forward(x) -> {"x_hat": Tensor, "likelihoods": {"y": Tensor, "z": Tensor}}`` (noise in
  training mode, rounding in eval mode);
* ``compress(x) -> {"strings": [y_strings, z_strings], "shape": z.shape[-2:]}``;
* ``decompress(strings, shape) -> {"x_hat": Tensor}``;
* ``update(scale_table=None, force=False)`` builds the integer CDFs; ``aux_loss()``;
* transforms ``g_a`` (analysis), ``g_s`` (synthesis), ``h_a``/``h_s`` (hyper analysis/synthesis),
  ``entropy_bottleneck``, ``gaussian_conditional`` (and ``context_prediction``/``entropy_parameters``
  for the autoregressive model), with the same module indices as CompressAI so that
  ``load_state_dict`` takes a CompressAI checkpoint of the same architecture and N/M.

Images are ``[B, 3, H, W]`` in [0, 1] with H, W multiples of 64 (pad first otherwise).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .entropy_models import EntropyBottleneck, GaussianConditional, get_scale_table
from .layers import (
    GDN,
    MaskedConv2d,
    ResidualBlock,
    ResidualBlockUpsample,
    ResidualBlockWithStride,
    conv,
    conv3x3,
    deconv,
    subpel_conv3x3,
)

__all__ = ["CompressionModel", "ScaleHyperprior", "MeanScaleHyperprior", "JointAutoregressiveHierarchicalPriors",
           "Cheng2020Anchor"]


class CompressionModel(nn.Module):
    """Base: an ``entropy_bottleneck`` for z plus the shared ``update``/``aux_loss`` helpers."""

    def __init__(self, entropy_bottleneck_channels: int):
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(entropy_bottleneck_channels)

    def aux_loss(self) -> Tensor:
        return sum(m.loss() for m in self.modules() if isinstance(m, EntropyBottleneck))  # type: ignore[return-value]

    def update(self, scale_table: Tensor | None = None, force: bool = False) -> bool:
        """Build the integer CDF tables of every entropy model; returns True if anything was rebuilt."""
        if scale_table is None:
            scale_table = get_scale_table()
        updated = False
        for m in self.modules():
            if isinstance(m, EntropyBottleneck):
                updated |= m.update(force=force)
            if isinstance(m, GaussianConditional):
                updated |= m.update_scale_table(scale_table, force=force)
        return updated

    def set_coder_backend(self, backend: str | None) -> None:
        """rANS backend for this model's entropy models ("numba" | "python" | None = best available)."""
        for m in self.modules():
            if isinstance(m, (EntropyBottleneck, GaussianConditional)):
                m.coder_backend = backend

    @staticmethod
    def _check_input(x: Tensor, multiple: int = 64) -> None:
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(x.shape)}")
        if x.size(2) % multiple or x.size(3) % multiple:
            raise ValueError(f"H and W must be multiples of {multiple}, got {tuple(x.shape[-2:])} (pad first)")


class ScaleHyperprior(CompressionModel):
    r"""Scale hyperprior: Balle, Minnen, Singh, Hwang, Johnston, "Variational image compression with a
    scale hyperprior", ICLR 2018 (CompressAI ``bmshj2018-hyperprior``).

    ::

              ┌───┐    y     ┌───┐  z  ┌───┐ z_hat      z_hat ┌───┐
        x ──►─┤g_a├──►─┬──►──┤h_a├──►──┤ Q ├───►───·⋯⋯·───►───┤h_s├─┐
              └───┘    │     └───┘     └───┘        EB        └───┘ │ sigma
                       ▼                                            │
                     ┌─┴─┐                                          │
                     │ Q │                                          ▼
                     └─┬─┘                                          │
                 y_hat ▼                                            │
                       ·⋯⋯·──────── GaussianConditional(sigma) ◄────┘
                       ▼
              ┌───┐    │
        x_hat◄┤g_s├─◄──┘
              └───┘

    ``g_a``: 4 x (5x5 conv, stride 2) with GDN between; ``g_s``: mirror with IGDN; ``h_a`` takes |y|;
    ``h_s`` ends in ReLU (scales are non-negative). N channels inside, M for y.
    """

    def __init__(self, N: int = 64, M: int = 96, **kwargs: Any):
        super().__init__(entropy_bottleneck_channels=N, **kwargs)
        self.N, self.M = int(N), int(M)
        self.g_a = nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3),
        )
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.ReLU(inplace=True), conv(N, N), nn.ReLU(inplace=True), conv(N, N)
        )
        self.h_s = nn.Sequential(
            deconv(N, N), nn.ReLU(inplace=True), deconv(N, N), nn.ReLU(inplace=True),
            conv(N, M, stride=1, kernel_size=3), nn.ReLU(inplace=True),
        )
        self.gaussian_conditional = GaussianConditional(None)

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (4 + 2)

    def forward(self, x: Tensor) -> dict[str, Any]:
        y = self.g_a(x)
        z = self.h_a(torch.abs(y))
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales_hat = self.h_s(z_hat)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat)
        x_hat = self.g_s(y_hat)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def compress(self, x: Tensor) -> dict[str, Any]:
        self._check_input(x)
        y = self.g_a(x)
        z = self.h_a(torch.abs(y))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        indexes = self.gaussian_conditional.build_indexes(self.h_s(z_hat))
        y_strings = self.gaussian_conditional.compress(y, indexes)
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]) -> dict[str, Any]:
        if not isinstance(strings, (list, tuple)) or len(strings) != 2:
            raise ValueError("strings must be [y_strings, z_strings]")
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        indexes = self.gaussian_conditional.build_indexes(self.h_s(z_hat))
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
        x_hat = self.g_s(y_hat).clamp_(0, 1)
        return {"x_hat": x_hat}


class MeanScaleHyperprior(ScaleHyperprior):
    r"""Mean-scale hyperprior: Minnen, Balle, Toderici, "Joint autoregressive and hierarchical priors for
    learned image compression", NeurIPS 2018, *without* the context model (CompressAI ``mbt2018-mean``).

    ::

        x ─► g_a ─► y ─┬─► h_a ─► z ─► Q ─► EB ─► z_hat ─► h_s ─► (sigma, mu)
                       ▼                                             │
                       Q(y - mu) + mu ─► GaussianConditional(sigma, mu) ◄┘
                       ▼
        x_hat ◄─ g_s ◄─ y_hat

    Same ``g_a``/``g_s`` as :class:`ScaleHyperprior`; ``h_a`` sees y (not |y|), LeakyReLU, and ``h_s``
    widens to 2M channels split into scales and means.
    """

    def __init__(self, N: int = 64, M: int = 96, **kwargs: Any):
        super().__init__(N=N, M=M, **kwargs)
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True), conv(N, N), nn.LeakyReLU(inplace=True),
            conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True), deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )

    def forward(self, x: Tensor) -> dict[str, Any]:
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        x_hat = self.g_s(y_hat)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def compress(self, x: Tensor) -> dict[str, Any]:
        self._check_input(x)
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means_hat)
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]) -> dict[str, Any]:
        if not isinstance(strings, (list, tuple)) or len(strings) != 2:
            raise ValueError("strings must be [y_strings, z_strings]")
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, means=means_hat)
        x_hat = self.g_s(y_hat).clamp_(0, 1)
        return {"x_hat": x_hat}


class JointAutoregressiveHierarchicalPriors(MeanScaleHyperprior):
    r"""Minnen, Balle, Toderici, NeurIPS 2018 (CompressAI ``mbt2018``): mean-scale hyperprior plus a
    causal 5x5 context model on y_hat; ``entropy_parameters`` (1x1 convs) fuse both into (sigma, mu).

    ::

        z_hat ─► h_s ─► psi ─┐
                             ├─► entropy_parameters ─► (sigma, mu) ─► GaussianConditional
        y_hat ─► context_prediction (masked 5x5) ─► phi ─┘

    Decoding is sequential in raster order over the y grid (one rANS string per image, decoded
    incrementally).
    """

    def __init__(self, N: int = 64, M: int = 96, **kwargs: Any):
        super().__init__(N=N, M=M, **kwargs)
        self.g_a = nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True), conv(N, N), nn.LeakyReLU(inplace=True),
            conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True), deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(M * 12 // 3, M * 10 // 3, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(M * 10 // 3, M * 8 // 3, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(M * 8 // 3, M * 6 // 3, 1),
        )
        self.context_prediction = MaskedConv2d(M, 2 * M, kernel_size=5, padding=2, stride=1)

    def forward(self, x: Tensor) -> dict[str, Any]:
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        params = self.h_s(z_hat)
        y_hat = self.gaussian_conditional.quantize(y, "noise" if self.training else "dequantize")
        ctx_params = self.context_prediction(y_hat)
        gaussian_params = self.entropy_parameters(torch.cat((params, ctx_params), dim=1))
        scales_hat, means_hat = gaussian_params.chunk(2, 1)
        _, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        x_hat = self.g_s(y_hat)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    # The serial loop below mirrors CompressAI's _compress_ar/_decompress_ar: the encoder visits y in
    # raster order with the same arithmetic as the decoder, so the indexes and means agree exactly.
    def _ar_params(self, y_hat_pad: Tensor, params: Tensor, h: int, w: int, k: int) -> tuple[Tensor, Tensor]:
        crop = y_hat_pad[:, :, h:h + k, w:w + k]
        ctx_p = F.conv2d(crop, self.context_prediction.masked_weight(), self.context_prediction.bias)
        p = params[:, :, h:h + 1, w:w + 1]
        gp = self.entropy_parameters(torch.cat((p, ctx_p), dim=1)).squeeze(3).squeeze(2)
        scales_hat, means_hat = gp.chunk(2, 1)
        return scales_hat, means_hat

    def compress(self, x: Tensor) -> dict[str, Any]:
        self._check_input(x)
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        params = self.h_s(z_hat)
        y_strings = [self._compress_ar(y[i:i + 1], params[i:i + 1])[0] for i in range(y.size(0))]
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    def _compress_ar(self, y: Tensor, params: Tensor) -> tuple[bytes, Tensor]:
        """Encode one image's y in raster order; returns (string, y_hat as the decoder will see it)."""
        from megabit.entropy import rans

        gc = self.gaussian_conditional
        k = self.context_prediction.kernel_size[0]
        pad = (k - 1) // 2
        H, W = y.shape[2], y.shape[3]
        y_hat = F.pad(y, (pad, pad, pad, pad))
        syms, idxs = [], []
        for h in range(H):
            for w in range(W):
                scales_hat, means_hat = self._ar_params(y_hat, params, h, w, k)
                indexes = gc.build_indexes(scales_hat)
                y_q = gc.quantize(y_hat[:, :, h + pad, w + pad], "symbols", means_hat)
                y_hat[:, :, h + pad, w + pad] = y_q + means_hat
                syms.append(y_q.reshape(-1))
                idxs.append(indexes.reshape(-1))
        tab, lengths, offs = gc._tables()
        s = rans.encode_with_cdfs(torch.cat(syms).numpy().astype("int32"), torch.cat(idxs).numpy().astype("int64"),
                                  tab, lengths, offs, precision=gc.entropy_coder_precision, backend=gc.coder_backend)
        return s, y_hat[:, :, pad:pad + H, pad:pad + W]

    def _decompress_ar(self, string: bytes, params: Tensor, H: int, W: int) -> Tensor:
        """Decode one image's y_hat [1, M, H, W] from its string (sequential, raster order)."""
        from ._stream import CdfStreamDecoder

        gc = self.gaussian_conditional
        k = self.context_prediction.kernel_size[0]
        pad = (k - 1) // 2
        tab, lengths, offs = gc._tables()
        dec = CdfStreamDecoder(string, tab, lengths, offs, gc.entropy_coder_precision)
        y_hat = torch.zeros((1, self.M, H + 2 * pad, W + 2 * pad), dtype=params.dtype)
        for h in range(H):
            for w in range(W):
                scales_hat, means_hat = self._ar_params(y_hat, params, h, w, k)
                indexes = gc.build_indexes(scales_hat)
                rv = torch.from_numpy(dec.decode(indexes.reshape(-1).numpy())).reshape(1, -1)
                y_hat[:, :, h + pad, w + pad] = gc.dequantize(rv, means_hat)
        dec.finish()
        return y_hat[:, :, pad:pad + H, pad:pad + W]

    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]) -> dict[str, Any]:
        if not isinstance(strings, (list, tuple)) or len(strings) != 2:
            raise ValueError("strings must be [y_strings, z_strings]")
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        params = self.h_s(z_hat)
        H, W = z_hat.shape[2] * 4, z_hat.shape[3] * 4
        y_hat = torch.cat([self._decompress_ar(s, params[i:i + 1], H, W) for i, s in enumerate(strings[0])])
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}


class Cheng2020Anchor(JointAutoregressiveHierarchicalPriors):
    r"""Cheng, Sun, Takeuchi, Katto, "Learned image compression with discretized Gaussian mixture
    likelihoods and attention modules", CVPR 2020 -- the *anchor* variant without attention and with a
    single Gaussian (CompressAI ``cheng2020-anchor``): residual blocks in g_a/g_s, 3x3 hyper transforms,
    context model + entropy parameters as in :class:`JointAutoregressiveHierarchicalPriors`, M = N.

    ::

        g_a: [RB/2 ─ RB] x3 ─ conv3x3/2            g_s: [RB ─ RBup x2] x3 ─ RB ─ subpel x2
        RB/2:  x ─ conv3x3/2 ─ lrelu ─ conv3x3 ─ GDN ─(+)─        skip: conv1x1/2
        RBup:  x ─ subpel x2 ─ lrelu ─ conv3x3 ─ IGDN ─(+)─       skip: subpel x2
        h_a: conv3x3 ─ lrelu ─ conv3x3 ─ lrelu ─ conv3x3/2 ─ lrelu ─ conv3x3 ─ lrelu ─ conv3x3/2
        h_s: conv3x3 ─ lrelu ─ subpel x2 ─ lrelu ─ conv3x3 ─ lrelu ─ subpel x2 ─ lrelu ─ conv3x3 (-> 2N)
    """

    def __init__(self, N: int = 64, **kwargs: Any):
        super().__init__(N=N, M=N, **kwargs)
        self.g_a = nn.Sequential(
            ResidualBlockWithStride(3, N, stride=2), ResidualBlock(N, N),
            ResidualBlockWithStride(N, N, stride=2), ResidualBlock(N, N),
            ResidualBlockWithStride(N, N, stride=2), ResidualBlock(N, N),
            conv3x3(N, N, stride=2),
        )
        self.h_a = nn.Sequential(
            conv3x3(N, N), nn.LeakyReLU(inplace=True), conv3x3(N, N), nn.LeakyReLU(inplace=True),
            conv3x3(N, N, stride=2), nn.LeakyReLU(inplace=True), conv3x3(N, N), nn.LeakyReLU(inplace=True),
            conv3x3(N, N, stride=2),
        )
        self.h_s = nn.Sequential(
            conv3x3(N, N), nn.LeakyReLU(inplace=True), subpel_conv3x3(N, N, 2), nn.LeakyReLU(inplace=True),
            conv3x3(N, N * 3 // 2), nn.LeakyReLU(inplace=True), subpel_conv3x3(N * 3 // 2, N * 3 // 2, 2),
            nn.LeakyReLU(inplace=True), conv3x3(N * 3 // 2, N * 2),
        )
        self.g_s = nn.Sequential(
            ResidualBlock(N, N), ResidualBlockUpsample(N, N, 2),
            ResidualBlock(N, N), ResidualBlockUpsample(N, N, 2),
            ResidualBlock(N, N), ResidualBlockUpsample(N, N, 2),
            ResidualBlock(N, N), subpel_conv3x3(N, 3, 2),
        )
