"""Calibration and profiles, WAV reading, reference alignments, scoring and the ``lipsync`` CLI.

Why: these are the user-facing edges — a profile must survive a restart, a broken WAV or alignment
must be one readable line with a non-zero exit code, and the analyze output format is a contract
with game-engine importers (100 frames per second, 15 visemes, same columns in JSON and CSV).
"""

from __future__ import annotations

import csv
import io
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from lipsync_signals import hiss, vowel

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.cli import main
from avatar_studio.lipsync.alignment import AlignmentError, parse_table, parse_textgrid, read_alignment
from avatar_studio.lipsync.audio_files import AudioFileError, read_audio, read_wav, write_wav
from avatar_studio.lipsync.classifier import (
    CALIBRATION_PROMPTS,
    LiveClassifier,
    ProfileError,
    VisemeModel,
    calibrate,
    list_profiles,
    load_profile,
    save_profile,
)
from avatar_studio.lipsync.features import extract_all
from avatar_studio.lipsync.phonemes import detect_phoneset, phone_class, phone_viseme
from avatar_studio.lipsync.scoring import score_classes

# -- classifier, calibration, profiles ----------------------------------------------------------------------


def _takes(rate: int) -> dict[str, np.ndarray]:
    return {
        "sil": np.zeros(rate),
        "ou": vowel(1.0, rate, formants=(300.0, 800.0, 2300.0)),
        "ih": vowel(1.0, rate, formants=(280.0, 2250.0, 2900.0)),
        "SS": hiss(1.0, rate),
    }


def test_calibration_moves_the_classifier_towards_the_users_sounds() -> None:
    default = VisemeModel.default()
    calibrated = calibrate(default, _takes(16_000), 16_000, name="test")
    assert calibrated.calibrated == ("sil", "SS", "ih", "ou")
    assert not calibrated.adapt_cmn
    assert not np.allclose(calibrated.means, default.means)
    frames = extract_all(vowel(1.0, 16_000, formants=(300.0, 800.0, 2300.0)), 16_000)[20:80]
    clf = LiveClassifier(calibrated)
    votes = [OVR_VISEMES[int(np.argmax(clf.step(f)))] for f in frames]
    assert votes.count("ou") > 0.8 * len(votes)


def test_calibration_without_usable_audio_is_an_error() -> None:
    with pytest.raises(ValueError, match="no usable calibration audio"):
        calibrate(VisemeModel.default(), {"aa": np.zeros(800)}, 16_000)
    with pytest.raises(ValueError, match="unknown viseme"):
        calibrate(VisemeModel.default(), {"XX": np.zeros(8000)}, 16_000)


def test_prompts_cover_vowels_and_closures() -> None:
    covered = {p.viseme for p in CALIBRATION_PROMPTS}
    assert {"sil", "aa", "ih", "ou", "PP", "FF"} <= covered <= set(OVR_VISEMES)
    assert sum(p.seconds for p in CALIBRATION_PROMPTS) < 20


def test_profiles_round_trip(tmp_path: Path) -> None:
    model = calibrate(VisemeModel.default(), _takes(16_000), 16_000, name="alice")
    path = save_profile(model, tmp_path / "profiles")
    assert path.name == "alice.npz"
    loaded = load_profile(tmp_path / "profiles", "alice")
    assert loaded == model
    np.testing.assert_array_equal(loaded.means, model.means)
    listed = list_profiles(tmp_path / "profiles")
    assert [p["name"] for p in listed] == ["alice"] and listed[0]["calibrated"] == list(model.calibrated)
    with pytest.raises(ProfileError, match="no lip-sync profile"):
        load_profile(tmp_path / "profiles", "bob")
    with pytest.raises(ProfileError, match="invalid profile name"):
        save_profile(model, tmp_path, "../evil")
    (tmp_path / "profiles" / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ProfileError, match="not a usable"):
        load_profile(tmp_path / "profiles", "broken")


