"""The Qt-free review scene: weights, clamping, defaults, events and visibility."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_studio.avatar.model import Avatar, Primitive
from avatar_studio.avatar.scene import AvatarScene


def _avatar(default_weights: dict[str, float] | None = None) -> Avatar:
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    normals = np.tile(np.array([0, 0, 1], np.float32), (3, 1))
    prim = Primitive(
        name="head",
        mesh_index=0,
        node_index=0,
        positions=positions,
        normals=normals,
        triangles=np.array([[0, 1, 2]], np.uint32),
        morph_slots=np.array([0, 1, 2], np.intp),
        morph_positions=np.zeros((3, 3, 3), np.float32),
    )
    teeth = Primitive(
        name="teeth",
        mesh_index=1,
        node_index=1,
        positions=positions.copy(),
        normals=normals.copy(),
        triangles=np.array([[0, 1, 2]], np.uint32),
    )
    return Avatar(
        primitives=[prim, teeth],
        morph_names=["jawOpen", "eyeBlinkLeft", "mouthSmileLeft"],
        raw_names={"jawOpen": ["jawOpen", "JawOpen"], "eyeBlinkLeft": ["eyeBlinkLeft"]},
        default_weights=default_weights or {},
    )


class Recorder:
    """Collects every event so tests can assert exactly what was announced, not just the end state."""

    def __init__(self) -> None:
        self.weights: list[list[int]] = []
        self.visibility: list[tuple[int, bool]] = []

    def on_weights(self, indices: np.ndarray) -> None:
        self.weights.append(indices.tolist())

    def on_visibility(self, index: int, visible: bool) -> None:
        self.visibility.append((index, visible))


@pytest.fixture
def scene_and_events() -> tuple[AvatarScene, Recorder]:
    scene = AvatarScene(_avatar({"mouthSmileLeft": 0.25}))
    events = Recorder()
    scene.on_weights_changed(events.on_weights)
    scene.on_visibility_changed(events.on_visibility)
    return scene, events


def test_starts_from_the_files_default_weights(scene_and_events: tuple[AvatarScene, Recorder]) -> None:
    scene, _ = scene_and_events
    assert scene.weights.dtype == np.float32
    np.testing.assert_array_equal(scene.weights, [0.0, 0.0, 0.25])
    assert scene.weights_by_name() == {"jawOpen": 0.0, "eyeBlinkLeft": 0.0, "mouthSmileLeft": 0.25}


def test_set_weight_by_name_raw_name_and_index(scene_and_events: tuple[AvatarScene, Recorder]) -> None:
    scene, events = scene_and_events
    scene.set_weight("jawOpen", 0.5)
    scene.set_weight("JawOpen", 0.6)  # the provider's spelling reaches the same slot
    scene.set_weight(1, 0.75)
    assert scene.weight("jawOpen") == pytest.approx(0.6)
    assert scene.weight(1) == pytest.approx(0.75)
    assert events.weights == [[0], [0], [1]]


def test_values_are_clamped_to_unit_range(scene_and_events: tuple[AvatarScene, Recorder]) -> None:
    scene, _ = scene_and_events
    scene.set_weight("jawOpen", 1.7)
    scene.set_weight("eyeBlinkLeft", -3)
    assert scene.weight("jawOpen") == 1.0
    assert scene.weight("eyeBlinkLeft") == 0.0


def test_unchanged_value_emits_nothing(scene_and_events: tuple[AvatarScene, Recorder]) -> None:
    scene, events = scene_and_events
    scene.set_weight("mouthSmileLeft", 0.25)
    scene.set_weight("jawOpen", -1.0)  # clamps to the current 0.0
    assert events.weights == []


def test_set_weights_emits_one_event_with_only_the_changed_indices(
    scene_and_events: tuple[AvatarScene, Recorder],
) -> None:
    scene, events = scene_and_events
    scene.set_weights({"jawOpen": 0.3, "eyeBlinkLeft": 0.0, "mouthSmileLeft": 0.9})
    assert events.weights == [[0, 2]]
    scene.set_weights({})
    assert len(events.weights) == 1


def test_reset_restores_defaults(scene_and_events: tuple[AvatarScene, Recorder]) -> None:
    scene, events = scene_and_events
    scene.set_weights({"jawOpen": 1.0, "mouthSmileLeft": 0.0})
    scene.reset()
    np.testing.assert_array_equal(scene.weights, scene.default_weights)
    assert events.weights[-1] == [0, 2]
    scene.reset()  # already at defaults: nothing to announce
    assert len(events.weights) == 2


def test_weights_cannot_be_changed_behind_the_scenes_back(
    scene_and_events: tuple[AvatarScene, Recorder],
) -> None:
    scene, _ = scene_and_events
    with pytest.raises(ValueError, match="read-only"):
        scene.weights[0] = 1.0
    defaults = scene.default_weights
    defaults[0] = 1.0
    assert scene.default_weights[0] == 0.0


def test_bad_names_indices_and_values_are_refused(scene_and_events: tuple[AvatarScene, Recorder]) -> None:
    scene, events = scene_and_events
    with pytest.raises(KeyError, match="browInnerUp"):
        scene.set_weight("browInnerUp", 0.5)
    with pytest.raises(IndexError, match="out of range"):
        scene.set_weight(3, 0.5)
    with pytest.raises(ValueError, match="finite"):
        scene.set_weight(0, float("nan"))
    assert events.weights == []


def test_unsubscribe_stops_events() -> None:
    scene = AvatarScene(_avatar())
    seen: list[list[int]] = []
    unsubscribe = scene.on_weights_changed(lambda idx: seen.append(idx.tolist()))
    scene.set_weight(0, 1.0)
    unsubscribe()
    unsubscribe()  # twice is harmless
    scene.set_weight(0, 0.0)
    assert seen == [[0]]


def test_visibility_events(scene_and_events: tuple[AvatarScene, Recorder]) -> None:
    scene, events = scene_and_events
    assert scene.visible_primitives == [0, 1]
    scene.set_visible(1, False)
    scene.set_visible(1, False)
    assert not scene.is_visible(1)
    assert scene.visible_primitives == [0]
    scene.set_all_visible()
    assert events.visibility == [(1, False), (1, True)]


def test_avatar_without_morphs_has_an_empty_weight_vector() -> None:
    avatar = _avatar()
    avatar.morph_names = []
    avatar.raw_names = {}
    for prim in avatar.primitives:
        prim.morph_slots = np.zeros(0, np.intp)
        prim.morph_positions = np.zeros((0, 3, 3), np.float32)
    scene = AvatarScene(avatar)
    assert scene.weights.shape == (0,)
    scene.reset()
    scene.set_weights({})
