"""Fixtures for the review window: a main-window factory with leak checks, and test avatars.

Why a factory with leak checks (anchors-code habit 7): a window that leaves a GL plotter or a stray
top-level widget behind makes *later* tests crash or render into dead contexts, far away from the
test that caused it. Checking at every teardown points at the culprit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import pytest
import shiboken6
from memory_keyring import MemoryKeyring
from PySide6.QtCore import QCoreApplication, QEvent, QSettings
from PySide6.QtWidgets import QApplication

from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.gui.main_window import MainWindow

MakeMainWindow = Callable[..., MainWindow]


@pytest.fixture(scope="session")
def synthetic_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A textured 8k-vertex head with the 52 ARKit targets under ARKit's raw names, plus lower teeth."""
    path = tmp_path_factory.mktemp("avatars") / "synthetic-head.glb"
    path.write_bytes(make_arkit_head_glb(8000, name_style="arkit_raw", split_teeth=True))
    return path


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    """Per-test settings on disk, so recent files never leak into the user's (or the next test's)."""
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def _pointers(widgets: list) -> set[int]:
    return {shiboken6.getCppPointer(w)[0] for w in widgets if shiboken6.isValid(w)}


def _flush_deletes() -> None:
    for _ in range(3):
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        QCoreApplication.processEvents()


@pytest.fixture
def make_main_window(qtbot, settings: QSettings) -> Iterator[MakeMainWindow]:
    """``make_main_window(show=True, **kwargs)`` → a registered MainWindow, closed and checked at teardown."""
    from pyvista.plotting.plotter import _ALL_PLOTTERS

    widgets_before = _pointers(QApplication.topLevelWidgets())
    plotters_before = set(_ALL_PLOTTERS)
    windows: list[MainWindow] = []

    def factory(*, show: bool = True, **kwargs: object) -> MainWindow:
        kwargs.setdefault("settings", settings)
        window = MainWindow(**kwargs)
        qtbot.addWidget(window)
        windows.append(window)
        if show:
            window.resize(1000, 700)
            window.show()
            qtbot.waitExposed(window)
        return window

    yield factory

    for window in windows:
        if shiboken6.isValid(window):
            window.close()
            window.deleteLater()
    windows.clear()
    _flush_deletes()
    leaked = [
        f"{type(w).__name__}({w.objectName() or w.windowTitle()!r})"
        for w in QApplication.topLevelWidgets()
        if shiboken6.isValid(w) and shiboken6.getCppPointer(w)[0] not in widgets_before
    ]
    assert not leaked, f"top-level widgets survived the test: {leaked}"
    assert set(_ALL_PLOTTERS) <= plotters_before, "a pyvista plotter was not closed"


@pytest.fixture
def open_avatar(qtbot) -> Callable[[MainWindow, Path], None]:
    """Open ``path`` in ``window`` and wait until it is on screen with its first frame rendered."""

    def opener(window: MainWindow, path: Path) -> None:
        with qtbot.waitSignal(window.sig_avatar_shown, timeout=30_000) as blocker:
            window.open_file(str(path))
        assert blocker.args == [str(path.absolute())]
        view = window.view
        assert view is not None
        qtbot.waitUntil(lambda: view.frames_rendered > 0, timeout=10_000)

    return opener


# -- an in-memory keyring and a private data folder for every GUI test ------------------------------


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    """Every GUI test runs on an in-memory keyring: the user's real keyring is never read or written."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded service's data folder for this test (and nothing under the user's home)."""
    folder = tmp_path / "data"
    monkeypatch.setenv("AVATAR_STUDIO_DATA_DIR", str(folder))
    monkeypatch.delenv("PROVIDER", raising=False)
    monkeypatch.delenv("PROVIDER_API_KEY", raising=False)
    return folder
