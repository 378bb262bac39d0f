"""The Examples sections of the core's docstrings run and stay true."""

import doctest
import importlib
import pkgutil

import pytest

import napari_spoco.core

#: Every module of the core, subpackages included (``clustering.mutex``, ...).
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(napari_spoco.core.__path__, prefix="napari_spoco.core.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