def test_profiles_from_before_the_network_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    model = VisemeModel.default()
    meta = {"format": 1, "name": "old", "calibrated": ["aa"]}
    np.savez(
        tmp_path / "old.npz",
        means=model.means,
        variances=model.variances,
        log_prior=model.log_prior,
        cmn_init=model.cmn_init,
        level_init=np.float64(model.level_init),
        meta=np.array(json.dumps(meta)),
    )
    with pytest.raises(ProfileError, match=r"older version.*recalibrate"):
        load_profile(tmp_path, "old")


def test_calibrated_profile_keeps_the_network_and_its_starting_point(tmp_path: Path) -> None:
    default = VisemeModel.default()
    calibrated = calibrate(default, _takes(16_000), 16_000, name="carol")
    assert calibrated.net and all(a is b for a, b in zip(calibrated.net, default.net, strict=True))
    np.testing.assert_array_equal(calibrated.base_means, default.means)
    loaded = load_profile(tmp_path, save_profile(calibrated, tmp_path).stem)
    assert loaded == calibrated  # the float32-stored network round-trips exactly
    assert calibrated.trust is not None and calibrated.trust.shape == (len(OVR_VISEMES),)
    # uncalibrated, the likelihood-ratio term is absent: the network alone decides
    frames = extract_all(vowel(0.5, 16_000), 16_000)
    a, b = LiveClassifier(default), LiveClassifier(replace(default, temperature=0.5))
    for f in frames:
        np.testing.assert_allclose(a.step(f), b.step(f))


# -- WAV files -----------------------------------------------------------------------------------------------


