"""The 3D view: draws an ``AvatarScene`` with pyvista inside a Qt window and follows its weights.

Why it is built the way it is (measured in the toolchain report, §5b): on a software renderer a frame
costs 15-60 ms, so the view must never render once per weight change. Scene events only mark the
mesh dirty and start a single-shot timer; when it fires the morph is evaluated once and ONE repaint
is requested. Frames start on a fixed 16 ms grid: the timer waits only until the next grid point
after the last render began. A fixed 16 ms wait on top of the render capped even a trivial mesh at
~30 fps; waiting "16 ms since the last start" still lost the timer's lateness (~1 ms) every frame
(57 fps with a 10 ms render); the grid absorbs it, and when a frame overruns the grid restarts from
now instead of bursting to catch up. ``multi_samples=0`` (MSAA costs ~4x on llvmpipe) and
``auto_update=False`` (pyvistaqt's 5 Hz re-render timer) keep the rest of the budget.

This module imports pyvista/pyvistaqt (~1 s) at import time, so the main window imports it lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import pyvista as pv
from PySide6.QtCore import QElapsedTimer, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QVBoxLayout, QWidget
from pyvistaqt import QtInteractor

from avatar_studio.avatar.model import Primitive, Texture
from avatar_studio.avatar.morph import MorphEvaluator
from avatar_studio.avatar.scene import CAMERA_PRESETS, AvatarScene

BACKGROUND: Final[tuple[int, int, int]] = (38, 41, 48)
"""A dark neutral grey: skin, hair and eye textures all read well against it and it is easy to test for."""

FRAME_INTERVAL_MS: Final[int] = 16
"""The frame period the view paces renders to (~60 fps); changes within one period share a render."""

class AvatarView(QWidget):
    """Shows one avatar scene; re-renders at most once per frame however fast its weights change."""

    sig_frame_rendered = Signal()
    """Emitted after each VTK render of this view, so tests and status displays can wait for a real frame."""

    _sig_scene_changed = Signal()
    """Scene events may come from a non-GUI thread (e.g. lip-sync); this queued hop brings them home."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._closed = False
        self._scene: AvatarScene | None = None
        self._evaluator: MorphEvaluator | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._meshes: list[pv.PolyData | None] = []
        self._actors: list[pv.Actor | None] = []
        self._dirty = False
        self.frames_rendered = 0

        self.plotter = QtInteractor(self, auto_update=False, multi_samples=0)
        # pyvistaqt's own drop handler would pyvista.read() the file into the scene; drops belong to
        # the main window, which loads avatars properly (morphs, textures, errors).
        self.plotter.setAcceptDrops(False)
        self.plotter.set_background(tuple(c / 255 for c in BACKGROUND))
        _add_light_rig(self.plotter)
        self.plotter.ren_win.AddObserver("StartEvent", self._on_render_start)
        self.plotter.ren_win.AddObserver("EndEvent", self._on_render_end)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plotter)

        self._frame_timer = QTimer(self)
        self._frame_timer.setSingleShot(True)
        self._frame_timer.setTimerType(Qt.TimerType.PreciseTimer)  # coarse timers round 16 ms up to ~20
        self._frame_timer.timeout.connect(self._flush)
        self._clock = QElapsedTimer()
        self._clock.start()
        self._next_due_ms: int | None = None  # earliest start of the next frame; None: the next goes at once
        self._sig_scene_changed.connect(self._schedule_frame, Qt.ConnectionType.AutoConnection)

    # --- scene -----------------------------------------------------------------------------------

    @property
    def scene(self) -> AvatarScene | None:
        return self._scene

    @property
    def meshes(self) -> list[pv.PolyData | None]:
        """One mesh per avatar primitive (``None`` for a primitive with nothing to draw)."""
        return list(self._meshes)

    def set_scene(self, scene: AvatarScene | None) -> None:
        """Replace what is drawn; the old scene is detached so it can no longer trigger renders here."""
        if self._closed:
            return
        self._detach()
        self.plotter.clear_actors()
        self._meshes, self._actors = [], []
        self._scene = scene
        if scene is None:
            self._evaluator = None
            self.request_frame()
            return
        self._evaluator = MorphEvaluator(scene.avatar)
        evaluated = self._evaluator.apply(scene.weights)
        textures: dict[int, pv.Texture] = {}
        pairs = zip(scene.avatar.primitives, evaluated, strict=True)
        for index, (prim, (positions, normals)) in enumerate(pairs):
            if prim.vertex_count == 0 or prim.triangle_count == 0:
                self._meshes.append(None)
                self._actors.append(None)
                continue
            mesh = _build_mesh(prim, positions, normals)
            actor = self._add_primitive(mesh, prim, textures)
            actor.SetVisibility(scene.is_visible(index))
            self._meshes.append(mesh)
            self._actors.append(actor)
        self._unsubscribe = [
            scene.on_weights_changed(self._on_weights_changed),
            scene.on_visibility_changed(self._on_visibility_changed),
        ]
        self.set_camera_preset("front")

    def _add_primitive(self, mesh: pv.PolyData, prim: Primitive, cache: dict[int, pv.Texture]) -> pv.Actor:
        # smooth_shading=False on purpose: pyvista would recompute normals in a pipeline filter every
        # frame (10-50 ms); the evaluator already gives morphed normals, which the mapper uses as is.
        r, g, b, a = prim.base_color
        kwargs: dict[str, object] = {"smooth_shading": False, "opacity": float(a), "show_scalar_bar": False}
        if prim.texture is not None and "Texture Coordinates" in mesh.point_data:
            kwargs["texture"] = _texture(prim.texture, cache)
            kwargs["color"] = "white"
        else:
            kwargs["color"] = (float(r), float(g), float(b))
        actor = self.plotter.add_mesh(mesh, render=False, reset_camera=False, **kwargs)
        prop = actor.prop
        prop.interpolation = "phong"
        prop.ambient = 0.08
        prop.diffuse = 0.9
        prop.specular = 0.15
        prop.specular_power = 25.0
        # glTF: a material that is not doubleSided MUST have its back faces culled. It is also the
        # cheapest frame-rate win on llvmpipe: back faces of a head cover the same pixels as the front,
        # are shaded first and then overdrawn, so culling them cut render time by ~40% (11k head).
        prop.culling = "None" if prim.double_sided else "back"
        return actor

    def _detach(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        self._frame_timer.stop()
        self._dirty = False

    # --- scene events ----------------------------------------------------------------------------

    def _on_weights_changed(self, _indices: np.ndarray) -> None:
        self._dirty = True
        self._sig_scene_changed.emit()

    def _on_visibility_changed(self, index: int, visible: bool) -> None:
        actor = self._actors[index] if index < len(self._actors) else None
        if actor is not None:
            actor.SetVisibility(visible)
        self._sig_scene_changed.emit()

    def _schedule_frame(self) -> None:
        if self._closed or self._frame_timer.isActive():
            return  # a frame is already due: this change rides on it
        due = self._next_due_ms
        self._frame_timer.start(0 if due is None else max(0, due - self._clock.elapsed()))

    @property
    def frame_pending(self) -> bool:
        """True between a scene change and the frame that shows it (tests wait on this, not on sleeps)."""
        return self._frame_timer.isActive() or self._dirty

    def request_frame(self) -> None:
        """Ask for a repaint in the next frame; any number of calls before then cost one render."""
        self._schedule_frame()

    def _flush(self) -> None:
        if self._closed:
            return
        if self._dirty and self._scene is not None and self._evaluator is not None:
            self._dirty = False
            evaluated = self._evaluator.apply(self._scene.weights)
            for mesh, (positions, normals) in zip(self._meshes, evaluated, strict=True):
                if mesh is not None:
                    _write_in_place(mesh, positions, normals)
        # update() schedules one paintGL (= one render); plotter.render() would render twice (§5b).
        self.plotter.interactor.update()

    def _on_render_start(self, _obj: object, _event: str) -> None:
        # The frame starting now was due at _next_due_ms; the next one is one period later on the same
        # grid, unless this one is more than a period late (then the grid restarts from now).
        now = self._clock.elapsed()
        due = self._next_due_ms
        base = due if due is not None and now - due < FRAME_INTERVAL_MS else now
        self._next_due_ms = base + FRAME_INTERVAL_MS

    def _on_render_end(self, _obj: object, _event: str) -> None:
        self.frames_rendered += 1
        if not self._closed:
            self.sig_frame_rendered.emit()

    def render_now(self) -> None:
        """Apply any pending change and render synchronously, e.g. right before a screenshot."""
        if self._closed:
            return
        self._frame_timer.stop()
        self._flush()
        self.plotter.render()

    # --- camera ----------------------------------------------------------------------------------

    def set_camera_preset(self, preset: str) -> None:
        """Look at the head from a fixed direction and fit it, so reviewers compare like with like."""
        if self._closed:
            return
        _label, direction = CAMERA_PRESETS[preset]
        lo, hi = self._scene.avatar.bounds() if self._scene else (np.zeros(3), np.zeros(3))
        centre = (np.asarray(lo, float) + np.asarray(hi, float)) / 2
        radius = max(float(np.linalg.norm(np.asarray(hi, float) - lo)) / 2, 1e-3)
        camera = self.plotter.camera
        camera.focal_point = tuple(centre)
        camera.position = tuple(centre + np.asarray(direction) / np.linalg.norm(direction) * radius * 4)
        camera.up = (0.0, 1.0, 0.0)
        self.plotter.reset_camera(render=False)
        camera.zoom(1.15)
        self.plotter.reset_camera_clipping_range()
        self.request_frame()

    def reset_camera(self) -> None:
        self.set_camera_preset("front")

    # --- screenshot ------------------------------------------------------------------------------

    def screenshot(self, path: str) -> None:
        """Save the current 3D view as a PNG at the widget's resolution."""
        self.render_now()
        self.plotter.screenshot(path, transparent_background=False)

    # --- lifetime --------------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self._closed

    def shutdown(self) -> None:
        """Stop timers, detach from the scene and release the GL window; safe to call twice.

        Called from ``closeEvent`` and by the main window, because Qt only sends ``closeEvent`` to the
        window being closed, not to child widgets like this one.
        """
        if self._closed:
            return
        self._closed = True
        self._detach()
        self._scene = None
        self._evaluator = None
        self._meshes, self._actors = [], []
        self.plotter.close()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self.shutdown()
        super().closeEvent(event)


def _build_mesh(prim: Primitive, positions: np.ndarray, normals: np.ndarray | None) -> pv.PolyData:
    # Copies: the evaluator owns its output buffers and overwrites them on every call.
    mesh = pv.PolyData.from_regular_faces(
        np.array(positions, np.float32, copy=True), np.asarray(prim.triangles, np.int64)
    )
    mesh_normals = normals if normals is not None else prim.normals
    mesh.point_data["Normals"] = np.array(mesh_normals, np.float32, copy=True)
    mesh.point_data.active_normals_name = "Normals"
    if prim.uvs is not None and prim.texture is not None:
        uvs = np.array(prim.uvs, np.float32, copy=True)
        uvs[:, 1] = 1.0 - uvs[:, 1]  # glTF v runs down the image, VTK's t runs up
        mesh.active_texture_coordinates = uvs
    return mesh


def _write_in_place(mesh: pv.PolyData, positions: np.ndarray, normals: np.ndarray | None) -> None:
    # In place keeps the mapper's input the same object: no pipeline rebuild, no reallocation.
    points = mesh.points
    np.copyto(points, positions)
    mesh.GetPoints().Modified()
    if normals is not None:
        np.copyto(mesh.point_data["Normals"], normals)
        mesh.GetPointData().GetNormals().Modified()


def _add_light_rig(plotter: QtInteractor) -> None:
    """A key light from above the camera and a soft headlight fill, both moving with the camera.

    Why not pyvista's light kit: its five lights (key, fill, two back lights, headlight) cost a fragment
    shader loop per light on llvmpipe, ~15% of a frame more than these two, and the back lights add
    nothing to a face seen from the front. The key sits where the kit's key does (50° up, 10° right).
    """
    plotter.remove_all_lights()
    key = pv.Light(light_type="camera light", intensity=0.72)
    key.set_direction_angle(50, 10)
    fill = pv.Light(light_type="headlight", intensity=0.42)
    plotter.add_light(key)
    plotter.add_light(fill)


def _texture(texture: Texture, cache: dict[int, pv.Texture]) -> pv.Texture:
    # Providers share one atlas between head, teeth and eyes: decode and upload it once.
    key = id(texture)
    if key not in cache:
        tex = pv.Texture(texture.to_rgba())
        tex.interpolate = True
        tex.mipmap = True
        tex.repeat = True
        cache[key] = tex
    return cache[key]


__all__ = ["BACKGROUND", "AvatarView"]
