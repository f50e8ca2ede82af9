"""The ``avatar-studio`` command line, run as users run it (a real subprocess) where exit codes matter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from avatar_studio import __version__
from avatar_studio.avatar.blendshapes import ARKIT_52
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.morph import MorphEvaluator
from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.cli import main
from avatar_studio.lipsync.viseme_table import VisemeTable

CORPUS = Path(__file__).parent / "data" / "gltf"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "avatar_studio", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("head") / "head.glb"
    path.write_bytes(make_arkit_head_glb(30_000, sparse=True))
    return path


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"avatar-studio {__version__}"


def test_inspect_json_reports_counts_and_full_arkit_coverage(head: Path) -> None:
    result = _run("inspect", str(head), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    avatar = load_avatar(head)
    assert report["vertices"] == avatar.vertex_count and 28_000 < report["vertices"] < 32_000
    assert report["arkit"] == {"present": 52, "of": 52, "missing": [], "visemes": [], "unmapped": []}
    assert [t["name"] for t in report["morphTargets"]] == list(ARKIT_52)
    assert report["textures"][0]["mimeType"] == "image/png"


def test_inspect_text_with_mapping_names_unexpressible_visemes(tmp_path: Path) -> None:
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"PP": [["mouthClose", 1.0]], "aa": [["jawOpen", 0.7]]}))
    path = CORPUS / "MorphStressTest/glTF-Binary/MorphStressTest.glb"
    result = _run("inspect", str(path), "--mapping", str(table))
    assert result.returncode == 0, result.stderr
    assert "0/2 visemes expressible" in result.stdout
    assert "PP: lacks mouthClose" in result.stdout and "aa: lacks jawOpen" in result.stdout
    assert "Key 1" in result.stdout and "ARKit       0/52" in result.stdout


def test_inspect_broken_file_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.glb"
    broken.write_bytes((CORPUS / "Box/glTF-Binary/Box.glb").read_bytes()[:700])
    result = _run("inspect", str(broken))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated" in lines[0] and str(broken) in lines[0]


def test_inspect_bad_mapping_table_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"aa": [["jawOpen", 1.7]]}))
    assert main(["inspect", str(CORPUS / "Box/glTF-Binary/Box.glb"), "--mapping", str(table)]) == 1
    err = capsys.readouterr().err
    assert "aa" in err and "1.7" in err


@pytest.mark.parametrize("suffix", [".glb", ".ply", ".obj"])
def test_pose_bakes_weights_in_source_vertex_order(head: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"posed{suffix}"
    assert main(["pose", str(head), "--set", "jawOpen=1", "eyeBlink_L=0.5", "-o", str(out)]) == 0
    avatar = load_avatar(head)
    expected = MorphEvaluator(avatar).apply({"jawOpen": 1.0, "eyeBlinkLeft": 0.5})[0][0]
    loaded = trimesh.load(out, process=False, force="mesh")
    assert np.allclose(np.asarray(loaded.vertices)[: len(expected)], expected, atol=1e-5)
    assert not np.allclose(expected, avatar.primitives[0].positions), "the pose really moved the mesh"


def test_pose_glb_round_trips_through_inspect(head: Path, tmp_path: Path) -> None:
    out = tmp_path / "posed.glb"
    assert main(["pose", str(head), "--set", "jawOpen=1", "-o", str(out)]) == 0
    report = json.loads(_run("inspect", str(out), "--json").stdout)
    assert report["vertices"] == load_avatar(head).vertex_count
    posed = load_avatar(out).primitives[0].positions
    assert np.allclose(posed, MorphEvaluator(load_avatar(head)).apply({"jawOpen": 1.0})[0][0], atol=1e-5)


def test_pose_with_visemes_uses_the_table(head: Path, tmp_path: Path) -> None:
    out = tmp_path / "aa.glb"
    assert main(["pose", str(head), "--viseme", "aa=1", "-o", str(out)]) == 0
    weights = VisemeTable.default().blendshapes({"aa": 1.0})
    expected = MorphEvaluator(load_avatar(head)).apply({k: v for k, v in weights.items() if v})[0][0]
    assert np.allclose(load_avatar(out).primitives[0].positions, expected, atol=1e-5)


def test_pose_rejects_unknown_target_and_bad_suffix(head: Path, tmp_path: Path) -> None:
    result = _run("pose", str(head), "--set", "notAShape=1", "-o", str(tmp_path / "x.glb"))
    assert result.returncode == 1 and "no morph target named 'notAShape'" in result.stderr
    assert not (tmp_path / "x.glb").exists()
    result = _run("pose", str(head), "--set", "jawOpen=1", "-o", str(tmp_path / "x.stl"))
    assert result.returncode == 1 and ".glb, .ply, .obj" in result.stderr
    result = _run("pose", str(head), "--set", "jawOpen=2", "-o", str(tmp_path / "x.glb"))
    assert result.returncode == 2 and "between 0 and 1" in result.stderr


def test_app_without_a_display_says_so_instead_of_aborting() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "avatar_studio"], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 2
    assert "needs a display" in result.stderr


def test_generate_makes_an_avatar_offline_and_refuses_non_faces(tmp_path: Path) -> None:
    import skimage.data
    from PIL import Image

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    out = tmp_path / "avatar.glb"
    result = _run("generate", str(photo), "-o", str(out))
    assert result.returncode == 0, result.stderr
    avatar = load_avatar(out)
    assert set(ARKIT_52) <= set(avatar.morph_names) and avatar.primitives[0].texture is not None
    coffee = tmp_path / "coffee.jpg"
    Image.fromarray(skimage.data.coffee()).save(coffee)
    result = _run("generate", str(coffee), "-o", str(tmp_path / "none.glb"))
    assert result.returncode == 1 and "no face was found" in result.stderr
    assert not (tmp_path / "none.glb").exists()
