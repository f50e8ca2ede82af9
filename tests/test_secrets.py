"""API keys never reach a log line: not in messages, not in arguments, not in tracebacks."""

from __future__ import annotations

import logging

import pytest

from avatar_studio.config import Settings
from avatar_studio.secrets import REDACTED, register_secret


def test_registered_secrets_are_redacted_everywhere(caplog: pytest.LogCaptureFixture, tmp_path: object) -> None:
    key = "client-id-1234:super-secret-value-987"
    Settings.from_env(env={"PROVIDER_API_KEY": key, "AVATAR_STUDIO_DATA_DIR": str(tmp_path)})
    log = logging.getLogger("httpx")  # a third-party logger, with whatever handlers the host installed
    with caplog.at_level(logging.DEBUG):
        log.info("Authorization: Bearer %s", key)
        log.warning("secret half alone: super-secret-value-987 and id client-id-1234")
        try:
            raise RuntimeError(f"provider said no to {key}")
        except RuntimeError:
            log.exception("request failed")
    text = caplog.text
    assert "super-secret-value-987" not in text and "client-id-1234" not in text
    assert text.count(REDACTED) >= 4
    assert "provider said no to" in text, "the rest of the message survives"


def test_short_values_are_not_treated_as_secrets(caplog: pytest.LogCaptureFixture) -> None:
    register_secret("abc")
    with caplog.at_level(logging.INFO):
        logging.getLogger("avatar_studio.test").info("abc stays readable")
    assert "abc stays readable" in caplog.text
