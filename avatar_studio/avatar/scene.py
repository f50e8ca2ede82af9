"""The review scene: which avatar is shown, with which morph weights, and which primitives are visible.

Why a separate, Qt-free model: sliders, lip-sync and (later) the service all change weights, and the
3D view must not care who did. Everything writes here; views subscribe to plain-python events and
decide themselves when to redraw. Keeping Qt and VTK out also lets the whole weight logic be tested
with plain pytest and reused headless (an import-linter contract enforces it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

import numpy as np

from avatar_studio.avatar.model import Avatar

WeightsCallback = Callable[[np.ndarray], None]
VisibilityCallback = Callable[[int, bool], None]

# glTF: +Y up, the face looks along +Z and the avatar's left is +X. Each direction points from the
# head towards the camera; views fit the head after placing the camera, so only direction matters.
CAMERA_PRESETS: Final[dict[str, tuple[str, tuple[float, float, float]]]] = {
    "front": ("Front", (0.0, 0.0, 1.0)),
    "left": ("Left Profile", (1.0, 0.0, 0.0)),
    "right": ("Right Profile", (-1.0, 0.0, 0.0)),
    "three_quarter": ("Three-Quarter", (0.7, 0.18, 0.7)),
}


class AvatarScene:
    """Owns the current weight vector and per-primitive visibility of one avatar.

    Weights are a float32 vector over ``avatar.morph_names`` (the same layout the morph evaluator
    takes), so a view can hand ``scene.weights`` straight to the evaluator without a name lookup.
    Callbacks receive the *indices* that changed; a caller that only cares about "something changed"
    ignores them, while a slider panel uses them to touch only the affected rows.
    """

    def __init__(self, avatar: Avatar) -> None:
        self._avatar = avatar
        self._defaults = avatar.weight_vector()
        np.clip(self._defaults, 0.0, 1.0, out=self._defaults)
        self._weights = self._defaults.copy()
        self._visible = [True] * len(avatar.primitives)
        self._weights_callbacks: list[WeightsCallback] = []
        self._visibility_callbacks: list[VisibilityCallback] = []

    @property
    def avatar(self) -> Avatar:
        return self._avatar

    @property
    def weights(self) -> np.ndarray:
        """A read-only view of the current weights, so nobody bypasses the events by writing into it."""
        view = self._weights.view()
        view.flags.writeable = False
        return view

    @property
    def default_weights(self) -> np.ndarray:
        """A copy of the weights the file asked for, i.e. what ``reset()`` goes back to."""
        return self._defaults.copy()

    def weight(self, name_or_index: str | int) -> float:
        return float(self._weights[self._index(name_or_index)])

    def weights_by_name(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self._avatar.morph_names, self._weights, strict=True)}

    # --- observers -------------------------------------------------------------------------------

    def on_weights_changed(self, callback: WeightsCallback) -> Callable[[], None]:
        """Subscribe to weight changes; returns an unsubscribe function so a closing view can detach."""
        self._weights_callbacks.append(callback)
        return lambda: self._remove(self._weights_callbacks, callback)

    def on_visibility_changed(self, callback: VisibilityCallback) -> Callable[[], None]:
        """Subscribe to ``(primitive_index, visible)`` changes; returns an unsubscribe function."""
        self._visibility_callbacks.append(callback)
        return lambda: self._remove(self._visibility_callbacks, callback)

    @staticmethod
    def _remove(callbacks: list, callback: Callable) -> None:
        # Unsubscribing twice (e.g. close after an explicit detach) must be harmless.
        if callback in callbacks:
            callbacks.remove(callback)

    # --- weights ---------------------------------------------------------------------------------

    def set_weight(self, name_or_index: str | int, value: float) -> None:
        """Set one weight, clamped to [0, 1]; no event when the stored value does not change."""
        index = self._index(name_or_index)
        self._assign(np.array([index], np.intp), np.array([value], np.float64))

    def set_weights(self, weights: Mapping[str | int, float]) -> None:
        """Set several weights at once and emit ONE event, so a lip-sync frame costs one redraw."""
        if not weights:
            return
        indices = np.array([self._index(key) for key in weights], np.intp)
        self._assign(indices, np.fromiter(weights.values(), np.float64, len(weights)))

    def reset(self) -> None:
        """Go back to the file's default weights (not to zero: a file may ship a non-neutral pose)."""
        self._assign(np.arange(len(self._weights), dtype=np.intp), self._defaults.astype(np.float64))

    def _assign(self, indices: np.ndarray, values: np.ndarray) -> None:
        if not np.all(np.isfinite(values)):
            raise ValueError("morph weights must be finite numbers")
        clamped = np.clip(values, 0.0, 1.0).astype(np.float32)
        changed_mask = self._weights[indices] != clamped
        if not changed_mask.any():
            return
        self._weights[indices] = clamped
        changed = np.unique(indices[changed_mask])
        changed.flags.writeable = False
        for callback in list(self._weights_callbacks):
            callback(changed)

    def _index(self, name_or_index: str | int) -> int:
        if isinstance(name_or_index, str):
            return self._avatar.morph_index(name_or_index)
        index = int(name_or_index)
        if not 0 <= index < len(self._weights):
            raise IndexError(f"morph index {index} is out of range (this avatar has {len(self._weights)})")
        return index

    # --- visibility ------------------------------------------------------------------------------

    def is_visible(self, primitive_index: int) -> bool:
        return self._visible[primitive_index]

    @property
    def visible_primitives(self) -> list[int]:
        return [i for i, shown in enumerate(self._visible) if shown]

    def set_visible(self, primitive_index: int, visible: bool) -> None:
        """Show or hide one primitive (e.g. hide hair to inspect the scalp); no event if unchanged."""
        if self._visible[primitive_index] == bool(visible):
            return
        self._visible[primitive_index] = bool(visible)
        for callback in list(self._visibility_callbacks):
            callback(primitive_index, bool(visible))

    def set_all_visible(self, primitive_indices: Iterable[int] | None = None) -> None:
        """Show the given primitives (all when ``None``), one event per primitive that changes."""
        targets = range(len(self._visible)) if primitive_indices is None else primitive_indices
        for index in targets:
            self.set_visible(index, True)
