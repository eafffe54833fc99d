"""Dataset recipes: one module per dataset, discovered by name.

A recipe module defines::

    NAME: str                  # what --recipe selects
    DESCRIPTION: str           # one line for `shardgen recipes`
    DEFAULT_ON_ERROR: str      # "raise" (user data) or "skip" (publisher data with known drift)
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def load(root: Path, **options) -> Collection

and documents the expected root layout in its module docstring.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def available() -> dict[str, ModuleType]:
    """All recipe modules by NAME, in name order."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "load"):
            found[module.NAME] = module
    return dict(sorted(found.items()))


def get(name: str) -> ModuleType:
    recipes = available()
    if name not in recipes:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(recipes)}")
    return recipes[name]
