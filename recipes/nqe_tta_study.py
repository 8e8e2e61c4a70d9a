"""Translation test-time augmentation on the bundled 1-Mbit classifier (session 23 study; prints).

    python recipes/nqe_tta_study.py [--data-root DIR] [--limit N]    # ~13 min on 2 fp32 cores: 18 views of the 10k test images

Views: identity, flip, and shifts by +-d pixels (reflect padding, as in training) with and without
flip; scores are the head's integer decision accumulators (`decision_logits`), summed over views.
The shipped protocol is identity + flip (87.13 % on the JPEG-q75 CIFAR-10 copy).
"""

import argparse
import time

import torch
import torch.nn.functional as F

from megabit.data.cifar import load_cifar10
from megabit.hub import resolve_classifier


def shift(xb: torch.Tensor, dx: int, dy: int, pad: int = 2) -> torch.Tensor:
    """uint8 images translated by (dx, dy) pixels, reflect padding (as random_crop_flip in training)."""
    p = F.pad(xb.float(), (pad, pad, pad, pad), mode="reflect").to(torch.uint8)
    return p[:, :, pad + dy : pad + dy + 32, pad + dx : pad + dx + 32]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data/cifar10-jpeg-q75")
    ap.add_argument("--model", default="nqe-1mbit")
    ap.add_argument("--limit", type=int, default=None, help="first N test images only")
    a = ap.parse_args()
    torch.set_num_threads(2)
    model, _ = resolve_classifier(a.model)
    model.eval()
    te = load_cifar10(a.data_root, "test", limit=a.limit)
    x, y = te.x, te.y
    views = {"id": lambda b: b, "flip": lambda b: b.flip(3)}
    for d in (1, 2):
        for dx, dy in ((d, 0), (-d, 0), (0, d), (0, -d)):
            views[f"s{dx},{dy}"] = lambda b, dx=dx, dy=dy: shift(b, dx, dy)
            views[f"fs{dx},{dy}"] = lambda b, dx=dx, dy=dy: shift(b.flip(3), dx, dy)
    t, scores = time.time(), {}
    with torch.no_grad():
        for k, f in views.items():
            scores[k] = torch.cat([model.decision_logits(f(x[i : i + 500])).float() for i in range(0, len(x), 500)])
    print(f"{len(views)} views in {time.time() - t:.0f} s")

    def acc(keys: list[str]) -> float:
        return float((sum(scores[k] for k in keys).argmax(1) == y).float().mean())

    print(f"identity {acc(['id']):.4f}  identity + flip {acc(['id', 'flip']):.4f}")
    for d in (1, 2):
        four = [f"{d},0", f"-{d},0", f"0,{d}", f"0,-{d}"]
        keys = ["id", "flip"] + [p + s for s in four for p in ("s", "fs")]
        horiz = ["id", "flip"] + [p + s for s in four[:2] for p in ("s", "fs")]
        print(f"+-{d} px: {len(keys)} views {acc(keys):.4f}, horizontal only {len(horiz)} views {acc(horiz):.4f}")


if __name__ == "__main__":
    main()
