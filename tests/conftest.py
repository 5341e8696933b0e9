"""Fixtures shared by the GUI test files."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _autosave_in_tmp(tmp_path_factory, monkeypatch):
    """The widget autosaves sessions (napari_medseg.autosave): never into the user's folder."""
    monkeypatch.setenv("MEDSEG_AUTOSAVE_DIR", str(tmp_path_factory.mktemp("autosave")))


@pytest.fixture
def notes():
    """Every napari notification shown during the test, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    got: list[tuple[str, str]] = []

    def record(n):
        got.append((str(n.severity).lower(), n.message))

    notification_manager.notification_ready.connect(record)
    yield got
    notification_manager.notification_ready.disconnect(record)
