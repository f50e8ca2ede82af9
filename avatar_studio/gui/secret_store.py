"""Where the desktop app keeps its secrets: the service sign-in token and the provider API keys.

Why the OS keyring and nothing else: a token or an API key in a settings file ends up in backups,
dotfile repositories and support bundles. The keyring encrypts at rest and is unlocked with the
desktop session. Where no keyring works (a minimal or headless desktop has no Secret Service, see
toolchain §7) the store says so through :attr:`SecretStore.persistent` and keeps the values in this
process's memory only: the user is told that they last for the session, and nothing is ever written
to a plain file instead. A backend that *is* a plain file (``keyrings.alt``'s ``PlaintextKeyring``)
or that silently forgets (the ``null`` backend) is treated like no backend at all.

Every value that passes through here is registered with :func:`avatar_studio.secrets.register_secret`,
so it cannot appear in a log line afterwards.

Thread safety: the service session reads the token from a worker thread while the settings dialog
may write keys on the GUI thread, so every access goes through one lock.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Final

from avatar_studio.secrets import register_secret

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

log = logging.getLogger(__name__)

SERVICE_NAME: Final[str] = "Avatar Studio"
TOKEN_PREFIX: Final[str] = "token:"
API_KEY_PREFIX: Final[str] = "api-key:"

# Backends that exist but must not hold our secrets: a plain-text file, or one that stores nothing.
_UNSAFE_BACKENDS: Final[dict[str, str]] = {
    "keyrings.alt.file.PlaintextKeyring": "the only keyring found stores secrets in a plain-text file",
    "keyring.backends.null.Keyring": "the keyring is switched off (null backend)",
}


def _backend_problem(backend: KeyringBackend) -> str | None:
    """Why ``backend`` cannot keep secrets across sessions, or None when it can."""
    from keyring.backends import chainer, fail

    if isinstance(backend, fail.Keyring):
        return "no system keyring is available on this computer"
    if isinstance(backend, chainer.ChainerBackend):
        problems = [_backend_problem(b) for b in backend.backends]
        if not problems:
            return "no system keyring is available on this computer"
        if all(problems):
            return problems[0]
        return None
    name = f"{type(backend).__module__}.{type(backend).__qualname__}"
    return _UNSAFE_BACKENDS.get(name)


class SecretStore:
    """Get, set and delete the user token (per service) and provider API keys (per provider).

    ``backend`` defaults to whatever ``keyring`` selects; tests pass an in-memory backend. The
    backend is looked up on first use, not in ``__init__``, because choosing it can mean a D-Bus
    round trip and the main window must paint before any of that happens.
    """

    def __init__(self, backend: KeyringBackend | None = None, *, service_name: str = SERVICE_NAME) -> None:
        self.service_name = service_name
        self._backend = backend
        self._checked = False
        self._problem: str | None = None
        self._memory: dict[str, str] = {}
        self._lock = threading.RLock()
        self._keys_session_only = False

    # --- state the UI shows ----------------------------------------------------------------------

    @property
    def persistent(self) -> bool:
        """True when values survive a restart (a working keyring); False: this session only."""
        with self._lock:
            self._check_backend()
            return self._problem is None

    @property
    def problem(self) -> str | None:
        """One sentence for the user on why secrets are not persistent, or None when they are."""
        with self._lock:
            self._check_backend()
            return self._problem

    @property
    def keys_session_only(self) -> bool:
        """The user's choice to keep API keys in memory only, even where the keyring works."""
        return self._keys_session_only or not self.persistent

    @keys_session_only.setter
    def keys_session_only(self, value: bool) -> None:
        with self._lock:
            self._keys_session_only = bool(value)
            if value:  # "this session only" must mean the keyring no longer holds them either
                for name in [n for n in self._memory_or_keyring_names() if n.startswith(API_KEY_PREFIX)]:
                    value_now = self._get(name)
                    self._delete_from_keyring(name)
                    if value_now is not None:
                        self._memory[name] = value_now

    # --- the user token, one per service ---------------------------------------------------------

    def get_token(self, service_key: str) -> str | None:
        """The sign-in token for the service identified by ``service_key`` (see ServiceSession)."""
        return self._get(TOKEN_PREFIX + service_key)

    def set_token(self, service_key: str, token: str) -> bool:
        """Store ``token``; returns True when it was saved persistently, False when kept in memory only."""
        return self._set(TOKEN_PREFIX + service_key, token, persist=True)

    def delete_token(self, service_key: str) -> None:
        self._delete(TOKEN_PREFIX + service_key)

    # --- provider API keys, one per provider -----------------------------------------------------

    def get_api_key(self, provider: str) -> str | None:
        return self._get(API_KEY_PREFIX + provider)

    def set_api_key(self, provider: str, key: str | None) -> bool:
        """Store (or, for an empty ``key``, delete) a provider's key; returns True when saved persistently."""
        if not key:
            self._delete(API_KEY_PREFIX + provider)
            return self.persistent
        return self._set(API_KEY_PREFIX + provider, key, persist=not self._keys_session_only)

    def delete_api_key(self, provider: str) -> None:
        self._delete(API_KEY_PREFIX + provider)

    # --- plumbing --------------------------------------------------------------------------------

    def _check_backend(self) -> None:
        if self._checked:
            return
        self._checked = True
        try:
            import keyring

            if self._backend is None:
                self._backend = keyring.get_keyring()
            self._problem = _backend_problem(self._backend)
        except Exception as exc:  # backend discovery runs third-party plugin code; any failure means "none"
            self._problem = f"the system keyring could not be opened ({type(exc).__name__})"
        if self._problem is not None:
            log.warning("secrets are kept for this session only: %s", self._problem)

    def _fall_back(self, exc: Exception) -> None:
        """A backend that worked at start can fail later (locked, D-Bus gone): switch to memory, say why."""
        self._problem = f"the system keyring stopped working ({type(exc).__name__}: {exc})"
        log.warning("secrets are kept for this session only: %s", self._problem)

    def _get(self, name: str) -> str | None:
        from keyring.errors import KeyringError

        with self._lock:
            self._check_backend()
            value = self._memory.get(name)
            if value is None and self._problem is None and self._backend is not None:
                try:
                    value = self._backend.get_password(self.service_name, name)
                except (KeyringError, RuntimeError, OSError) as exc:
                    self._fall_back(exc)
            register_secret(value)
            return value

    def _set(self, name: str, value: str, *, persist: bool) -> bool:
        from keyring.errors import KeyringError

        register_secret(value)
        with self._lock:
            self._check_backend()
            if persist and self._problem is None and self._backend is not None:
                try:
                    self._backend.set_password(self.service_name, name, value)
                except (KeyringError, RuntimeError, OSError) as exc:
                    self._fall_back(exc)
                else:
                    self._memory.pop(name, None)
                    return True
            self._delete_from_keyring(name)  # an older persistent copy must not outlive "session only"
            self._memory[name] = value
            return False

    def _delete(self, name: str) -> None:
        with self._lock:
            self._check_backend()
            self._memory.pop(name, None)
            self._delete_from_keyring(name)

    def _delete_from_keyring(self, name: str) -> None:
        from keyring.errors import KeyringError, PasswordDeleteError

        if self._problem is not None or self._backend is None:
            return
        try:
            if self._backend.get_password(self.service_name, name) is not None:
                self._backend.delete_password(self.service_name, name)
        except PasswordDeleteError:
            pass  # already gone: the outcome wanted
        except (KeyringError, RuntimeError, OSError) as exc:
            self._fall_back(exc)

    def _memory_or_keyring_names(self) -> list[str]:
        """Names this store may hold; keyring backends cannot list entries, so the providers are named."""
        from avatar_studio.providers.base import BUILTIN_PROVIDERS

        names = set(self._memory) | {API_KEY_PREFIX + p for p in BUILTIN_PROVIDERS}
        return sorted(names)
