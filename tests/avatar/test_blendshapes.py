"""Blendshape names: the reference lists, the provider-name normaliser, resolution and coverage."""

from __future__ import annotations

import pytest

from avatar_studio.avatar.blendshapes import (
    ARKIT_52,
    CANONICAL_NAMES,
    OVR_VISEMES,
    REGIONS,
    VISEME_ALIASES,
    ArkitCoverage,
    BlendshapeMapError,
    canonical_name,
    canonical_viseme,
    coverage,
    name_collisions,
    region_of,
    resolve_names,
)

# Names whose ARKit raw value keeps Left/Right (providers.md §4.1).
NO_SUFFIX_FORM = {"jawLeft", "jawRight", "mouthLeft", "mouthRight"}


def _arkit_raw_value(name: str) -> str:
    """The ``_L``/``_R`` spelling ARKit's ``blendShapes`` dictionary uses for a constant name."""
    if name in NO_SUFFIX_FORM:
        return name
    if name.endswith("Left"):
        return name[: -len("Left")] + "_L"
    if name.endswith("Right"):
        return name[: -len("Right")] + "_R"
    return name


def test_reference_lists_have_the_documented_size_order_and_no_duplicates() -> None:
    assert len(ARKIT_52) == 52
    assert len(set(ARKIT_52)) == 52
    assert ARKIT_52[:2] == ("eyeBlinkLeft", "eyeLookDownLeft")
    assert ARKIT_52[14:18] == ("jawForward", "jawLeft", "jawRight", "jawOpen")
    assert ARKIT_52[-1] == "tongueOut"
    assert " ".join(OVR_VISEMES) == "sil PP FF TH DD kk CH SS nn RR aa E ih oh ou"
    assert len(CANONICAL_NAMES) == 52 + 15


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # ARKit raw values with _L/_R
        ("eyeBlink_L", "eyeBlinkLeft"),
        ("mouthSmile_R", "mouthSmileRight"),
        ("cheekSquint_L", "cheekSquintLeft"),
        # jaw/mouth Left/Right keep their names
        ("mouthLeft", "mouthLeft"),
        ("jawRight", "jawRight"),
        # case-insensitive, Left/Right in any case
        ("EyeBlinkLeft", "eyeBlinkLeft"),
        ("eyeblinkleft", "eyeBlinkLeft"),
        ("EYEBLINK_LEFT", "eyeBlinkLeft"),
        ("eyeBlink.L", "eyeBlinkLeft"),
        # Didimo pose clips
        ("ARKit_jawOpen", "jawOpen"),
        ("ARKit_eyeBlink_L", "eyeBlinkLeft"),
        ("oculus_I", "viseme_ih"),
        ("oculus_O", "viseme_oh"),
        ("oculus_sil", "viseme_sil"),
        # Didimo bare oculus poses: a bare vowel letter is a viseme
        ("E", "viseme_E"),
        ("I", "viseme_ih"),
        ("O", "viseme_oh"),
        ("U", "viseme_ou"),
        # Ready Player Me
        ("viseme_aa", "viseme_aa"),
        ("viseme_PP", "viseme_PP"),
        ("viseme_U", "viseme_ou"),
        # MetaPerson bare names
        ("kk", "viseme_kk"),
        ("FF", "viseme_FF"),
        # Avatar SDK legacy lower case
        ("ee", "viseme_E"),
        ("pp", "viseme_PP"),
        ("ch", "viseme_CH"),
        ("sil", "viseme_sil"),
        # mesh / group prefixes and tool conventions
        ("blendShape1.jawOpen", "jawOpen"),
        ("blendShape.mouthFunnel", "mouthFunnel"),
        ("AvatarHead.eyeWide_R", "eyeWideRight"),
        ("base/visemes_15.PP", "viseme_PP"),
        ("v_aa", "viseme_aa"),
        ("vrc.v_th", "viseme_TH"),
        # the seed's aliases
        ("MBP", "viseme_PP"),
        ("FV", "viseme_FF"),
        ("A", "viseme_aa"),
    ],
)
def test_canonical_name_normalises_provider_spellings(raw: str, expected: str) -> None:
    assert canonical_name(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["NoseWidth", "HeadHeight", "LipsSize", "Body", "Key 1", "Laughter", "frown", "smile", "mouthSmile", ""],
)
def test_identity_and_unknown_shapes_are_not_canonical(raw: str) -> None:
    assert canonical_name(raw) is None


def test_every_arkit_name_and_its_raw_value_resolve_to_the_constant() -> None:
    for name in ARKIT_52:
        assert canonical_name(name) == name
        assert canonical_name(_arkit_raw_value(name)) == name


def test_every_ovr_viseme_resolves_bare_and_prefixed() -> None:
    for viseme in OVR_VISEMES:
        assert canonical_name(viseme) == f"viseme_{viseme}"
        assert canonical_name(f"viseme_{viseme}") == f"viseme_{viseme}"
        assert canonical_name(viseme.lower()) == f"viseme_{viseme}"


def test_canonical_viseme_accepts_aliases_case_insensitively() -> None:
    assert canonical_viseme("MBP") == "PP"
    assert canonical_viseme("mbp") == "PP"
    assert canonical_viseme("ee") == "E"
    assert canonical_viseme("e") == "E"
    assert canonical_viseme("viseme_O") == "oh"
    assert canonical_viseme("jawOpen") is None
    assert set(VISEME_ALIASES.values()) <= set(OVR_VISEMES)


