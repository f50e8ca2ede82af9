"""Provider tests create many adapters; close every HTTP client they opened when each test ends,
so no connection outlives its test (an unclosed socket would surface as a warning in a later one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from avatar_studio.providers.http import ProviderHttp


@pytest.fixture(autouse=True)
def _close_provider_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    opened: list[ProviderHttp] = []
    original = ProviderHttp.__init__

    def tracking_init(self: ProviderHttp, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    monkeypatch.setattr(ProviderHttp, "__init__", tracking_init)
    yield
    for client in opened:
        client.close()
