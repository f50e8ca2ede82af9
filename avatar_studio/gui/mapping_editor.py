"""The mapping-table editor: tune which blendshapes, at which weights, make each viseme on this avatar.

Why it is built this way:

* One binding direction (anchors-code habit 3): the controls only write the draft
  (:mod:`avatar_studio.gui.mapping_draft`); the draft is checked and shown back with signals blocked.
  Loading, undo and revert therefore never echo back as edits, and "modified" is a comparison with
  what is on disk, so changing a weight and changing it back is not an unsaved edit.
* The table loader is the only judge. Every edit is checked with ``VisemeTable.from_json`` against
  the ARKit names plus the avatar's own, and an invalid draft is shown (every message, the offending
  rows outlined) but never emitted, saved or used for lip-sync: the last valid table stays in use.
* The preview borrows the avatar, it does not take it over: it remembers each morph weight before it
  first touches it and puts exactly those back when preview is switched off, the editor is hidden or
  the avatar changes, so a reviewer's slider work survives a look at a viseme.
* Undo/redo keeps whole-draft snapshots: a table is a few hundred bytes, so snapshots are simpler and
  safer than inverse operations, and consecutive edits of one field merge into one step.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from PySide6.QtCore import QSettings, QStringListModel, Qt, Signal
from PySide6.QtGui import QAction, QColor, QHideEvent, QKeySequence, QShowEvent, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QCompleter,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.avatar.blendshapes import OVR_VISEMES, canonical_viseme
from avatar_studio.avatar.scene import AvatarScene
from avatar_studio.gui.error_box import error_box
from avatar_studio.gui.mapping_draft import (
    Draft,
    DraftCheck,
    check_draft,
    draft_of,
    entry_names,
    known_names,
    new_entry_problem,
    summary_text,
    viseme_label,
)
from avatar_studio.gui.morph_panel import signals_blocked
from avatar_studio.gui.preferences_panel import ERROR_COLOR, SliderRow
from avatar_studio.lipsync.viseme_table import VisemeTable, VisemeTableError

RECENT_SETTING: Final[str] = "mappingEditor/recentTable"
PREVIEW_SETTING: Final[str] = "mappingEditor/preview"
TABLE_FILTER: Final[str] = "Viseme tables (*.json);;All files (*)"
NEW_WEIGHT: Final[float] = 0.5
"""Weight of an added entry: visible in the preview at once, and clearly a value still to tune."""

WARN_COLOR: Final[str] = "#d98e04"
MUTED_COLOR: Final[str] = "#80868f"
_BAD_OUTLINE: Final[str] = f"border: 1px solid {ERROR_COLOR};"
_NAME_COLUMN, _WEIGHT_COLUMN, _REMOVE_COLUMN = range(3)
_MERGE_ID: Final[int] = 0x4D45  # any fixed id: lets QUndoStack offer consecutive commands to mergeWith


class _DraftCommand(QUndoCommand):
    """One edit as (draft before, draft after); consecutive edits of the same field merge into one step."""

    def __init__(
        self, apply: Callable[[Draft, str], None], before: Draft, after: Draft, viseme: str, text: str, key: object
    ) -> None:
        super().__init__(text)
        self._apply = apply
        self.before, self.after, self.viseme, self.key = before, after, viseme, key
        self._pushed = False

    def id(self) -> int:
        return _MERGE_ID if self.key is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 (Qt override)
        if not isinstance(other, _DraftCommand) or other.key != self.key:
            return False
        self.after = other.after
        self.setObsolete(self.after == self.before)
        return True

    def redo(self) -> None:
        # The editor has already applied the edit when it pushes the command (push calls redo).
        if self._pushed:
            self._apply(self.after, self.viseme)
        self._pushed = True

    def undo(self) -> None:
        self._apply(self.before, self.viseme)


class MappingEditor(QWidget):
    """Edit, check, preview and save the viseme → blendshape table for the avatar on screen."""

    sig_table_changed = Signal(object)
    """A valid ``VisemeTable`` that differs from the last one sent: what lip-sync should use now."""

    sig_status = Signal(str)
    """A short sentence for the status bar (opened, saved, why something was refused)."""

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._scene: AvatarScene | None = None
        self._known = known_names(None)
        self._path: Path | None = None
        self._baseline: Draft = {}
        self._draft: Draft = {}
        self._check = DraftCheck(table=VisemeTable(), usable=VisemeTable())
        self._table = VisemeTable()
        self._last_emitted: VisemeTable | None = None
        self._viseme = OVR_VISEMES[0]
        self._rows: list[tuple[QLineEdit, SliderRow]] = []
        self._rows_generation = 0
        self._preview_before: dict[int, float] = {}  # morph index → the weight before the preview touched it
        self._on_screen = True  # False while the dock holding the editor is a background tab (set_on_screen)
        self._completion_model = QStringListModel(sorted(self._known, key=str.lower), self)
        self._undo = QUndoStack(self)
        self._build()

        table = VisemeTable.default()
        path = None
        recent = str(settings.value(RECENT_SETTING, "") or "")
        if recent:
            try:
                table, path = VisemeTable.load(recent, known_blendshapes=self._known), Path(recent)
            except (VisemeTableError, OSError) as exc:
                self._show_file_error(Path(recent), _reasons(exc), still="the default table")
        self._set_document(table, path, emit=False)
        self.viseme_list.setCurrentRow(0)

    # -- construction ------------------------------------------------------------------------------

    def _build(self) -> None:
        self.title_label = QLabel()
        self.title_label.setObjectName("mappingTitle")
        self.title_label.setStyleSheet("font-weight: bold;")
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.preview_check = QCheckBox("Preview")
        self.preview_check.setToolTip(
            "Pose the avatar in the selected viseme while editing; switching off restores its previous weights"
        )
        self.preview_check.setChecked(_as_bool(self.settings.value(PREVIEW_SETTING, True)))
        self.preview_check.toggled.connect(self._on_preview_toggled)
        header = QHBoxLayout()
        header.addWidget(self.title_label, 1)
        header.addWidget(self.preview_check)

        def button(text: str, tip: str, slot: Callable[[], object]) -> QPushButton:
            widget = QPushButton(text)
            widget.setToolTip(tip)
            widget.clicked.connect(lambda _checked=False: slot())
            return widget

        self.new_button = button("New", "Start a new table from the one that ships with the app", self._on_new)
        self.open_button = button("Open…", "Open a viseme table (JSON)", self._on_open)
        self.save_button = button("Save", "Save the table (Ctrl+S)", self.save)
        self.save_as_button = button("Save As…", "Save the table under another name", self.save_as)
        self.revert_button = button("Revert", "Throw away the unsaved edits (undoable)", self.revert)
        self.undo_button = button("Undo", "Undo the last edit (Ctrl+Z)", self._undo.undo)
        self.redo_button = button("Redo", "Redo the edit undone last (Ctrl+Shift+Z)", self._undo.redo)
        self._undo.canUndoChanged.connect(self.undo_button.setEnabled)
        self._undo.canRedoChanged.connect(self.redo_button.setEnabled)
        self.undo_button.setEnabled(False)
        self.redo_button.setEnabled(False)
        buttons = QHBoxLayout()
        for widget in (self.new_button, self.open_button, self.save_button, self.save_as_button, self.revert_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        buttons.addWidget(self.undo_button)
        buttons.addWidget(self.redo_button)
        for keys, slot in (
            (QKeySequence.StandardKey.Save, self.save),
            (QKeySequence.StandardKey.Undo, self._undo.undo),
            (QKeySequence.StandardKey.Redo, self._undo.redo),
        ):
            action = QAction(self)
            action.setShortcut(keys)
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.triggered.connect(lambda _checked=False, slot=slot: slot())
            self.addAction(action)

        self.file_error = error_box("mappingFileError")

        self.summary_label = QLabel()
        self.summary_label.setObjectName("mappingSummary")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.viseme_list = QListWidget()
        self.viseme_list.setObjectName("visemeList")
        self.viseme_list.setAccessibleName("Visemes")
        for viseme in OVR_VISEMES:
            item = QListWidgetItem(viseme_label(viseme))
            item.setData(Qt.ItemDataRole.UserRole, viseme)
            self.viseme_list.addItem(item)
        self.viseme_list.currentItemChanged.connect(self._on_viseme_selected)

        self.viseme_heading = QLabel()
        self.viseme_heading.setObjectName("visemeHeading")
        self.viseme_heading.setWordWrap(True)
        self.entries = QTableWidget(0, 3)
        self.entries.setObjectName("visemeEntries")
        self.entries.setHorizontalHeaderLabels(["Blendshape", "Weight", ""])
        self.entries.horizontalHeader().setSectionResizeMode(_NAME_COLUMN, QHeaderView.ResizeMode.Stretch)
        self.entries.horizontalHeader().setSectionResizeMode(_WEIGHT_COLUMN, QHeaderView.ResizeMode.Stretch)
        self.entries.horizontalHeader().setSectionResizeMode(_REMOVE_COLUMN, QHeaderView.ResizeMode.ResizeToContents)
        self.entries.verticalHeader().setToolTip("Entry index, as the messages and the file count them")
        self.entries.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.entries.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)

        self.add_edit = self._name_edit()
        self.add_edit.setObjectName("addBlendshape")
        self.add_edit.setPlaceholderText("Blendshape to add…")
        self.add_edit.setAccessibleName("Blendshape to add")
        self.add_edit.returnPressed.connect(self._on_add)
        self.add_button = button("Add", "Add this blendshape to the selected viseme", self._on_add)
        add_row = QHBoxLayout()
        add_row.setContentsMargins(0, 0, 0, 0)
        add_row.addWidget(self.add_edit, 1)
        add_row.addWidget(self.add_button)
        self.add_message = QLabel()
        self.add_message.setObjectName("addMessage")
        self.add_message.setWordWrap(True)
        self.add_message.setStyleSheet(f"color: {ERROR_COLOR};")
        self.add_message.hide()

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.viseme_heading)
        right_layout.addWidget(self.entries, 1)
        right_layout.addLayout(add_row)
        right_layout.addWidget(self.add_message)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.viseme_list)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([150, 330])

        self.problems_label = QLabel()
        self.problems_label.setObjectName("problemsLabel")
        self.problems_label.setWordWrap(True)
        self.problems_label.setStyleSheet(f"color: {ERROR_COLOR}; font-weight: bold;")
        self.problems_list = QListWidget()
        self.problems_list.setObjectName("problemsList")
        self.problems_list.setAccessibleName("Problems")
        self.problems_list.setMaximumHeight(110)
        self.problems_list.itemActivated.connect(self._on_problem_clicked)
        self.problems_list.itemClicked.connect(self._on_problem_clicked)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(header)
        layout.addLayout(buttons)
        layout.addWidget(self.file_error)
        layout.addWidget(self.summary_label)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.problems_label)
        layout.addWidget(self.problems_list)

    def _name_edit(self) -> QLineEdit:
        """A name field completing from the avatar's morph names and ARKit (substring, any case)."""
        edit = QLineEdit()
        completer = QCompleter(self._completion_model, edit)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        edit.setCompleter(completer)
        return edit

    # -- public state --------------------------------------------------------------------------------

    @property
    def table(self) -> VisemeTable:
        """The last valid table (what lip-sync should use); never a table with problems."""
        return self._table

    @property
    def is_modified(self) -> bool:
        """Whether the draft differs from the file it came from (or the default table, for New)."""
        return self._draft != self._baseline

    @property
    def path(self) -> Path | None:
        """The file being edited, or None for a new table not saved yet."""
        return self._path

    @property
    def current_viseme(self) -> str:
        return self._viseme

    @property
    def problems(self) -> list[str]:
        """Every message about the draft, in OVR order (empty when the draft is valid)."""
        return [text for _viseme, text in self._check.problems]

    @property
    def highlighted_rows(self) -> frozenset[int]:
        """Rows of the selected viseme outlined as offending."""
        return self._check.bad_rows.get(self._viseme, frozenset())

    def unexpressible(self) -> dict[str, list[str]]:
        """Viseme → the blendshapes it uses that the shown avatar lacks ({} without an avatar)."""
        if self._scene is None:
            return {}
        return self._check.usable.unexpressible(self._scene.avatar.morph_names)

    def name_edit(self, row: int) -> QLineEdit:
        """The name field of entry ``row`` of the selected viseme."""
        return self._rows[row][0]

    def weight_row(self, row: int) -> SliderRow:
        """The slider and number field of entry ``row`` of the selected viseme."""
        return self._rows[row][1]

    def entry_count(self) -> int:
        return len(self._rows)

    # -- avatar --------------------------------------------------------------------------------------

    def set_scene(self, scene: AvatarScene | None) -> None:
        """Show ``scene``'s avatar: its names complete and count as known, and it is the preview target.

        The previous avatar gets its weights back first, so switching avatars never leaves one posed.
        """
        if scene is self._scene:
            return
        self._end_preview()
        self._scene = scene
        self._known = known_names(scene.avatar.morph_names if scene is not None else None)
        self._completion_model.setStringList(sorted(self._known, key=str.lower))
        self._draft_changed()

    # -- editing -------------------------------------------------------------------------------------

    def select_viseme(self, viseme: str) -> None:
        """Select a viseme by OVR name or alias (``MBP`` selects ``PP``)."""
        canonical = canonical_viseme(viseme)
        if canonical is None:
            raise KeyError(f"unknown viseme {viseme!r}")
        self.viseme_list.setCurrentRow(OVR_VISEMES.index(canonical))

    def set_entry(self, row: int, name: str | None = None, weight: object = None) -> None:
        """Change entry ``row`` of the selected viseme, as the row's controls do.

        Accepts any weight (the controls only produce [0, 1]) so that scripted edits go through the same
        checks; an out-of-range weight is shown as typed and marked, never clamped silently.
        """
        entries = list(self._draft.get(self._viseme, ()))
        old_name, old_weight = entries[row]
        edit, weights = self._rows[row]
        if name is not None and edit.text() != name:
            with signals_blocked(edit):
                edit.setText(name)
        if weight is not None:
            self._show_weight(weights, weight)
        entries[row] = (old_name if name is None else name.strip(), old_weight if weight is None else weight)
        key = ("name" if name is not None else "weight", self._viseme, row)
        self._edit({**self._draft, self._viseme: tuple(entries)}, f"Edit {self._viseme} entry {row}", key)

    def add_entry(self, name: str, weight: float = NEW_WEIGHT) -> bool:
        """Append ``name`` to the selected viseme; refused (with the reason shown) if unknown or repeated."""
        entries = self._draft.get(self._viseme, ())
        problem = new_entry_problem(entries, name, weight, self._known, self._viseme)
        self.add_message.setText(problem or "")
        self.add_message.setVisible(problem is not None)
        if problem is not None:
            self.sig_status.emit(problem)
            return False
        draft = {**self._draft, self._viseme: (*entries, (name.strip(), weight))}
        self._edit(draft, f"Add {name.strip()} to {self._viseme}", None, rebuild=True)
        self.add_edit.clear()
        return True

    def remove_entry(self, row: int) -> None:
        """Remove entry ``row`` of the selected viseme (the viseme stays in the table, maybe empty)."""
        entries = list(self._draft.get(self._viseme, ()))
        name, _weight = entries.pop(row)
        self._edit(
            {**self._draft, self._viseme: tuple(entries)}, f"Remove {name} from {self._viseme}", None, rebuild=True
        )

    def revert(self) -> None:
        """Go back to the file as last opened or saved; undoable, in case it was a slip."""
        self.file_error.hide()
        if self.is_modified:
            self._edit(dict(self._baseline), "Revert", None, rebuild=True)
            self.sig_status.emit("Reverted to the saved table.")

    def _edit(self, draft: Draft, text: str, key: object, *, rebuild: bool = False) -> None:
        """Apply an edit made through the controls and record it for undo."""
        if draft == self._draft:
            return
        before, self._draft = self._draft, draft
        self._undo.push(_DraftCommand(self._apply_snapshot, before, draft, self._viseme, text, key))
        if rebuild:
            self._rebuild_rows()
        self._draft_changed()

    def _apply_snapshot(self, draft: Draft, viseme: str) -> None:
        """Undo/redo: show ``draft`` with the viseme the edit was made in selected."""
        self._draft = draft
        if viseme != self._viseme:
            with signals_blocked(self.viseme_list):
                self.viseme_list.setCurrentRow(OVR_VISEMES.index(viseme))
            self._viseme = viseme
        self._rebuild_rows()
        self._draft_changed()

    # -- files ---------------------------------------------------------------------------------------

    def new_from_default(self) -> None:
        """Start a new, unsaved table from the one shipped with the app (does not ask; see ``_on_new``)."""
        self._set_document(VisemeTable.default(), None)
        self.sig_status.emit("New table from the default; Save As… to keep it.")

    def load(self, path: str | os.PathLike[str]) -> bool:
        """Open the table at ``path``; if it is broken, say why and keep the current content as it is.

        Names are checked as for edits (ARKit plus the avatar's names). It does not ask about unsaved
        edits: callers that replace a modified table call ``maybe_save_or_discard`` first.
        """
        path = Path(path)
        try:
            table = VisemeTable.load(path, known_blendshapes=self._known)
        except (VisemeTableError, OSError) as exc:
            reasons = _reasons(exc)
            self._show_file_error(path, reasons, still=self._document_name())
            self.sig_status.emit(f"Cannot open {path.name}: {reasons[0]}")
            return False
        self._set_document(table, path)
        self.settings.setValue(RECENT_SETTING, str(path))
        self.sig_status.emit(f"Opened {path.name}.")
        return True

    def save(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Write the table to ``path`` (default: the current file, else ask); False if nothing was written.

        Refused while the draft has problems: a file that the app itself would refuse to load is worse
        than no file.
        """
        table = self._check.table
        if table is None:
            count = len(self._check.problems)
            self._say(f"Not saved: fix the {count} problem{'s' if count != 1 else ''} listed below first.")
            return False
        target = Path(path) if path is not None else self._path
        if target is None:
            return self.save_as()
        try:
            table.save(target)
        except OSError as exc:
            self._say(f"Not saved: {exc.strerror or exc}")
            return False
        self._path, self._baseline = target, self._draft
        self.settings.setValue(RECENT_SETTING, str(target))
        self.file_error.hide()
        self._update_title()
        self.sig_status.emit(f"Saved {target.name}.")
        return True

    def save_as(self) -> bool:
        """Ask for a file name and save there."""
        start = str(self._path) if self._path else str(self._start_dir() / "viseme_table.json")
        path, _filter = QFileDialog.getSaveFileName(self, "Save Viseme Table", start, TABLE_FILTER)
        return self.save(path) if path else False

    def maybe_save_or_discard(self, parent: QWidget) -> bool:
        """Before closing (or replacing the table): True when it is fine to go on, False to stay.

        With unsaved edits the user picks Save (go on only once written), Discard (revert, go on) or
        Cancel (stay, edits kept).
        """
        if not self.is_modified:
            return True
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Unsaved mapping table",
            f"The mapping table “{self._document_name()}” has unsaved changes.",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            parent,
        )
        box.setObjectName("unsavedMappingBox")
        if self._check.valid:
            box.setInformativeText("Save them before going on?")
        else:
            box.setInformativeText("They have problems and cannot be saved until fixed; discard them?")
            box.button(QMessageBox.StandardButton.Save).setEnabled(False)
        box.setDefaultButton(
            QMessageBox.StandardButton.Save if self._check.valid else QMessageBox.StandardButton.Cancel
        )
        box.setEscapeButton(QMessageBox.StandardButton.Cancel)
        try:
            choice = box.exec()
        finally:
            box.deleteLater()
        if choice == QMessageBox.StandardButton.Discard:
            self._open_draft(self._baseline, self._path)
            return True
        return choice == QMessageBox.StandardButton.Save and self.save()

    def _set_document(self, table: VisemeTable, path: Path | None, *, emit: bool = True) -> None:
        """Show ``table`` as a freshly opened document: not modified, nothing to undo."""
        self._open_draft(draft_of(table), path, emit=emit)

    def _open_draft(self, draft: Draft, path: Path | None, *, emit: bool = True) -> None:
        self._path = path
        self._draft = self._baseline = draft
        self._undo.clear()
        if emit:
            self.file_error.hide()
        self.add_message.hide()
        self._rebuild_rows()
        self._draft_changed(emit=emit)

    def _on_new(self) -> None:
        if self.maybe_save_or_discard(self):
            self.new_from_default()

    def _on_open(self) -> None:
        if not self.maybe_save_or_discard(self):
            return
        path, _filter = QFileDialog.getOpenFileName(self, "Open Viseme Table", str(self._start_dir()), TABLE_FILTER)
        if path:
            self.load(path)

    def _start_dir(self) -> Path:
        recent = str(self.settings.value(RECENT_SETTING, "") or "")
        return Path(recent).parent if recent else Path.home()

    def _document_name(self) -> str:
        return self._path.name if self._path is not None else "default table (not saved to a file)"

    def _show_file_error(self, path: Path, reasons: list[str], *, still: str) -> None:
        items = "".join(f"<li>{html.escape(reason)}</li>" for reason in reasons)
        count = f"{len(reasons)} problem{'' if len(reasons) == 1 else 's'}"
        self.file_error.setText(
            f"<b>Cannot open {html.escape(path.name)}</b> ({count}); still editing {html.escape(still)}:"
            f"<ul style='margin:2px'>{items}</ul>"
        )
        self.file_error.setToolTip(str(path))
        self.file_error.show()

    def _say(self, text: str) -> None:
        self.problems_label.setText(text)
        self.problems_label.show()
        self.sig_status.emit(text)

    # -- controls → draft ----------------------------------------------------------------------------

    def _on_viseme_selected(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        if current is None:
            return
        self._viseme = str(current.data(Qt.ItemDataRole.UserRole))
        self.add_message.hide()
        self._rebuild_rows()
        self._decorate()
        self._apply_preview()

    def _on_name_committed(self, row: int, generation: int) -> None:
        """A typed name counts on Enter, on leaving the field or on picking a completion.

        Not on every keystroke: half-typed names can be valid (``mouth`` is both ``mouthLeft`` and
        ``mouthRight``), and emitting, previewing and undoing those would be noise.
        """
        if generation != self._rows_generation:  # a replaced row reporting its focus-out on the way out
            return
        entries = list(self._draft[self._viseme])
        entries[row] = (self._rows[row][0].text().strip(), entries[row][1])
        self._edit(
            {**self._draft, self._viseme: tuple(entries)},
            f"Rename {self._viseme} entry {row}",
            ("name", self._viseme, row),
        )

    def _on_weight_moved(self, row: int, generation: int, value: float) -> None:
        if generation != self._rows_generation:
            return
        self._show_weight(self._rows[row][1], value)
        entries = list(self._draft[self._viseme])
        entries[row] = (entries[row][0], value)
        self._edit(
            {**self._draft, self._viseme: tuple(entries)},
            f"Weight of {entries[row][0]} in {self._viseme}",
            ("weight", self._viseme, row),
        )

    def _on_add(self) -> None:
        if self.add_entry(self.add_edit.text()):
            self._rows[-1][1].spin.setFocus()
        else:
            self.add_edit.setFocus()

    def _on_problem_clicked(self, item: QListWidgetItem) -> None:
        self.select_viseme(str(item.data(Qt.ItemDataRole.UserRole)))

    def _on_preview_toggled(self, on: bool) -> None:
        self.settings.setValue(PREVIEW_SETTING, on)
        if on:
            self._apply_preview()
        else:
            self._end_preview()

    # -- draft → controls ----------------------------------------------------------------------------

    def _rebuild_rows(self) -> None:
        """New row widgets for the selected viseme; on selection, add, remove, undo and load only."""
        entries = self._draft.get(self._viseme, ())
        self._rows = []
        self._rows_generation += 1  # first: the old rows' last signals (focus out) must find themselves stale
        generation = self._rows_generation
        self.entries.setRowCount(0)
        self.entries.setRowCount(len(entries))
        self.entries.setVerticalHeaderLabels([str(i) for i in range(len(entries))])
        for row, (name, weight) in enumerate(entries):
            edit = self._name_edit()
            edit.setText(str(name))
            edit.setAccessibleName(f"{self._viseme} entry {row} blendshape")
            edit.editingFinished.connect(lambda row=row, gen=generation: self._on_name_committed(row, gen))
            edit.completer().activated.connect(lambda _text, row=row, gen=generation: self._on_name_committed(row, gen))
            weights = SliderRow(
                f"{self._viseme} entry {row} weight",
                0.0,
                1.0,
                lambda value, row=row, generation=generation: self._on_weight_moved(row, generation, value),
            )
            self._show_weight(weights, weight)
            remove = QToolButton()
            remove.setText("✕")
            remove.setToolTip("Remove this blendshape from the viseme")
            remove.setAccessibleName(f"Remove {self._viseme} entry {row}")
            remove.clicked.connect(lambda _checked=False, row=row: self.remove_entry(row))
            self.entries.setCellWidget(row, _NAME_COLUMN, edit)
            self.entries.setCellWidget(row, _WEIGHT_COLUMN, weights)
            self.entries.setCellWidget(row, _REMOVE_COLUMN, remove)
            self._rows.append((edit, weights))

    @staticmethod
    def _show_weight(weights: SliderRow, value: object) -> None:
        """Show ``value`` in a row's controls; a number outside [0, 1] widens the field so it shows as is."""
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
        with signals_blocked(weights.spin):
            weights.spin.setRange(min(0.0, float(number)), max(1.0, float(number)))
        weights.show_value(float(number))

    def _draft_changed(self, *, emit: bool = True) -> None:
        """Check the draft, show the verdict everywhere, hand on a new valid table, re-pose the preview."""
        self._check = check_draft(self._draft, self._known)
        if self._check.table is not None:
            self._table = self._check.table
            if self._last_emitted is None or not emit:
                self._last_emitted = self._table
            elif self._table != self._last_emitted:
                self._last_emitted = self._table
                self.sig_table_changed.emit(self._table)
        self._decorate()
        self._apply_preview()

    def _decorate(self) -> None:
        """Marks, messages, summary, title and buttons from the current check (no draft changes)."""
        check = self._check
        lacking = self.unexpressible()
        problem_visemes = {viseme for viseme, _text in check.problems}
        for index, viseme in enumerate(OVR_VISEMES):
            item = self.viseme_list.item(index)
            count = len(self._draft.get(viseme, ()))
            text = viseme_label(viseme) + (f"  ({count})" if viseme in self._draft else "  (not in table)")
            tips = [text_ for v, text_ in check.problems if v == viseme]
            if viseme in problem_visemes:
                text, colour = f"✖ {text}", QColor(ERROR_COLOR)
            elif viseme in lacking:
                text, colour = f"⚠ {text}", QColor(WARN_COLOR)
                tips = [f"This avatar cannot show {viseme} fully; it lacks {', '.join(lacking[viseme])}."]
            else:
                colour = self.viseme_list.palette().text().color()
            item.setText(text)
            item.setForeground(colour)
            item.setToolTip("\n".join(tips))

        entries = self._draft.get(self._viseme, ())
        note = "" if self._viseme in self._draft else " — not in the table: it moves nothing"
        self.viseme_heading.setText(
            f"<b>{html.escape(viseme_label(self._viseme))}</b>: {len(entries)} blendshape"
            f"{'' if len(entries) == 1 else 's'}{note}"
        )
        bad = check.bad_rows.get(self._viseme, frozenset())
        messages = "\n".join(text for v, text in check.problems if v == self._viseme)
        avatar_names = set(self._scene.avatar.morph_names) if self._scene is not None else None
        for row, (edit, weights) in enumerate(self._rows):
            name = edit.text().strip()
            if row in bad:
                edit.setStyleSheet(f"QLineEdit {{ {_BAD_OUTLINE} }}")
                weights.spin.setStyleSheet(f"QDoubleSpinBox {{ {_BAD_OUTLINE} }}")
                edit.setToolTip(messages)
            elif avatar_names is not None and not entry_names(name, avatar_names):
                edit.setStyleSheet(f"QLineEdit {{ color: {WARN_COLOR}; }}")
                weights.spin.setStyleSheet("")
                edit.setToolTip(f"This avatar has no {name!r}: the viseme cannot be shown fully.")
            else:
                edit.setStyleSheet("")
                weights.spin.setStyleSheet("")
                edit.setToolTip("")

        self.problems_list.clear()
        for viseme, text in check.problems:
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, viseme)
            item.setForeground(QColor(ERROR_COLOR))
            self.problems_list.addItem(item)
        count = len(check.problems)
        self.problems_list.setVisible(bool(count))
        self.problems_label.setVisible(bool(count))
        if count:
            self.problems_label.setText(
                f"{count} problem{'' if count == 1 else 's'}: this draft is not used or saved until fixed "
                "(lip-sync keeps the last valid table)."
            )

        self.summary_label.setText(summary_text(lacking, self._scene is not None))
        self.summary_label.setStyleSheet(f"color: {WARN_COLOR if lacking else MUTED_COLOR};")
        self.save_button.setEnabled(check.valid)
        self.save_as_button.setEnabled(check.valid)
        self.revert_button.setEnabled(self.is_modified)
        self._update_title()

    def _update_title(self) -> None:
        modified = self.is_modified
        name = self._document_name()
        self.title_label.setText(f"Mapping table — {name}{' *' if modified else ''}")
        self.title_label.setToolTip(str(self._path) if self._path else "Not saved yet (started from the default)")
        self.setWindowTitle(f"Mapping table — {name}[*]")
        self.setWindowModified(modified)
        self.revert_button.setEnabled(modified)

    # -- live preview --------------------------------------------------------------------------------

    @property
    def previewing(self) -> bool:
        """Whether the avatar is currently posed by the editor (and will get its weights back)."""
        return bool(self._preview_before)

    def _apply_preview(self) -> None:
        """Pose the avatar in the selected viseme: its entries at their weights, the table's other shapes 0.

        Uses the entries that are valid on their own, so fixing one row still previews the others.
        A shape posed earlier that the table no longer uses goes back to its weight from before.
        """
        scene = self._scene
        if scene is None or not self.preview_check.isChecked() or not self.isVisible() or not self._on_screen:
            self._end_preview()
            return
        slots = {name: index for index, name in enumerate(scene.avatar.morph_names)}
        pose = self._check.usable.blendshapes({self._viseme: 1.0})
        target = {slots[name]: weight for name, weight in pose.items() if name in slots}
        for index, weight in self._preview_before.items():
            target.setdefault(index, weight)
        current = scene.weights
        for index in target:
            self._preview_before.setdefault(index, float(current[index]))
        scene.set_weights(target)

    def _end_preview(self) -> None:
        """Give the avatar back the weights it had before the preview touched them."""
        if self._scene is not None and self._preview_before:
            self._scene.set_weights(self._preview_before)
        self._preview_before = {}

    def set_on_screen(self, on_screen: bool) -> None:
        """Tell the editor whether its dock is the visible tab (connect ``QDockWidget.visibilityChanged``).

        Why this is needed besides show/hide events: Qt moves a dock that becomes a background tab off
        screen instead of hiding it, so the editor would keep posing the face while the user works in
        another tab (e.g. lip-sync playback fighting the preview over the mouth shapes).
        """
        self._on_screen = on_screen
        self._apply_preview()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        self._apply_preview()

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802 (Qt override)
        # A hidden editor (closed dock, other tab) must not keep the face in a viseme.
        self._end_preview()
        super().hideEvent(event)


def _reasons(exc: BaseException) -> list[str]:
    """Every problem of a table error, or the OS's reason a file could not be read."""
    if isinstance(exc, VisemeTableError):
        return list(exc.problems)
    if isinstance(exc, OSError):
        return [f"it could not be read: {exc.strerror or exc}"]
    return [str(exc)]


def _as_bool(value: object) -> bool:
    """QSettings' INI backend returns booleans as the strings "true"/"false"."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


__all__ = ["MappingEditor"]