def test_resolve_names_normalises_keeps_unknown_raw_names() -> None:
    raw = ["ARKit_jawOpen", "ARKit_eyeBlink_L", "oculus_U", "NoseWidth"]
    assert resolve_names(raw) == {
        "ARKit_jawOpen": "jawOpen",
        "ARKit_eyeBlink_L": "eyeBlinkLeft",
        "oculus_U": "viseme_ou",
        "NoseWidth": "NoseWidth",
    }


def test_explicit_map_entry_wins_over_the_normaliser() -> None:
    resolved = resolve_names(["Key 1", "mouthOpen", "E"], {"Key 1": "jawOpen", "E": "eyeWideLeft"})
    assert resolved == {"Key 1": "jawOpen", "mouthOpen": "mouthOpen", "E": "eyeWideLeft"}


def test_map_with_non_canonical_value_names_the_entry_and_suggests() -> None:
    with pytest.raises(BlendshapeMapError, match=r"'Key 1'.*'eyeBlink_L'.*did you mean 'eyeBlinkLeft'"):
        resolve_names(["Key 1"], {"Key 1": "eyeBlink_L"})
    with pytest.raises(BlendshapeMapError, match=r"'Key 2': 'Smile' is not a canonical name"):
        resolve_names(["Key 2"], {"Key 2": "Smile"})


def test_map_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(BlendshapeMapError, match="must be an object"):
        resolve_names(["a"], ["a", "jawOpen"])  # type: ignore[arg-type]


def test_collision_within_one_mesh_keeps_one_canonical_target() -> None:
    raw = ["eyeBlink_L", "eyeBlinkLeft", "EyeBlinkLEFT"]
    resolved = resolve_names(raw)
    # the already-canonical spelling wins; the others keep their raw names, so nothing is driven twice
    assert resolved == {
        "eyeBlink_L": "eyeBlink_L",
        "eyeBlinkLeft": "eyeBlinkLeft",
        "EyeBlinkLEFT": "EyeBlinkLEFT",
    }
    assert len(set(resolved.values())) == len(raw)
    assert name_collisions(raw) == {"eyeBlinkLeft": ("eyeBlinkLeft", "eyeBlink_L", "EyeBlinkLEFT")}


def test_collision_without_a_canonical_spelling_goes_to_the_first_name() -> None:
    assert resolve_names(["v_aa", "viseme_AA"]) == {"v_aa": "viseme_aa", "viseme_AA": "viseme_AA"}
    assert name_collisions(["jawOpen", "mouthClose"]) == {}


def test_map_entries_that_collide_are_errors() -> None:
    with pytest.raises(BlendshapeMapError, match=r"'a', 'b' to 'jawOpen'"):
        resolve_names(["a", "b"], {"a": "jawOpen", "b": "jawOpen"})
    with pytest.raises(BlendshapeMapError, match=r"entry 'a'.*literally named 'jawOpen'"):
        resolve_names(["a", "jawOpen"], {"a": "jawOpen"})
    # a swap is unambiguous
    assert resolve_names(["jawOpen", "mouthClose"], {"jawOpen": "mouthClose", "mouthClose": "jawOpen"}) == {
        "jawOpen": "mouthClose",
        "mouthClose": "jawOpen",
    }


def test_coverage_of_a_metaperson_like_head() -> None:
    mobile_51 = [n for n in ARKIT_52 if n != "tongueOut"]
    visemes_14 = [f"viseme_{v}" for v in OVR_VISEMES if v != "sil"]
    cov = coverage([*mobile_51, *visemes_14, "Laughter", "Laughter"])
    assert isinstance(cov, ArkitCoverage)
    assert cov.present == tuple(mobile_51)
    assert cov.missing == ("tongueOut",)
    assert cov.visemes == tuple(visemes_14)
    assert cov.unmapped == ("Laughter",)
    assert cov.ratio == pytest.approx(51 / 52)
    assert cov.to_dict() == {
        "present": mobile_51,
        "missing": ["tongueOut"],
        "visemes": visemes_14,
        "unmapped": ["Laughter"],
        "ratio": pytest.approx(51 / 52),
    }


def test_coverage_lists_in_reference_order_regardless_of_input_order() -> None:
    cov = coverage(["viseme_ou", "jawOpen", "viseme_sil", "eyeBlinkLeft", "eyeBlink_L"])
    assert cov.present == ("eyeBlinkLeft", "jawOpen")
    assert len(cov.missing) == 50
    assert cov.visemes == ("viseme_sil", "viseme_ou")
    assert cov.unmapped == ("eyeBlink_L",)  # coverage takes resolved names; raw spellings do not count
    assert coverage([]).ratio == 0.0


@pytest.mark.parametrize(
    ("name", "region"),
    [
        ("browInnerUp", "brows"),
        ("browOuterUpRight", "brows"),
        ("eyeLookInLeft", "eyes"),
        ("cheekPuff", "cheeks"),
        ("noseSneerLeft", "nose"),
        ("jawOpen", "jaw"),
        ("mouthRollLower", "mouth"),
        ("tongueOut", "tongue"),
        ("viseme_aa", "visemes"),
        ("eyeBlink_L", "eyes"),
        ("oculus_U", "visemes"),
        ("NoseWidth", "other"),
        ("Laughter", "other"),
    ],
)
def test_region_of(name: str, region: str) -> None:
    assert region_of(name) == region


def test_every_canonical_name_has_a_real_region() -> None:
    assert REGIONS == ("brows", "eyes", "cheeks", "nose", "jaw", "mouth", "tongue", "visemes", "other")
    for name in CANONICAL_NAMES:
        assert region_of(name) in REGIONS[:-1], name
