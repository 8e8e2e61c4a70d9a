"""Docstring examples of megabit.search are executed."""
import doctest
import importlib

import pytest

MODULES = ["megabit.search.quantize", "megabit.search.actquant", "megabit.search.allocate", "megabit.search.adaptive"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    res = doctest.testmod(importlib.import_module(name))
    assert res.attempted > 0 and res.failed == 0
