"""Translation test-time augmentation on the bundled 1-Mbit classifier (session 23 study; prints).

    python recipes/nqe_tta_study.py    # ~13 min on 2 fp32 cores: 18 views of the 10k test images

Views: identity, flip, and shifts by +-d pixels (reflect padding, as in training) with and without
flip; scores are the head's integer decision accumulators (`decision_logits`), summed over views.
The shipped protocol is identity + flip (87.13 % on the JPEG-q75 CIFAR-10 copy).
"""
import sys
import time

import torch
import torch.nn.functional as F
from megabit.hub import resolve_classifier
from megabit.data.cifar import load_cifar10
torch.set_num_threads(2)
model, _ = resolve_classifier("nqe-1mbit"); model.eval()
te = load_cifar10(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/cifar10-jpeg-q75", "test")
x, y = te.x, te.y
def logits(xb):
    with torch.no_grad():
        return model.decision_logits(xb).float()
def shift(xb, dx, dy):
    p = F.pad(xb.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    return p[:, :, 2 + dy:2 + dy + 32, 2 + dx:2 + dx + 32]
views = {"id": lambda b: b, "flip": lambda b: b.flip(3)}
for d in (1, 2):
    for dx, dy in ((d, 0), (-d, 0), (0, d), (0, -d)):
        views[f"s{dx},{dy}"] = (lambda dx, dy: lambda b: shift(b, dx, dy))(dx, dy)
        views[f"fs{dx},{dy}"] = (lambda dx, dy: lambda b: shift(b.flip(3), dx, dy))(dx, dy)
t = time.time(); L = {}
for k, f in views.items():
    L[k] = torch.cat([logits(f(x[i:i + 500])) for i in range(0, len(x), 500)])
print("s", time.time() - t)
acc = lambda l: float((l.argmax(1) == y).float().mean())
print("id", acc(L["id"]), "flip", acc(L["id"] + L["flip"]))
for d in (1, 2):
    keys = ["id", "flip"] + [k for k in L if k.strip("fs") in (f"{d},0", f"-{d},0", f"0,{d}", f"0,-{d}")]
    print(d, len(keys), acc(sum(L[k] for k in keys)))
    keys2 = ["id", "flip", f"s{d},0", f"s-{d},0", f"fs{d},0", f"fs-{d},0"]
    print(d, "horiz", len(keys2), acc(sum(L[k] for k in keys2)))
