"""Docstring examples of megabit.models.lic are executed."""
import doctest
import importlib

import pytest

MODULES = ["megabit.models.lic", "megabit.models.lic.layers", "megabit.models.lic.entropy_models"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    res = doctest.testmod(importlib.import_module(name))
    assert res.attempted > 0 and res.failed == 0
