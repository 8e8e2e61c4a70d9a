"""The likelihood-estimate evaluation agrees with the real bitstream: same reconstruction, rate below
the file size by no more than the stream framing."""
import pytest
import torch

from megabit.search import evaluate_bitstream, evaluate_likelihood

from megabit.models.lic import LICConfig, build_codec


@pytest.mark.parametrize("arch", ["scale-hyperprior", "mean-scale-hyperprior"])
def test_likelihood_estimate_matches_bitstream(arch):
    torch.manual_seed(0)
    net = build_codec(LICConfig(arch, 8, 8)).eval()
    with torch.no_grad():  # latents spread over a few symbols, inside the CDF tables' range (no escapes)
        net.g_a[-1].weight.mul_(5.0)
    net.update(force=True)
    g = torch.Generator().manual_seed(1)
    imgs = [(torch.rand(3, 70, 90, generator=g) * 255).to(torch.uint8) for _ in range(2)]
    real = evaluate_bitstream(net, imgs, msssim=False)
    est = evaluate_likelihood(net, imgs, msssim=False)
    assert est["n_images"] == real["n_images"] == 2 and est["rate"] == "likelihood estimate"
    for r, e in zip(real["per_image"], est["per_image"]):
        assert e["psnr"] == pytest.approx(r["psnr"], abs=1e-4)  # same y_hat -> same x_hat
        n_pix = 70 * 90
        # the file adds each string's final rANS state and the CDF tables' 16-bit rounding to the estimate
        assert abs(r["bpp"] - e["bpp"]) < 0.05 * e["bpp"] + 32 * 8 / n_pix
