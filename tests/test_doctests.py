"""Docstring examples are executed (quantizers, STE ops, BSN)."""
import doctest
import importlib

import pytest

MODULES = ["megabit.quant.ste", "megabit.quant.weight", "megabit.quant.act", "megabit.norm.bsn"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    res = doctest.testmod(importlib.import_module(name))
    assert res.attempted > 0 and res.failed == 0
