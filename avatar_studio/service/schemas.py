"""Request and response bodies, in the spec's camelCase JSON; also the OpenAPI document's schemas."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from avatar_studio.providers.base import JobOptions

# PostgreSQL's jsonb (and UTF-8 itself) cannot hold NUL or unpaired surrogates: refuse them up front.
TEXT_PATTERN = "^[^\\u0000\\ud800-\\udfff]*$"
APPEARANCE_MAX_EXTRA = 32
PERSONA_MAX_EXTRA = 16
KEY_MAX_CHARS = 64
VALUE_MAX_CHARS = 128
EARRING_STYLES = ("none", "studs", "hoops", "jhumka", "chandbali", "drops")
LANGUAGES = ("english", "hindi", "hinglish", "tamil", "telugu", "bengali", "marathi", "spanish", "french", "german")


def _storable(text: str) -> bool:
    """No NUL and no unpaired surrogate: both are legal in JSON text but not in jsonb or UTF-8."""
    return not any(ch == "\x00" or "\ud800" <= ch <= "\udfff" for ch in text)


class Camel(BaseModel):
    """Request models are strict: ``0`` is not ``false`` and ``"1"`` is not a number (the schema says so)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class UserCreate(Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True,
                              allow_inf_nan=False)
    age_confirmed: bool = False
    consent_selfie: bool = False


class UserUpdate(Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True,
                              allow_inf_nan=False)
    age_confirmed: bool | None = None
    consent_selfie: bool | None = None


class UserCreated(Camel):
    user_id: str
    token: str


class UserOut(Camel):
    user_id: str
    age_confirmed: bool
    consent_selfie: bool
    created_at: datetime


class JobOptionsIn(Camel):
    """The spec's ``options``: anything but the listed values is refused, naming the field."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True,
                              allow_inf_nan=False)
    output: Literal["glb"] = "glb"
    blendshapes: Literal["arkit", "basic"] = "arkit"
    realism: Literal["high"] = "high"

    def to_options(self) -> JobOptions:
        return JobOptions(output=self.output, blendshapes=self.blendshapes, realism=self.realism)


class JobCreated(Camel):
    job_id: str


class JobStatus(Camel):
    status: Literal["queued", "processing", "done", "error"]
    progress: float = Field(ge=0.0, le=1.0)
    asset_id: str | None = None
    error: str | None = None
    action_url: str | None = None


class JobSummary(JobStatus):
    job_id: str
    provider: str
    created_at: datetime
    updated_at: datetime


class JobList(Camel):
    jobs: list[JobSummary]
    total: int
    limit: int
    offset: int


class AssetUrl(Camel):
    url: str
    expires_in: int


class Voice(Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True,
                              allow_inf_nan=False)
    language: Literal[LANGUAGES] | None = None  # type: ignore[valid-type]
    pitch: float | None = Field(default=None, ge=-1.0, le=1.0)
    speed: float | None = Field(default=None, ge=-1.0, le=1.0)


class Persona(BaseModel):
    """Known traits are typed; other trait names are allowed as long as they are numbers in [0, 1]."""

    model_config = ConfigDict(
        extra="allow", strict=True, allow_inf_nan=False,
        json_schema_extra={"additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                           "propertyNames": {"maxLength": KEY_MAX_CHARS, "pattern": TEXT_PATTERN},
                           "maxProperties": 3 + PERSONA_MAX_EXTRA},
    )
    warmth: float | None = Field(default=None, ge=0.0, le=1.0)
    humor: float | None = Field(default=None, ge=0.0, le=1.0)
    formality: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _extra_traits(self) -> Persona:
        extra = self.model_extra or {}
        if len(extra) > PERSONA_MAX_EXTRA:
            raise ValueError(f"persona: at most {PERSONA_MAX_EXTRA} extra traits")
        for key, value in extra.items():
            if len(key) > KEY_MAX_CHARS or not _storable(key):
                raise ValueError(f"persona: trait names are at most {KEY_MAX_CHARS} printable characters")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"persona.{key}: must be a number between 0 and 1")
        return self


class Appearance(BaseModel):
    """``bindi`` and ``earrings`` are typed; other keys are kept as given: short scalars, a bounded number."""

    model_config = ConfigDict(
        extra="allow", strict=True, allow_inf_nan=False,
        json_schema_extra={
            "additionalProperties": {"type": ["string", "number", "boolean"], "maxLength": VALUE_MAX_CHARS,
                                     "pattern": TEXT_PATTERN},
            "propertyNames": {"maxLength": KEY_MAX_CHARS, "pattern": TEXT_PATTERN},
            "maxProperties": 2 + APPEARANCE_MAX_EXTRA,
        },
    )
    bindi: bool | None = None
    earrings: Literal[EARRING_STYLES] | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _extra_keys(self) -> Appearance:
        extra = self.model_extra or {}
        if len(extra) > APPEARANCE_MAX_EXTRA:
            raise ValueError(f"appearance: at most {APPEARANCE_MAX_EXTRA} extra keys")
        for key, value in extra.items():
            if len(key) > KEY_MAX_CHARS or not _storable(key):
                raise ValueError(f"appearance: key names are at most {KEY_MAX_CHARS} printable characters")
            if isinstance(value, str):
                if len(value) > VALUE_MAX_CHARS or not _storable(value):
                    raise ValueError(f"appearance.{key}: at most {VALUE_MAX_CHARS} printable characters")
            elif isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"appearance.{key}: must be a finite number")
            elif not isinstance(value, bool | int | float):
                raise ValueError(f"appearance.{key}: must be a string, a number or true/false")
        return self


class PreferencesIn(Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True,
                              allow_inf_nan=False)
    asset_id: str
    appearance: Appearance = Field(default_factory=Appearance)
    voice: Voice = Field(default_factory=Voice)
    persona: Persona = Field(default_factory=Persona)


class PreferencesOut(Camel):
    asset_id: str
    appearance: dict[str, Any]
    voice: dict[str, Any]
    persona: dict[str, Any]
    updated_at: datetime | None = None


class Ok(BaseModel):
    ok: Literal[True] = True


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    version: str
    providers: list[str]
