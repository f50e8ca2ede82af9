"""The desktop app's connection to the avatar service: embedded in this process, or a remote URL.

Why a session object between the window and the client: every panel needs the same signed-in
``ServiceClient``, and getting one takes several slow steps (start the embedded service, or reach a
remote one; read the token from the keyring; verify or create the user). Doing them once, off the
GUI thread, and announcing the result through ``sig_ready`` lets the window paint at once and lets
panels plug in whenever they are created (:meth:`ServiceSession.when_ready`).

Why the token is keyed by a *service key* rather than by URL: the embedded service listens on a new
free loopback port on every start, so its URL changes each run while its database (in the data
folder) does not. The embedded key is therefore the data folder; a remote service's key is its URL.

Where the settings live: the choice of service and default provider are plain preferences in
``QSettings``; the token and API keys are secrets and live in the :class:`SecretStore` only.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from PySide6.QtCore import QObject, QSettings, Signal

from avatar_studio.gui.secret_store import SecretStore
from avatar_studio.gui.tasks import run_task

if TYPE_CHECKING:
    from avatar_studio.client import ServiceClient, UserInfo
    from avatar_studio.config import Settings
    from avatar_studio.service.runner import EmbeddedService

log = logging.getLogger(__name__)

MODE_EMBEDDED: Final[str] = "embedded"
MODE_REMOTE: Final[str] = "remote"
LOCAL_PROVIDER: Final[str] = "local"
CLOUD_PROVIDERS: Final[tuple[str, ...]] = ("avatar-sdk", "in3d", "didimo")
PROVIDER_CHOICES: Final[tuple[str, ...]] = (LOCAL_PROVIDER, *CLOUD_PROVIDERS)

KEY_MODE: Final[str] = "service/mode"
KEY_REMOTE_URL: Final[str] = "service/remoteUrl"
KEY_PROVIDER: Final[str] = "service/provider"
KEY_SESSION_ONLY: Final[str] = "secrets/keysSessionOnly"

STATE_IDLE: Final[str] = "Not connected"
STATE_STARTING: Final[str] = "Starting the avatar service…"


def embedded_service_key(data_dir: Path) -> str:
    """The token's key for the embedded service: stable across runs although its port is not."""
    return f"embedded:{data_dir}"


def data_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    """The data folder the embedded service would use, without creating anything (for Help → About)."""
    from avatar_studio.config import default_data_dir

    env = os.environ if env is None else env
    return Path(env.get("AVATAR_STUDIO_DATA_DIR") or default_data_dir()).expanduser().resolve()


class _Cancelled(Exception):
    """The session was stopped while this attempt was still connecting."""


@dataclass
class _Attempt:
    """One start-up in a worker; ``stop()`` flags it and, for the embedded service, waits for it."""

    embedded: bool
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Connected:
    client: ServiceClient
    user: UserInfo
    base_url: str
    service: EmbeddedService | None
    data_dir: Path | None


