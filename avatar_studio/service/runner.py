"""Running the service: embedded in the desktop app, standalone (``serve``), and extra ``worker`` processes.

Why one module for the three: they share the start-up sequence (engine, migrations, storage,
workers) and differ only in who owns the main thread. The embedded service binds its socket itself
(port 0 → a free loopback port) so the signed URLs it hands out name the real port.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

import sqlalchemy as sa
import uvicorn

from avatar_studio.config import Settings
from avatar_studio.service.app import create_app
from avatar_studio.service.db import create_engine, migrate
from avatar_studio.service.storage import LocalStorage, Storage, storage_from_settings
from avatar_studio.service.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class _Parts:
    engine: sa.Engine
    storage: Storage
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)


def _prepare(settings: Settings, base_url: str | None) -> _Parts:
    engine = create_engine(settings.database_url)
    migrate(engine)
    storage = storage_from_settings(settings)
    if isinstance(storage, LocalStorage) and (settings.public_base_url or base_url):
        storage.public_base_url = settings.public_base_url or base_url
    return _Parts(engine, storage)


def _start_workers(settings: Settings, parts: _Parts, count: int) -> None:
    for _ in range(count):
        parts.threads.append(Worker(settings, parts.engine, parts.storage).start_thread(parts.stop))


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn(app: object) -> uvicorn.Server:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


class EmbeddedService:
    """The service inside the desktop app's process: loopback only, SQLite and local storage by default.

    ``with EmbeddedService(settings) as service: ServiceClient(service.base_url, ...)``.
    """

    def __init__(self, settings: Settings, *, workers: int = 1, host: str = "127.0.0.1", port: int = 0) -> None:
        self.settings = settings
        self._workers = workers
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._parts: _Parts | None = None
        self.base_url = ""

    def start(self, timeout: float = 20.0) -> str:
        sock = _bind(self._host, self._port)
        host, port = sock.getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        try:
            self._parts = _prepare(self.settings, self.base_url)
            self._server = _uvicorn(create_app(self.settings, self._parts.engine, self._parts.storage))
            self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                            name="avatar-service", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + timeout
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the embedded avatar service did not start")
                time.sleep(0.01)
            _start_workers(self.settings, self._parts, self._workers)
        except BaseException:
            self.stop()
            sock.close()
            raise
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._parts is not None:
            self._parts.stop.set()
            for thread in self._parts.threads:
                thread.join(timeout=10)
            self._parts.engine.dispose()
        self._server = self._thread = self._parts = None

    @property
    def storage(self) -> Storage:
        assert self._parts is not None, "start() first"
        return self._parts.storage

    @property
    def engine(self) -> sa.Engine:
        assert self._parts is not None, "start() first"
        return self._parts.engine

    def __enter__(self) -> EmbeddedService:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _on_stop_signals(stop: threading.Event) -> None:
    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """``avatar-studio serve``: the API in the foreground plus ``workers`` in-process workers."""
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    parts = _prepare(settings, f"http://{bound_host}:{bound_port}")
    _start_workers(settings, parts, workers)
    log.warning("avatar service on http://%s:%s (database: %s, storage: %s, %d worker(s))", bound_host, bound_port,
                parts.engine.dialect.name, type(parts.storage).__name__, workers)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the handler
    # that was installed before it; ours only flags the workers, so the clean-up below still runs.
    _on_stop_signals(parts.stop)
    try:
        _uvicorn(create_app(settings, parts.engine, parts.storage)).run(sockets=[sock])
    finally:
        parts.stop.set()
        for thread in parts.threads:
            thread.join(timeout=30)
        parts.engine.dispose()


def run_workers(settings: Settings, count: int) -> None:
    """``avatar-studio worker``: job workers only, until SIGINT or SIGTERM (finishing the current step)."""
    parts = _prepare(settings, None)  # workers never sign download URLs
    _start_workers(settings, parts, count)

    _on_stop_signals(parts.stop)
    log.warning("%d avatar worker(s) on %s", count, parts.engine.dialect.name)
    while not parts.stop.wait(0.5):
        pass
    for thread in parts.threads:
        thread.join(timeout=60)
    parts.engine.dispose()
