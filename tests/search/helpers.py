import numpy as np
import torch
from PIL import Image

from megabit.models.lic import LICConfig, build_codec
from megabit.search import LayerInfo, SensitivityTable


def tiny_codec(arch="scale-hyperprior"):
    """An untrained 8/8-channel codec whose latent is spread enough that quantization matters."""
    torch.manual_seed(0)
    net = build_codec(LICConfig(arch, 8, 8)).eval()
    with torch.no_grad():  # an untrained g_a gives |y| << 1/2, i.e. y_hat = 0 and a constant x_hat
        net.g_a[-1].weight.mul_(40.0)
    return net


def random_table(rng: np.random.Generator, n_layers: int, bits=tuple(range(2, 9))) -> SensitivityTable:
    layers = [LayerInfo(f"l{i}", int(rng.integers(10, 5000)), int(rng.integers(1, 32)), "Conv2d")
              for i in range(n_layers)]
    # decreasing in b on average, with noise so that it is not always monotone
    base = rng.uniform(0.5, 5.0, size=(n_layers, 1)) * 4.0 ** -np.arange(len(bits))[None, :]
    zeta = base * rng.uniform(0.7, 1.3, size=base.shape)
    return SensitivityTable(layers, list(bits), zeta, 1.0, 0.01)


def write_images(folder, n=3, size=64, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        a = ((a.astype(np.float32) + np.roll(a, 1, 0) + np.roll(a, 1, 1)) / 3).astype(np.uint8)  # some structure
        Image.fromarray(a).save(folder / f"im{i}.png")
    return folder
