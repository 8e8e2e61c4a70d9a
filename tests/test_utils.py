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
