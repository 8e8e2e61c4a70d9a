"""C99 export of a packed classifier or patch encoder: weights stay entropy-coded in flash, decoded on the fly.

>>> from megabit.export.c import export_c                                  # doctest: +SKIP
>>> res = export_c("model.mbit", "out/")                                    # doctest: +SKIP
>>> res.memory_map["flash"]["total"], res.memory_map["ram"]["total"]        # doctest: +SKIP

Then ``gcc -std=c99 -Wall -Wextra -Werror -O2 *.c -o model`` in ``out/``. See docs/c-export.md.
"""

from .emit import RUNTIME_FILES, ExportResult, export_c, runtime_source
from .memory import Layout, layout, memory_map
from .plan import CLayer, CModel, check_exportable, plan_model
from .toolchain import CFLAGS, compile_c, find_cc, object_sizes, run_c, run_c_codes

__all__ = ["export_c", "ExportResult", "RUNTIME_FILES", "runtime_source", "plan_model", "check_exportable",
           "CModel", "CLayer", "layout", "Layout", "memory_map", "CFLAGS", "find_cc", "compile_c", "run_c",
           "object_sizes", "run_c_codes"]
