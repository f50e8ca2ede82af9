"""The ``avatar-studio`` command: the desktop app by default, plus scriptable subcommands.

Subcommands print one line and exit non-zero on a file they cannot use, so reviewers and CI
scripts can rely on the exit code. ``avatar-studio FILE.glb`` opens the file in the app.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from avatar_studio import __version__

if TYPE_CHECKING:  # the real imports are lazy, so `--version` and `--help` stay instant
    from avatar_studio.avatar.model import Avatar
    from avatar_studio.config import Settings
    from avatar_studio.lipsync.viseme_table import VisemeTable

SUBCOMMANDS = ("inspect", "pose", "generate", "serve", "worker", "lipsync")
EXPORT_SUFFIXES = (".glb", ".ply", ".obj")


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


def _name_weight(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT, got {text!r}")
    try:
        weight = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the weight in {text!r} is not a number") from None
    if not 0.0 <= weight <= 1.0:
        raise argparse.ArgumentTypeError(f"the weight in {text!r} must be between 0 and 1")
    return name, weight


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar-studio",
        description="Selfie → photoreal, animatable 3D avatar. Without a subcommand, opens the desktop app "
        "(with FILE.glb: opens that file for review).",
    )
    parser.add_argument("-V", "--version", action="version", version=f"avatar-studio {__version__}")
    parser.add_argument("--self-test", action="store_true",
                        help="check this installation without a display (avatar, morph targets, lip sync, local "
                        "generation, embedded service); exit code 1 on a failure")
    parser.add_argument("--screenshot", metavar="PNG",
                        help="--screenshot PNG [FILE.glb]: open the window (and the file), save it as PNG and quit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_inspect = sub.add_parser("inspect", help="describe a .glb/.gltf: meshes, textures, morph targets, ARKit coverage")
    p_inspect.add_argument("file", type=Path)
    p_inspect.add_argument(
        "--mapping", type=Path, metavar="TABLE", help="viseme table: also report the visemes it cannot express"
    )
    p_inspect.add_argument("--json", action="store_true", help="print the report as JSON")

    p_pose = sub.add_parser("pose", help="bake a posed avatar (morph weights applied) to .glb, .ply or .obj")
    p_pose.add_argument("file", type=Path)
    p_pose.add_argument("--set", dest="sets", type=_name_weight, nargs="+", action="extend", default=[],
                        metavar="NAME=WEIGHT", help="morph target weight (canonical or file name)")
    p_pose.add_argument("--mapping", type=Path, metavar="TABLE", help="viseme table (default: the built-in table)")
    p_pose.add_argument("--viseme", dest="visemes", type=_name_weight, nargs="+", action="extend", default=[],
                        metavar="NAME=WEIGHT", help="viseme weight, turned into blendshapes by the table")
    p_pose.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")

    p_gen = sub.add_parser("generate", help="make an avatar GLB from a selfie offline (the built-in local provider)")
    p_gen.add_argument("selfie", type=Path, help="a JPEG or PNG photo showing one face from the front")
    p_gen.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.glb")
    p_gen.add_argument("--blendshapes", choices=("arkit", "basic"), default="arkit",
                       help="arkit: the 52 ARKit shapes (default); basic: the 15 visemes and blinks")
    p_gen.add_argument("--subdivisions", type=int, choices=(0, 1, 2), default=1,
                       help="mesh smoothing levels (default 1: ~3k vertices; 2: ~12k)")

    p_serve = sub.add_parser("serve", help="run the avatar service (REST API + job workers) in the foreground",
                             description="Settings come from the environment: DATABASE_URL, STORAGE_BUCKET, PROVIDER, "
                             "PROVIDER_API_KEY, AVATAR_STUDIO_DATA_DIR, AVATAR_STUDIO_PUBLIC_URL (see the README).")
    p_serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p_serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0 = any free)")
    p_serve.add_argument("--workers", type=int, default=1, metavar="N",
                         help="job workers inside this process (default: 1; 0 = API only)")

    p_worker = sub.add_parser("worker", help="run job workers only, against the service's database and storage")
    p_worker.add_argument("--concurrency", type=int, default=1, metavar="N", help="parallel jobs (default: 1)")

    p_lip = sub.add_parser("lipsync", help="audio → visemes and blendshapes (analyze a WAV, score against phones)")
    lip = p_lip.add_subparsers(dest="lipsync_command", metavar="ACTION", required=True)
    p_an = lip.add_parser("analyze", help="one frame per 10 ms: viseme and blendshape weights (JSON or CSV)")
    p_an.add_argument("audio", type=Path, metavar="AUDIO",
                      help="WAV (PCM 8/16/24/32-bit or float) or FLAC file, any rate")
    p_an.add_argument("--mode", choices=("live", "offline"), default="live",
                      help="live: the causal microphone engine (default); offline: pocketsphinx phone decoding")
    p_an.add_argument("--mapping", type=Path, metavar="TABLE", help="viseme table (default: the built-in table)")
    p_an.add_argument("--profile", type=Path, metavar="PROFILE.npz", help="calibration profile (live mode)")
    fmt = p_an.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json", help="JSON output (default)")
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV output")
    p_an.add_argument("-o", "--output", type=Path, metavar="OUT", help="write here instead of standard output")
    p_sc = lip.add_parser("score", help="frame accuracy and confusion matrix against a phone alignment")
    p_sc.add_argument("audio", type=Path, metavar="AUDIO")
    p_sc.add_argument("--reference", type=Path, required=True, metavar="ALIGNMENT",
                      help="TextGrid, or a table with one 'phone start end' per line")
    p_sc.add_argument("--mode", choices=("live", "offline"), default="live")
    p_sc.add_argument("--profile", type=Path, metavar="PROFILE.npz", help="calibration profile (live mode)")
    p_sc.add_argument("--phoneset", choices=("arpabet", "espeak", "ipa"), help="reference phone set (default: guess)")
    p_sc.add_argument("--json", action="store_true", help="print the score as JSON")
    return parser


def _load(path: Path) -> Avatar:
    from avatar_studio.avatar.errors import AvatarError
    from avatar_studio.avatar.gltf_reader import load_avatar

    try:
        return load_avatar(path)
    except AvatarError as exc:
        raise CliError(f"{path}: {exc}") from None


def _table(path: Path | None) -> VisemeTable:
    from avatar_studio.lipsync.viseme_table import VisemeTable, VisemeTableError

    try:
        return VisemeTable.default() if path is None else VisemeTable.load(path)
    except VisemeTableError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None


def _inspect(args: argparse.Namespace) -> int:
    from avatar_studio.avatar.report import build_report, render_text

    avatar = _load(args.file)
    table = _table(args.mapping) if args.mapping else None
    report = build_report(avatar, table)
    print(json.dumps(report, indent=2) if args.json else render_text(report))
    return 0


def _pose(args: argparse.Namespace) -> int:
    from avatar_studio.avatar.export import export_posed
    from avatar_studio.avatar.morph import MorphEvaluator

    if args.output.suffix.lower() not in EXPORT_SUFFIXES:
        raise CliError(f"{args.output}: the output must end in {', '.join(EXPORT_SUFFIXES)}")
    avatar = _load(args.file)
    weights: dict[str, float] = {}
    if args.visemes or args.mapping:
        table = _table(args.mapping)
        try:
            from_visemes = table.blendshapes(dict(args.visemes))
        except KeyError as exc:
            raise CliError(str(exc.args[0]) if exc.args else str(exc)) from None
        missing = sorted(name for name, w in from_visemes.items() if w and name not in avatar.morph_names)
        if missing:
            print(f"avatar-studio: note: this avatar lacks {', '.join(missing)}; those parts of the visemes are "
                  "left out", file=sys.stderr)
        weights.update({n: w for n, w in from_visemes.items() if n in avatar.morph_names})
    evaluator = MorphEvaluator(avatar)
    for name, weight in args.sets:
        try:
            avatar.morph_index(name)
        except KeyError:
            known = ", ".join(avatar.morph_names) or "none"
            raise CliError(f"{args.file}: no morph target named {name!r} (this avatar has: {known})") from None
        weights[name] = weight
    try:
        export_posed(avatar, evaluator.apply(weights), args.output)
    except OSError as exc:
        raise CliError(f"{args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output}")
    return 0


def _no_display() -> bool:
    """Qt aborts the whole process without a display; say so in one line instead (Linux/BSD only)."""
    if not sys.platform.startswith(("linux", "freebsd")) or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _generate(args: argparse.Namespace) -> int:
    from avatar_studio.providers.base import ProviderError
    from avatar_studio.providers.local import generate_to_file

    if args.output.suffix.lower() != ".glb":
        raise CliError(f"{args.output}: the output must end in .glb")
    if not args.selfie.is_file():
        raise CliError(f"{args.selfie}: no such file")
    try:
        size = generate_to_file(args.selfie, args.output, blendshapes=args.blendshapes, subdivisions=args.subdivisions)
    except ProviderError as exc:
        raise CliError(f"{args.selfie}: {exc}") from None
    except OSError as exc:
        raise CliError(f"{exc.filename or args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output} ({size:,} bytes)")
    return 0


def _service_settings() -> Settings:
    from avatar_studio.config import Settings

    try:
        return Settings.from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _serve(args: argparse.Namespace) -> int:
    from avatar_studio.service.runner import serve

    if args.workers < 0 or not 0 <= args.port <= 65535:
        raise CliError("--workers must be ≥ 0 and --port between 0 and 65535")
    _logging()
    try:
        serve(_service_settings(), args.host, args.port, args.workers)
    except OSError as exc:
        raise CliError(str(exc)) from None
    return 0


def _worker(args: argparse.Namespace) -> int:
    from avatar_studio.service.runner import run_workers

    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    _logging()
    run_workers(_service_settings(), args.concurrency)
    return 0


def _lipsync(args: argparse.Namespace) -> int:
    from avatar_studio.lipsync.alignment import AlignmentError, read_alignment
    from avatar_studio.lipsync.audio_files import AudioFileError
    from avatar_studio.lipsync.classifier import ProfileError, VisemeModel
    from avatar_studio.lipsync.engine import LipSyncEngine
    from avatar_studio.lipsync.offline import OfflineUnavailable

    table = _table(getattr(args, "mapping", None))
    try:
        profile = VisemeModel.load_npz(args.profile) if args.profile else None
        reference = read_alignment(args.reference) if args.lipsync_command == "score" else None
        engine = LipSyncEngine(table, mode=args.mode, profile=profile)
        frames = engine.analyze_file(args.audio)
    except (AudioFileError, AlignmentError, ProfileError, OfflineUnavailable) as exc:
        raise CliError(str(exc)) from None
    if reference is not None:
        from avatar_studio.lipsync.scoring import score_frames

        score = score_frames(frames, reference, args.phoneset)
        print(json.dumps(score.to_json(), indent=2) if args.json else score.render())
        return 0
    from avatar_studio.lipsync.output import dumps_json, frames_to_csv, frames_to_json

    fmt = args.format or ("csv" if args.output is not None and args.output.suffix.lower() == ".csv" else "json")
    names = table.blendshape_names
    text = frames_to_csv(frames, names) if fmt == "csv" else dumps_json(frames_to_json(frames, args.mode, names))
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output} ({len(frames)} frames)")
    return 0


def _logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _screenshot_args(args_list: list[str]) -> tuple[Path, list[str]]:
    """``--screenshot PNG [FILE]``: parsed apart because the main parser reads a positional as a subcommand."""
    parser = argparse.ArgumentParser(prog="avatar-studio --screenshot")
    parser.add_argument("--screenshot", metavar="PNG", type=Path, required=True)
    parser.add_argument("files", nargs="*", metavar="FILE.glb")
    args = parser.parse_args(args_list)
    return args.screenshot, args.files


def _quiet_qt_probes() -> None:
    """Silence Qt's multimedia probe for PipeWire before Qt loads.

    Why: on a system without PipeWire (most servers, Debian without a desktop) Qt logs two "Couldn't
    load pipewire-0.3" lines on every start; users read them as errors, though the camera dialog works
    through the other back-ends. A QT_LOGGING_RULES the user sets still wins.
    """
    os.environ.setdefault("QT_LOGGING_RULES", "qt.multimedia.symbolsresolver=false")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``avatar-studio`` and ``python -m avatar_studio``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    _quiet_qt_probes()
    screenshot: Path | None = None
    if args_list and args_list[0].split("=", 1)[0] == "--screenshot":
        screenshot, args_list = _screenshot_args(args_list)
    if screenshot is not None or not args_list or (
        args_list[0] not in SUBCOMMANDS and not args_list[0].startswith("-")
    ):
        if _no_display():
            print("avatar-studio: error: the desktop app needs a display (DISPLAY and WAYLAND_DISPLAY are unset); "
                  "start it from a desktop session, or use a subcommand (see --help)", file=sys.stderr)
            return 2
        from avatar_studio.gui.app import run_app

        return run_app(args_list) if screenshot is None else run_app(args_list, screenshot=screenshot)
    args = _parser().parse_args(args_list)
    if args.self_test:
        from avatar_studio.selftest import run_self_test

        return run_self_test()
    commands = {"inspect": _inspect, "pose": _pose, "generate": _generate, "serve": _serve, "worker": _worker,
                "lipsync": _lipsync}
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        return commands[args.command](args)
    except CliError as exc:
        print(f"avatar-studio: error: {exc}", file=sys.stderr)
        return 1
