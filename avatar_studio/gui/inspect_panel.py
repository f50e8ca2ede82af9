"""The inspect panel: the ``inspect`` report of the selected avatar, readable at a glance, in a side panel.

Why it shows ``build_report``'s dict rather than computing its own facts: the CLI (``inspect``),
``--json`` and this panel must never disagree about an avatar, so all three read one report. The panel
only lays the facts out (sections, lists, colour for what needs attention) and adds the two things
a reviewer does next: try another viseme mapping table, and hand the report on (clipboard or JSON).

Why table errors are shown inside the panel instead of in a dialog: a QA person editing a table by
hand reloads it many times; an inline list of every problem (with viseme and entry) that stays
visible while they fix the file is faster than dismissing a modal box each time, and the previous,
valid table stays in use meanwhile.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Final

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.avatar.model import Avatar
from avatar_studio.avatar.report import build_report, render_text
from avatar_studio.gui.error_box import error_box
from avatar_studio.lipsync.viseme_table import VisemeTable, VisemeTableError

TABLE_SETTING: Final[str] = "inspect/visemeTable"
TABLE_FILTER: Final[str] = "Viseme tables (*.json);;All files (*)"
GOOD: Final[str] = "#7fc28a"
WARN: Final[str] = "#e0b45c"
BAD: Final[str] = "#e07a70"
MUTED: Final[str] = "#80868f"


class InspectPanel(QWidget):
    """Shows the inspect report of one avatar (or why its file cannot be opened)."""

    sig_table_changed = Signal(str)
    """A new viseme table is in use; carries its path, or "" for the app's default table."""

    sig_report_saved = Signal(str)
    """The report was written as JSON to this path (the main window may show it in the status bar)."""

    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._avatar: Avatar | None = None
        self._path: str | None = None
        self._error: str | None = None
        self._report: dict[str, Any] | None = None
        self._table: VisemeTable = VisemeTable.default()
        self._table_path: str | None = None
        self._table_title: str | None = None  # set while following the mapping editor's (maybe unsaved) table

        self.table_button = QPushButton("Mapping table…")
        self.table_button.setToolTip("Check the avatar against another viseme → blendshape table (JSON)")
        self.table_button.clicked.connect(self.choose_table)
        self.default_table_button = QPushButton("Use default")
        self.default_table_button.setToolTip("Go back to the viseme table that ships with the app")
        self.default_table_button.clicked.connect(self.use_default_table)
        self.table_label = QLabel()
        self.table_label.setObjectName("inspectTable")
        self.table_label.setStyleSheet(f"color: {MUTED};")
        self.table_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        table_row = QHBoxLayout()
        table_row.setContentsMargins(0, 0, 0, 0)
        table_row.addWidget(self.table_button)
        table_row.addWidget(self.default_table_button)
        table_row.addWidget(self.table_label, 1)

        self.table_error = error_box("inspectTableError")

        self.text = QTextBrowser()
        self.text.setObjectName("inspectReport")
        self.text.setOpenLinks(False)
        self.text.setFrameShape(QFrame.Shape.NoFrame)

        self.copy_button = QPushButton("Copy report")
        self.copy_button.setToolTip("Copy the report as text, e.g. into a ticket")
        self.copy_button.clicked.connect(self.copy_report)
        self.save_button = QPushButton("Save report as JSON…")
        self.save_button.setToolTip("The same data as `avatar-studio inspect --json`")
        self.save_button.clicked.connect(self.save_dialog)
        self.notice = QLabel()
        self.notice.setObjectName("inspectNotice")
        self.notice.setStyleSheet(f"color: {MUTED};")
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.copy_button)
        bottom.addWidget(self.save_button)
        bottom.addWidget(self.notice, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(table_row)
        layout.addWidget(self.table_error)
        layout.addWidget(self.text, 1)
        layout.addLayout(bottom)

        saved = self.settings.value(TABLE_SETTING, "") if self.settings is not None else ""
        if saved:
            self.load_table(str(saved))
        self._update_table_label()
        self.clear()

    # --- public state ----------------------------------------------------------------------------

    @property
    def report(self) -> dict[str, Any] | None:
        """The report on screen (``build_report`` output), or None when nothing or a broken file is shown."""
        return self._report

    @property
    def table(self) -> VisemeTable:
        return self._table

    @property
    def table_path(self) -> str | None:
        """The custom table's path, or None while the default table is used."""
        return self._table_path

    @property
    def error(self) -> str | None:
        """The loader's message while a broken file is shown."""
        return self._error

    def report_text(self) -> str:
        """What "Copy report" puts on the clipboard (the CLI's text form, or the file's error)."""
        if self._report is not None:
            return render_text(self._report)
        if self._error is not None and self._path is not None:
            return f"File        {self._path}\nError       {self._error}"
        return ""

    # --- showing ---------------------------------------------------------------------------------

    def show_avatar(self, avatar: Avatar, path: str | None = None) -> None:
        """Show the report of a loaded avatar (``path`` overrides ``avatar.source`` in the heading)."""
        self._avatar, self._path, self._error = avatar, path or avatar.source, None
        self._rebuild()

    def show_error(self, path: str, message: str) -> None:
        """Show why ``path`` cannot be opened (the loader's message), instead of a stale report."""
        self._avatar, self._path, self._error, self._report = None, path, message, None
        name = html.escape(Path(path).name)
        self.text.setHtml(
            f"<h3 style='color:{BAD}'>Cannot open {name}</h3>"
            f"<p>{html.escape(message)}</p>"
            f"<p style='color:{MUTED}'>{html.escape(path)}</p>"
            f"<p style='color:{MUTED}'>Nothing else was loaded; the file is unchanged.</p>"
        )
        self._update_buttons()

    def clear(self) -> None:
        self._avatar, self._path, self._error, self._report = None, None, None, None
        self.text.setHtml(
            f"<p style='color:{MUTED}'>Select or open an avatar to see its inspect report: geometry, "
            "textures, morph targets, ARKit coverage and the visemes the mapping table cannot express.</p>"
        )
        self._update_buttons()

    def _rebuild(self) -> None:
        if self._avatar is None:
            return
        self._report = build_report(self._avatar, self._table)
        self._report["file"] = self._path or self._report["file"]
        scroll = self.text.verticalScrollBar().value()
        self.text.setHtml(report_html(self._report, self._table_name()))
        self.text.verticalScrollBar().setValue(scroll)
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.copy_button.setEnabled(bool(self.report_text()))
        self.save_button.setEnabled(self._report is not None)
        self.notice.clear()

    # --- mapping table ---------------------------------------------------------------------------

    def choose_table(self) -> None:
        start = self._table_path or (str(Path(self._path).parent) if self._path else str(Path.home()))
        path, _filter = QFileDialog.getOpenFileName(self, "Viseme Mapping Table", start, TABLE_FILTER)
        if path:
            self.load_table(path)

    def load_table(self, path: str | os.PathLike[str]) -> bool:
        """Use the table at ``path``; on any problem keep the current table and list every problem."""
        path = str(path)
        try:
            table = VisemeTable.load(path)
        except VisemeTableError as exc:
            self._show_table_error(path, exc.problems)
            return False
        except OSError as exc:
            self._show_table_error(path, [f"it could not be read: {exc.strerror or exc}"])
            return False
        self._table, self._table_path, self._table_title = table, path, None
        self.table_error.hide()
        if self.settings is not None:
            self.settings.setValue(TABLE_SETTING, path)
        self._update_table_label()
        self._rebuild()
        self.sig_table_changed.emit(path)
        return True

    def follow_table(self, table: VisemeTable, title: str, path: str | None = None) -> None:
        """Report against ``table``, the one the Viseme Mapping editor holds (possibly not saved yet).

        Why no signal here: the editor is where the table came from; echoing it back would loop. The
        saved setting is left alone too, because the editor remembers its own file.
        """
        self._table, self._table_path, self._table_title = table, path, title
        self.table_error.hide()
        self._update_table_label()
        self._rebuild()

    def use_default_table(self) -> None:
        self._table, self._table_path, self._table_title = VisemeTable.default(), None, None
        self.table_error.hide()
        if self.settings is not None:
            self.settings.remove(TABLE_SETTING)
        self._update_table_label()
        self._rebuild()
        self.sig_table_changed.emit("")

    def _show_table_error(self, path: str, problems: list[str]) -> None:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
        still = html.escape(self._table_name())
        self.table_error.setText(
            f"<b>Cannot use {html.escape(Path(path).name)}</b> ({len(problems)} problem"
            f"{'' if len(problems) == 1 else 's'}); still using {still}:<ul style='margin:2px'>{items}</ul>"
        )
        self.table_error.setToolTip(path)
        self.table_error.show()

    def _table_name(self) -> str:
        if self._table_title:
            return self._table_title
        return Path(self._table_path).name if self._table_path else "the default table"

    def _update_table_label(self) -> None:
        name = self._table_name()
        self.table_label.setText(f"{name} · {len(self._table)} visemes")
        self.table_label.setToolTip(self._table_path or "resources/viseme_table.json (ships with the app)")
        self.default_table_button.setEnabled(self._table_path is not None)

    # --- export ----------------------------------------------------------------------------------

    def copy_report(self) -> None:
        text = self.report_text()
        if text:
            QGuiApplication.clipboard().setText(text)
            self.notice.setText("Copied to the clipboard.")

    def save_dialog(self) -> None:
        if self._report is None:
            return
        stem = Path(self._path or "avatar").stem
        start = str(Path(self._path).parent / f"{stem}.inspect.json") if self._path else f"{stem}.inspect.json"
        path, _filter = QFileDialog.getSaveFileName(self, "Save Report as JSON", start, "JSON (*.json)")
        if path:
            self.save_report(path)

    def save_report(self, path: str | os.PathLike[str]) -> bool:
        """Write the report as JSON (same keys as ``inspect --json``); False and a message if it fails."""
        if self._report is None:
            return False
        target = Path(path)
        try:
            target.write_text(json.dumps(self._report, indent=2, ensure_ascii=False) + "\n", "utf-8")
        except OSError as exc:
            self.notice.setText(f"<span style='color:{BAD}'>Not saved: {html.escape(exc.strerror or str(exc))}</span>")
            return False
        self.notice.setText(f"Saved {html.escape(target.name)}.")
        self.sig_report_saved.emit(str(target))
        return True


# --- report layout -------------------------------------------------------------------------------


def _names(names: list[str], colour: str | None = None) -> str:
    style = f" style='color:{colour}'" if colour else ""
    return f"<span{style}>{', '.join(html.escape(n) for n in names)}</span>"


def _row(label: str, value: str) -> str:
    return f"<tr><td style='color:{MUTED}; padding-right:10px' valign='top'>{label}</td><td>{value}</td></tr>"


def report_html(report: dict[str, Any], table_name: str = "the mapping table") -> str:
    """The report as HTML for a ``QTextBrowser``: every name from the file is escaped."""
    parts: list[str] = []
    path = str(report["file"])
    size = f" · {report['bytes']:,} bytes" if report.get("bytes") else ""
    parts.append(f"<h3 style='margin-bottom:0'>{html.escape(Path(path).name)}</h3>")
    parts.append(f"<p style='color:{MUTED}; margin-top:2px'>{html.escape(path)}{size}</p>")

    # ARKit first: it is the question a reviewer opens the panel for.
    ark = report["arkit"]
    complete = ark["present"] == ark["of"]
    colour = GOOD if complete else (WARN if ark["present"] else BAD)
    parts.append("<h4>ARKit coverage</h4><table>")
    parts.append(_row("present", f"<b style='color:{colour}'>{ark['present']}/{ark['of']}</b> blendshapes"))
    if ark["missing"]:
        parts.append(_row(f"missing ({len(ark['missing'])})", _names(ark["missing"], WARN)))
    if ark["visemes"]:
        parts.append(_row(f"visemes ({len(ark['visemes'])})", _names(ark["visemes"])))
    if ark["unmapped"]:
        parts.append(_row(f"unmapped ({len(ark['unmapped'])})", _names(ark["unmapped"], WARN)))
    parts.append("</table>")

    if "mapping" in report:
        mapping = report["mapping"]
        ok = len(mapping["expressible"])
        colour = GOOD if ok == mapping["visemes"] else WARN
        parts.append(f"<h4>Lip-sync with {html.escape(table_name)}</h4>")
        parts.append(
            f"<p><b style='color:{colour}'>{ok}/{mapping['visemes']}</b> visemes expressible"
            + (f": {_names(mapping['expressible'])}" if mapping["expressible"] else "")
            + "</p>"
        )
        if mapping["unexpressible"]:
            parts.append("<p>Cannot express:</p><table>")
            for viseme, lacks in mapping["unexpressible"].items():
                parts.append(_row(html.escape(viseme), "lacks " + _names(lacks, WARN)))
            parts.append("</table>")

    parts.append("<h4>Geometry</h4><table>")
    parts.append(
        _row(
            "total",
            f"{len(report['primitives'])} primitive(s), {report['vertices']:,} vertices, "
            f"{report['triangles']:,} triangles",
        )
    )
    for prim in report["primitives"]:
        textured = ", textured" if prim["textured"] else ""
        parts.append(
            _row(
                html.escape(str(prim["name"])),
                f"{prim['vertices']:,} vertices, {prim['triangles']:,} triangles, "
                f"{prim['morphTargets']} morph targets{textured}",
            )
        )
    parts.append("</table>")

    parts.append("<h4>Textures and extensions</h4><table>")
    if not report["textures"]:
        parts.append(_row("textures", "none"))
    for tex in report["textures"]:
        unreadable = f"<span style='color:{BAD}'>unreadable</span>"
        size_text = f"{tex['size'][0]}×{tex['size'][1]}" if tex["size"] else unreadable
        details = f"{html.escape(str(tex['mimeType']))}, {size_text}, {tex['bytes']:,} bytes"
        parts.append(_row(html.escape(str(tex["name"])), details))
    parts.append(_row("used", _names(report["extensionsUsed"]) if report["extensionsUsed"] else "none"))
    parts.append(_row("required", _names(report["extensionsRequired"]) if report["extensionsRequired"] else "none"))
    parts.append("</table>")

    targets = report["morphTargets"]
    parts.append(f"<h4>Morph targets ({len(targets)})</h4>")
    if targets:
        parts.append("<table>")
        for target in targets:
            raw = [r for r in target["rawNames"] if r != target["name"]]
            extra = f" <span style='color:{MUTED}'>file: {_names(raw)}</span>" if raw else ""
            default = f" <span style='color:{MUTED}'>default {target['default']:g}</span>" if target["default"] else ""
            parts.append(f"<tr><td>{html.escape(target['name'])}{extra}{default}</td></tr>")
        parts.append("</table>")
    else:
        parts.append(f"<p style='color:{MUTED}'>none</p>")

    if report["warnings"]:
        parts.append(f"<h4 style='color:{WARN}'>Warnings ({len(report['warnings'])})</h4><ul>")
        parts.extend(f"<li>{html.escape(w)}</li>" for w in report["warnings"])
        parts.append("</ul>")
    return "".join(parts)


__all__ = ["InspectPanel", "report_html"]
