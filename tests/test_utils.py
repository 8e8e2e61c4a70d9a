"""megabit.utils: the torch.compile log filter."""

import logging

from megabit.utils import quiet_item_graph_break


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.msgs: list[str] = []

    def emit(self, record):
        self.msgs.append(record.getMessage())


def test_item_graph_break_hint_dropped_other_warnings_kept():
    lg = logging.getLogger("torch._dynamo.variables.tensor")
    h = _Keep()
    lg.addHandler(h)
    try:
        quiet_item_graph_break()
        quiet_item_graph_break()  # idempotent: one filter
        assert sum(type(f).__name__ == "_DropItemGraphBreak" for f in lg.filters) == 1
        lg.warning("Graph break from `Tensor.item()`, consider setting: ...")
        lg.warning("some other dynamo warning")
        assert h.msgs == ["some other dynamo warning"]
    finally:
        lg.removeHandler(h)


_SCRIPT = """
import sys, torch
from megabit.utils import quiet_item_graph_break
if sys.argv[1] == "quiet":
    quiet_item_graph_break()
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("flag", torch.tensor(True))
    def forward(self, x):
        return x + 1 if bool(self.flag) else x  # the quantizers' graph break
torch.compile(M())(torch.ones(3))
"""


def test_real_compile_hint_present_then_dropped(tmp_path):
    """With a real torch.compile: the hint is printed without the filter (so a changed torch message
    fails here, not silently) and not with it."""
    import subprocess
    import sys

    script = tmp_path / "compile_break.py"
    script.write_text(_SCRIPT)
    out = {m: subprocess.run([sys.executable, str(script), m], capture_output=True, text=True, timeout=300)
           for m in ("loud", "quiet")}
    assert all(r.returncode == 0 for r in out.values()), {m: r.stderr[-500:] for m, r in out.items()}
    assert "Graph break from `Tensor.item()`" in out["loud"].stderr
    assert "Graph break from `Tensor.item()`" not in out["quiet"].stderr
