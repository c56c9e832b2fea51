"""The packaging checks that build, install and resolve from PyPI (``-m packaging``) take a
minute or more: ``.ci/run`` runs them with ``OSTIARY_PACKAGING=1``; the normal test command
deselects them (reported as deselected, not skipped)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("OSTIARY_PACKAGING") == "1":
        return
    chosen = [item for item in items if item.get_closest_marker("packaging") is None]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
        items[:] = chosen
