"""The Examples sections of the core's docstrings run and stay true."""

import doctest
import importlib
import pkgutil

import pytest

import napari_spoco.core

MODULES = sorted(m.name for m in pkgutil.iter_modules(napari_spoco.core.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"napari_spoco.core.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