class ServiceSession(QObject):
    """Starts or reaches the service, signs in (creating a local user on first run), and stops it again.

    ``qsettings`` holds the service choice (``service/mode``, ``service/remoteUrl``,
    ``service/provider``); ``env`` feeds :meth:`Settings.from_env` for the embedded service (tests
    pass ``AVATAR_STUDIO_DATA_DIR`` there or in the environment).
    """

    sig_ready = Signal(object)
    """Emitted with the signed-in ``ServiceClient`` once the service answers and the user is known."""

    sig_failed = Signal(str)
    """Emitted with one sentence for the user when the service could not be started or reached; ``retry()``."""

    sig_state = Signal(str)
    """Emitted with the status-bar text whenever the connection state changes."""

    sig_user_changed = Signal(object)
    """Emitted with the new ``UserInfo`` after consent or age confirmation changed (see consent_dialog)."""

    def __init__(self, qsettings: QSettings, secrets: SecretStore | None = None, *,
                 env: Mapping[str, str] | None = None, embedded_workers: int = 1,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.qsettings = qsettings
        self.secrets = secrets if secrets is not None else SecretStore()
        self.secrets.keys_session_only = bool(qsettings.value(KEY_SESSION_ONLY, False, type=bool))
        self._env = env
        self._embedded_workers = embedded_workers
        self._connected: _Connected | None = None
        self._attempt: _Attempt | None = None
        self._state = STATE_IDLE
        self._error: str | None = None

    # --- what the rest of the app reads ----------------------------------------------------------

    @property
    def mode(self) -> str:
        """The configured service: ``"embedded"`` (default) or ``"remote"``."""
        value = str(self.qsettings.value(KEY_MODE, MODE_EMBEDDED))
        return value if value in (MODE_EMBEDDED, MODE_REMOTE) else MODE_EMBEDDED

    @property
    def remote_url(self) -> str:
        return str(self.qsettings.value(KEY_REMOTE_URL, "") or "").strip().rstrip("/")

    @property
    def default_provider(self) -> str | None:
        """The provider chosen in Settings, or None to keep the environment's ``PROVIDER`` (``local``)."""
        value = self.qsettings.value(KEY_PROVIDER, None)
        return str(value) if value in PROVIDER_CHOICES else None

    @property
    def provider(self) -> str:
        """The provider new jobs use by default: the Settings choice, else ``PROVIDER``, else ``local``."""
        env = os.environ if self._env is None else self._env
        return self.default_provider or env.get("PROVIDER") or LOCAL_PROVIDER

    @property
    def client(self) -> ServiceClient | None:
        """The signed-in client, or None until ``sig_ready`` (and again after ``stop()``)."""
        return self._connected.client if self._connected else None

    @property
    def user(self) -> UserInfo | None:
        return self._connected.user if self._connected else None

    @property
    def base_url(self) -> str | None:
        return self._connected.base_url if self._connected else None

    @property
    def is_embedded(self) -> bool:
        """Whether the service runs inside this process (its data folder is on this computer)."""
        if self._connected is not None:
            return self._connected.service is not None
        return self.mode == MODE_EMBEDDED

    @property
    def data_dir(self) -> Path | None:
        """The embedded service's data folder; None for a remote service."""
        if self._connected is not None:
            return self._connected.data_dir
        return data_dir_from_env(self._env) if self.mode == MODE_EMBEDDED else None

    @property
    def service_settings(self) -> Settings | None:
        """The settings the embedded service runs with (provider and key included); None when remote."""
        if self._connected is None or self._connected.service is None:
            return None
        return self._connected.service.settings

    @property
    def is_ready(self) -> bool:
        return self._connected is not None

    @property
    def is_starting(self) -> bool:
        return self._attempt is not None

    @property
    def state(self) -> str:
        """The current status-bar text."""
        return self._state

    @property
    def error(self) -> str | None:
        """The last start-up failure, until the next attempt."""
        return self._error

    def when_ready(self, callback: Callable[[ServiceClient], None]) -> None:
        """Call ``callback(client)`` now if connected, else at every future ``sig_ready`` (reconnects too).

        Why both: a panel created after the session came up would otherwise wait forever for a signal
        that has already been emitted.
        """
        self.sig_ready.connect(callback)
        if self._connected is not None:
            callback(self._connected.client)

    def set_user(self, user: UserInfo) -> None:
        """Record a user update made elsewhere (the consent dialog) and tell the panels."""
        if self._connected is not None:
            self._connected.user = user
            self.sig_user_changed.emit(user)

    # --- lifetime --------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; ``sig_ready`` or ``sig_failed`` follows. No-op while connecting/connected."""
        if self._attempt is not None or self._connected is not None:
            return
        self._begin(None)

    def retry(self) -> None:
        """Try again after ``sig_failed`` (for example once a remote service is back)."""
        if self._connected is None and self._attempt is None:
            self._begin(None)

    def reconnect(self) -> None:
        """Drop the current connection and connect again with the settings as they are now.

        The old embedded service is stopped in the worker, before the new one starts, so the window
        does not freeze while it shuts down and the two never share the database at once.
        """
        previous = self._connected
        self._cancel_attempt(wait=True)
        self._connected = None
        self._begin(previous)

    def stop(self) -> None:
        """Stop the embedded service and close the client; blocks until the service has let go of its port.

        Called from the main window's ``closeEvent``. An embedded start still in progress is waited
        for (and then stopped), so no service thread outlives the window.
        """
        self._cancel_attempt(wait=True)
        connected, self._connected = self._connected, None
        if connected is not None:
            _shut_down(connected)
        self._set_state(STATE_IDLE)

    # --- plumbing --------------------------------------------------------------------------------

    def _cancel_attempt(self, *, wait: bool) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        attempt.cancelled.set()
        if wait and attempt.embedded:
            attempt.finished.wait(timeout=30)

    def _begin(self, previous: _Connected | None) -> None:
        mode = self.mode
        attempt = _Attempt(embedded=mode == MODE_EMBEDDED)
        self._attempt = attempt
        self._error = None
        if mode == MODE_REMOTE:
            url = self.remote_url
            self._set_state(f"Connecting to {url or 'the remote service'}…")
            work = self._remote_work(url, attempt, previous)
        else:
            self._set_state(STATE_STARTING)
            # QSettings is read here, on the GUI thread: one instance must not be shared with a worker.
            work = self._embedded_work(attempt, previous, self.default_provider)
        run_task(work, lambda result: self._on_connected(attempt, result),
                 lambda exc: self._on_failed(attempt, exc))

    def _embedded_settings(self, chosen_provider: str | None) -> Settings:
        """Settings from the environment, with the chosen default provider and its key from the keyring."""
        from avatar_studio.config import Settings

        settings = Settings.from_env(self._env)
        provider = chosen_provider or settings.provider
        changes: dict[str, Any] = {"provider": provider}
        if provider != LOCAL_PROVIDER:
            key = self.secrets.get_api_key(provider)
            if key:
                changes["provider_api_key"] = key
            elif provider != settings.provider:
                changes["provider_api_key"] = None  # the environment's key belongs to another provider
        return settings.with_(**changes)

    def _embedded_work(self, attempt: _Attempt, previous: _Connected | None,
                       chosen_provider: str | None) -> Callable[[], _Connected]:
        workers = self._embedded_workers

        def work() -> _Connected:
            try:
                if previous is not None:
                    _shut_down(previous)
                from avatar_studio.service.runner import EmbeddedService

                settings = self._embedded_settings(chosen_provider)
                service = EmbeddedService(settings, workers=workers)
                base_url = service.start()
                try:
                    if attempt.cancelled.is_set():
                        raise _Cancelled
                    client, user = self._sign_in(base_url, embedded_service_key(settings.data_dir), attempt)
                except BaseException:
                    service.stop()
                    raise
                return _Connected(client, user, base_url, service, settings.data_dir)
            finally:
                attempt.finished.set()

        return work

    def _remote_work(self, url: str, attempt: _Attempt, previous: _Connected | None) -> Callable[[], _Connected]:
        def work() -> _Connected:
            try:
                if previous is not None:
                    _shut_down(previous)
                if not url:
                    raise ValueError("no remote service URL is set; choose one in File → Settings")
                client, user = self._sign_in(url, url, attempt)
                return _Connected(client, user, client.base_url, None, None)
            finally:
                attempt.finished.set()

        return work

    def _sign_in(self, base_url: str, service_key: str, attempt: _Attempt) -> tuple[ServiceClient, UserInfo]:
        """Reuse the stored token if the service still knows it, else create a user (no consent yet)."""
        from avatar_studio.client import AuthError, ServiceClient

        token = self.secrets.get_token(service_key)
        client = ServiceClient(base_url, token)
        try:
            user = None
            if token:
                try:
                    user = client.me()
                except AuthError:
                    log.info("the stored sign-in is no longer valid for %s; creating a new user", service_key)
            if user is None:
                if attempt.cancelled.is_set():
                    raise _Cancelled
                created = client.create_user(False, False)  # consent is asked before the first capture
                self.secrets.set_token(service_key, created.token)
                user = client.me()
            if attempt.cancelled.is_set():
                raise _Cancelled
        except BaseException:
            client.close()
            raise
        return client, user

    def _on_connected(self, attempt: _Attempt, result: _Connected) -> None:
        if attempt is not self._attempt:  # stopped or superseded meanwhile: do not resurrect it
            run_task(lambda: _shut_down(result))
            return
        self._attempt = None
        self._connected = result
        where = "embedded service" if result.service is not None else f"remote {result.base_url}"
        state = f"Connected: {where}"
        if not self.secrets.persistent:
            state += " (sign-in kept for this session only: no keyring)"
        self._set_state(state)
        self.sig_ready.emit(result.client)

    def _on_failed(self, attempt: _Attempt, exc: BaseException) -> None:
        if attempt is not self._attempt or isinstance(exc, _Cancelled):
            return
        self._attempt = None
        message = describe_failure(exc, embedded=attempt.embedded)
        if not isinstance(exc, Exception):
            log.error("service start-up ended with %s", type(exc).__name__)
        elif not _expected_failure(exc):
            log.error("the avatar service could not be started", exc_info=exc)
        self._error = message
        self._set_state("Not connected")
        self.sig_failed.emit(message)

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.sig_state.emit(state)


def _expected_failure(exc: BaseException) -> bool:
    from avatar_studio.client import ServiceError

    return isinstance(exc, ServiceError | ValueError)


def describe_failure(exc: BaseException, *, embedded: bool) -> str:
    """One sentence for the status bar and dialog: what went wrong and what the user can do."""
    from avatar_studio.client import AuthError, ServiceError, ServiceUnavailable

    if isinstance(exc, ServiceUnavailable):
        return f"{exc}. Check the address and your network, then retry."
    if isinstance(exc, AuthError):
        return f"The service refused the sign-in ({exc}). Retry to create a new user."
    if isinstance(exc, ServiceError):
        return f"The avatar service answered with an error: {exc}"
    if isinstance(exc, ValueError):
        return str(exc)[:1].upper() + str(exc)[1:]
    if embedded:
        return f"The embedded avatar service could not start: {exc or type(exc).__name__}"
    return f"Could not connect to the avatar service: {exc or type(exc).__name__}"


def _shut_down(connected: _Connected) -> None:
    connected.client.close()
    if connected.service is not None:
        connected.service.stop()
