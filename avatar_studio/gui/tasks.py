"""Run blocking work (service calls, downloads, file loading) off the GUI thread, report back on it.

Why one helper: every panel talks to the service through the blocking ``ServiceClient``. Calling
it on the GUI thread would freeze the window for a slow provider or a dead network; calling Qt
from a worker thread would crash. ``run_task`` runs ``fn`` in Qt's thread pool and delivers the
result or the exception to callbacks on the GUI thread through a queued signal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot


class _Relay(QObject):
    """Lives on the GUI thread; its signals cross threads as queued connections."""

    sig_done = Signal(object)
    """The task returned; carries its result."""
    sig_failed = Signal(object)
    """The task raised; carries the exception."""


class _Runnable(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay) -> None:
        super().__init__()
        self._fn = fn
        self._relay = relay

    def run(self) -> None:
        try:
            result = self._fn()
        except BaseException as exc:  # handed to the GUI thread, which decides what the user sees
            self._relay.sig_failed.emit(exc)
        else:
            self._relay.sig_done.emit(result)


_alive: set[_Relay] = set()  # keep relays alive until their task reports


def run_task(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    *,
    pool: QThreadPool | None = None,
) -> None:
    """Run ``fn()`` in the thread pool; call ``on_done(result)`` or ``on_error(exc)`` on the GUI thread.

    Callbacks must tolerate their widget having been closed meanwhile (check a ``_closed`` flag).
    """
    relay = _Relay()
    _alive.add(relay)

    @Slot(object)
    def done(result: object) -> None:
        _alive.discard(relay)
        if on_done is not None:
            on_done(result)

    @Slot(object)
    def failed(exc: object) -> None:
        _alive.discard(relay)
        if on_error is not None:
            on_error(exc)  # type: ignore[arg-type]
        else:
            raise exc  # type: ignore[misc]

    relay.sig_done.connect(done)
    relay.sig_failed.connect(failed)
    (pool or QThreadPool.globalInstance()).start(_Runnable(fn, relay))