def _wav(fmt_code: int, bits: int, channels: int, rate: int, payload: bytes) -> bytes:
    fmt = struct.pack("<HHIIHH", fmt_code, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return b"RIFF" + struct.pack("<I", 36 + len(payload)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + \
        b"data" + struct.pack("<I", len(payload)) + payload


@pytest.mark.parametrize(
    ("code", "bits", "payload", "expected"),
    [
        (1, 8, bytes([128, 255, 0]), [0.0, 127 / 128, -1.0]),
        (1, 16, struct.pack("<3h", 0, 16384, -32768), [0.0, 0.5, -1.0]),
        (1, 24, b"\x00\x00\x00" + b"\x00\x00\x40" + b"\x00\x00\x80", [0.0, 0.5, -1.0]),
        (1, 32, struct.pack("<3i", 0, 1 << 30, -(1 << 31)), [0.0, 0.5, -1.0]),
        (3, 32, struct.pack("<3f", 0.0, 0.5, -1.0), [0.0, 0.5, -1.0]),
    ],
)
def test_read_wav_formats(tmp_path: Path, code: int, bits: int, payload: bytes, expected: list[float]) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(_wav(code, bits, 1, 8000, payload))
    samples, rate = read_wav(path)
    assert rate == 8000
    np.testing.assert_allclose(samples, expected, atol=1e-6)


def test_read_wav_stereo_truncated_and_broken(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    path.write_bytes(_wav(1, 16, 2, 16000, struct.pack("<4h", 16384, 0, 16384, 16384))[:-2])  # cut mid-frame
    samples, _ = read_wav(path)
    np.testing.assert_allclose(samples, [0.25])
    for data, message in [
        (b"hello", "not a WAV"),
        (b"fLaC" + bytes(40), "FLAC is not supported"),
        (_wav(2, 4, 1, 8000, b"\0\0"), "compressed WAV"),
        (b"RIFF\x04\0\0\0WAVE", "no 'fmt '"),
    ]:
        path.write_bytes(data)
        with pytest.raises(AudioFileError, match=message):
            read_wav(path)
    with pytest.raises(AudioFileError, match=r"s\.wav"):
        read_wav(path)


def test_write_wav_round_trip(tmp_path: Path) -> None:
    x = vowel(0.1, 22_050)
    write_wav(tmp_path / "v.wav", x, 22_050)
    y, rate = read_wav(tmp_path / "v.wav")
    assert rate == 22_050 and np.max(np.abs(y - x)) < 1e-4


def test_flac_reads_like_the_same_wav(tmp_path: Path) -> None:
    """FLAC is lossless: a 16-bit FLAC and the 16-bit WAV of the same samples give the same audio."""
    import soundfile

    x = np.concatenate([vowel(0.2, 22_050), hiss(0.1, 22_050)]).astype(np.float32)
    stereo = np.stack([x, 0.5 * x], axis=1)
    soundfile.write(tmp_path / "v.flac", stereo, 22_050, subtype="PCM_16")
    soundfile.write(tmp_path / "v.wav", stereo, 22_050, subtype="PCM_16")
    flac, flac_rate = read_audio(tmp_path / "v.flac")
    wav, wav_rate = read_audio(tmp_path / "v.wav")
    assert flac_rate == wav_rate == 22_050
    np.testing.assert_allclose(flac, wav, atol=2 / 32768)  # the same 16-bit samples, within one step
    np.testing.assert_allclose(flac, 0.75 * x, atol=1e-3)  # channels averaged
    renamed = tmp_path / "no-suffix"
    renamed.write_bytes((tmp_path / "v.flac").read_bytes())
    np.testing.assert_array_equal(read_audio(renamed)[0], flac)  # told apart by content


def test_broken_flac_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    path.write_bytes(b"fLaC\x00\x00\x00\x22" + bytes(40))
    with pytest.raises(AudioFileError, match=r"cut\.flac: not a readable FLAC file"):
        read_audio(path)


# -- phones, alignments, scoring ------------------------------------------------------------------------------


def test_phone_maps() -> None:
    assert phone_viseme("AH0") == "aa" and phone_class("B") == "MBP" and phone_class("ER1") == "E"
    assert phone_viseme("+NSN+") == "sil" and phone_class("w") == "U" and phone_class("Y") == "I"
    assert phone_viseme("T", "espeak") == "TH" and phone_viseme("'oU", "espeak") == "oh"
    assert phone_viseme("ʃ", "ipa") == "CH" and phone_viseme("iː", "ipa") == "ih"
    assert detect_phoneset(["HH", "AH0", "L", "OW1"]) == "arpabet"
    assert detect_phoneset(["h", "@", "l", "oU", "_:"]) == "espeak"
    assert detect_phoneset(["h", "ə", "l", "oʊ"]) == "ipa"


def test_table_alignment_units_and_errors() -> None:
    assert parse_table("phone start end\nsil 0 0.1\nAA 0.1 0.25  # comment\n") == [
        ("sil", 0.0, 0.1), ("AA", 0.1, 0.25)]
    assert parse_table("t#\t100\t150\n0\t150\t300\n") == [("t#", 0.1, 0.15), ("0", 0.15, 0.3)]  # ms, espeak names
    assert parse_table("0.0 0.2 P\n") == [("P", 0.0, 0.2)]
    with pytest.raises(AlignmentError, match="line 2"):
        parse_table("a 0 1\nb x y\n")
    with pytest.raises(AlignmentError, match="before start"):
        parse_table("a 1 0.5\n")


TEXTGRID_LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 0.3
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 0.3
        intervals: size = 1
        intervals [1]:
            xmin = 0
            xmax = 0.3
            text = "ma"
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 0.3
        intervals: size = 3
        intervals [1]:
            xmin = 0
            xmax = 0.1
            text = ""
        intervals [2]:
            xmin = 0.1
            xmax = 0.2
            text = "M"
        intervals [3]:
            xmin = 0.2
            xmax = 0.3
            text = "AA1"
'''

TEXTGRID_SHORT = (
    '"ooTextFile"\n"TextGrid"\n0\n0.3\n<exists>\n1\n"IntervalTier"\n"x"\n0\n0.3\n2\n'
    '0\n0.1\n"M"\n0.1\n0.3\n"AA1"\n'
)


def test_textgrids_long_and_short() -> None:
    assert parse_textgrid(TEXTGRID_LONG) == [("", 0.0, 0.1), ("M", 0.1, 0.2), ("AA1", 0.2, 0.3)]
    assert parse_textgrid(TEXTGRID_SHORT) == [("M", 0.0, 0.1), ("AA1", 0.1, 0.3)]
    assert parse_textgrid(TEXTGRID_LONG, tier="words") == [("ma", 0.0, 0.3)]
    with pytest.raises(AlignmentError, match="no tier named"):
        parse_textgrid(TEXTGRID_LONG, tier="nope")


def test_read_alignment_utf16_textgrid_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.TextGrid"
    path.write_bytes(TEXTGRID_LONG.encode("utf-16"))
    assert read_alignment(path)[1] == ("M", 0.1, 0.2)
    path.write_text("")
    with pytest.raises(AlignmentError, match="no phone segments"):
        read_alignment(path)


def test_score_classes_confusion() -> None:
    s = score_classes(["sil", "A", "A", "MBP"], ["sil", "A", "E", "MBP"])
    assert s.accuracy == 0.75 and s.coarse_accuracy == 1.0
    assert s.confusion.sum() == 4 and s.recall["A"] == 0.5


# -- CLI --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.2 s silence, 0.3 s "ah", 0.2 s hiss, 0.1 s silence at 44.1 kHz."""
    rate = 44_100
    x = np.concatenate([np.zeros(8820), vowel(0.3, rate), hiss(0.2, rate), np.zeros(4410)])
    path = tmp_path_factory.mktemp("lipsync") / "speech.wav"
    write_wav(path, x, rate)
    return path


def test_analyze_json(speech_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lipsync", "analyze", str(speech_wav), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["frameRate"] == 100 and doc["mode"] == "live" and doc["visemes"] == list(OVR_VISEMES)
    assert len(doc["frames"]) == 80
    assert [f["t"] for f in doc["frames"][:3]] == [0.0, 0.01, 0.02]
    first = doc["frames"][0]
    assert set(first["visemes"]) == set(OVR_VISEMES) and "jawOpen" in first["blendshapes"]


def test_analyze_csv_to_file(speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "frames.csv"
    assert main(["lipsync", "analyze", str(speech_wav), "-o", str(out)]) == 0
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0][:16] == ["t", *OVR_VISEMES] and "jawOpen" in rows[0]
    assert len(rows) == 81 and rows[2][0] == "0.01"
    assert "wrote" in capsys.readouterr().out


def test_analyze_reads_flac(speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile

    samples, rate = read_wav(speech_wav)
    flac = tmp_path / "speech.flac"
    soundfile.write(flac, samples, rate, subtype="PCM_16")
    assert main(["lipsync", "analyze", str(speech_wav), "--json"]) == 0
    from_wav = json.loads(capsys.readouterr().out)
    assert main(["lipsync", "analyze", str(flac), "--json"]) == 0
    from_flac = json.loads(capsys.readouterr().out)
    assert from_flac == from_wav  # write_wav stores 16-bit: the same samples, so the same frames


def test_analyze_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage")
    assert main(["lipsync", "analyze", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a WAV file" in err
    assert main(["lipsync", "analyze", str(tmp_path / "missing.wav")]) == 1
    assert "missing.wav" in capsys.readouterr().err


def test_score_cli(speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = tmp_path / "ref.txt"
    ref.write_text("phone start end\nSIL 0 0.2\nAA 0.2 0.5\nS 0.5 0.7\nSIL 0.7 0.8\n")
    assert main(["lipsync", "score", str(speech_wav), "--reference", str(ref), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 80 and result["classes"][0] == "sil"
    assert np.array(result["confusion"]).sum() == 80
    assert result["recall"]["sil"] >= 0.8  # the release tail after the hiss is not sil
    assert result["accuracy"] > 0.6
    assert main(["lipsync", "score", str(speech_wav), "--reference", str(ref)]) == 0
    assert "frame accuracy (9 classes)" in capsys.readouterr().out
    ref.write_text("oops\n")
    assert main(["lipsync", "score", str(speech_wav), "--reference", str(ref)]) == 1
    assert "ref.txt" in capsys.readouterr().err
