"""``BUILTIN_COMPONENTS`` names the module of every component featureflow ships."""

from __future__ import annotations

import importlib

import pytest

from featureflow.utils import BUILTIN_COMPONENTS, COMPONENT_PACKAGES, COMPONENTS, find_component


def _shipped() -> dict[str, str]:
    for package in COMPONENT_PACKAGES:
        importlib.import_module(package)
    inside = tuple(package + "." for package in COMPONENT_PACKAGES)
    return {name: cls.__module__ for name, cls in COMPONENTS.items() if cls.__module__.startswith(inside)}


def test_table_lists_every_shipped_component_with_its_module():
    assert _shipped() == BUILTIN_COMPONENTS


def test_find_component_returns_the_registered_class():
    cls = find_component("FeatureVAE")
    assert cls.__name__ == "FeatureVAE" and cls.__module__ == "featureflow.compressors.vae"
    assert COMPONENTS["FeatureVAE"] is cls


def test_unknown_component_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown component type 'NoSuchHead'; expected one of \[.*'DPTHead'"):
        find_component("NoSuchHead")
