"""The live/offline lip-sync engine: features, resampling, smoothing, streaming, classification.

Why these checks: a microphone delivers arbitrary chunk sizes at 44.1/48 kHz, so frames must not
depend on either; silence must leave the mouth shut; and the classifier must at least separate the
two most different sound families (a vowel and a hiss) with the shipped default model.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from lipsync_signals import hiss, vowel
from scipy.signal import resample_poly

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.lipsync.engine import LIVE_LOOKAHEAD_S, LipSyncEngine
from avatar_studio.lipsync.features import HOP, N_MFCC, FeatureExtractor, Resampler, extract_all, resample
from avatar_studio.lipsync.smoothing import Smoother, SmoothingSettings
from avatar_studio.lipsync.viseme_table import VisemeTable


@pytest.fixture(scope="module")
def table() -> VisemeTable:
    return VisemeTable.default()


def _dominant(frames: list, skip: int = 20) -> str:
    return Counter(max(f.visemes, key=f.visemes.get) for f in frames[skip:]).most_common(1)[0][0]


# -- features -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [44_100, 48_000, 22_050, 8_000])
def test_resampler_matches_resample_poly_and_is_chunk_independent(rate: int) -> None:
    x = vowel(0.5, rate) + 0.01 * np.random.default_rng(1).standard_normal(rate // 2)
    whole = resample(x, rate)
    assert len(whole) == 8000
    np.testing.assert_allclose(whole, resample_poly(x, 16_000, rate), atol=1e-9)
    r = Resampler(rate)
    rng = np.random.default_rng(2)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 900))
        parts.append(r.process(x[i : i + n]))
        i += n
    streamed = np.concatenate([*parts, r.flush()])[: len(whole)]
    np.testing.assert_array_equal(streamed, whole)


def test_feature_shapes_and_frame_count() -> None:
    frames = extract_all(np.zeros(48_000 + 100), 48_000)  # 1 s + a partial hop
    assert len(frames) == 101
    assert frames[0].mfcc.shape == (N_MFCC,)
    assert all(f.level_db < -100 for f in frames)
    loud = extract_all(vowel(0.2, 16_000), 16_000)
    assert len(loud) == 20 and -40 < loud[10].level_db < 0


def test_feature_extractor_streams_one_frame_per_hop() -> None:
    fx = FeatureExtractor()
    x = vowel(0.3, 16_000)
    assert fx.push(x[:279]) == []  # frame 0 needs 17.5 ms of audio
    assert len(fx.push(x[279:280])) == 1
    assert len(fx.push(x[280 : 280 + 5 * HOP])) == 5


def test_fricative_has_high_band_energy_vowel_does_not() -> None:
    v = extract_all(vowel(0.3, 16_000), 16_000)[5:-5]
    s = extract_all(hiss(0.3, 16_000), 16_000)[5:-5]
    assert max(f.high_ratio for f in v) < 0.2 < min(f.high_ratio for f in s)


# -- smoothing --------------------------------------------------------------------------------------------


def _onehot(viseme: str, strength: float = 0.9) -> np.ndarray:
    p = np.full(len(OVR_VISEMES), (1 - strength) / (len(OVR_VISEMES) - 1))
    p[OVR_VISEMES.index(viseme)] = strength
    return p


def test_min_hold_delays_a_switch_until_the_hold_has_passed() -> None:
    sm = Smoother(SmoothingSettings(min_hold_ms=120))
    held = []
    for k in range(40):
        post = _onehot("aa") if k < 5 else _onehot("ou")  # "aa" for 50 ms, then "ou"
        sm.step(post, -20.0)
        held.append(sm.current)
    assert held[:12] == ["aa"] * 12  # held for 120 ms although "ou" won from frame 5
    assert held[12] == "ou" and held[-1] == "ou"


def test_attack_is_faster_than_release_on_a_loudness_step() -> None:
    s = SmoothingSettings(attack_ms=20, release_ms=80)
    sm = Smoother(s)
    post = _onehot("aa")
    rise = [1 - sm.step(post, -15.0)[0] for _ in range(30)]
    fall = [1 - sm.step(post, -120.0)[0] for _ in range(30)]
    assert rise[1] >= 1 - np.exp(-20 / 20) - 0.05  # ≈63 % open after one time constant (2 hops)
    assert rise[-1] > 0.99
    assert fall[7] > 0.3  # 80 ms release: still ≈37 % open after 80 ms
    assert fall[-1] < 0.05
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(fall))


def test_smoothing_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="gate_full_db"):
        SmoothingSettings(gate_open_db=-20, gate_full_db=-30)
    with pytest.raises(ValueError, match="unknown smoothing setting"):
        SmoothingSettings.from_json({"min_hold": 100})
    assert SmoothingSettings.from_json(SmoothingSettings().to_json()) == SmoothingSettings()


# -- engine ------------------------------------------------------------------------------------------------


def test_live_lookahead_is_within_budget() -> None:
    assert LIVE_LOOKAHEAD_S <= 0.060
    assert LIVE_LOOKAHEAD_S + 0.010 <= 0.050  # plus one 10 ms hop of buffering, with room for processing


def test_streaming_classifier_equals_the_training_windows() -> None:
    """The network sees at run time exactly the frame windows ``train_defaults`` trains it on."""
    from avatar_studio.lipsync.classifier import LiveClassifier, VisemeModel
    from avatar_studio.lipsync.train_defaults import utterance_features, windows

    model = replace(VisemeModel.default(), stay=0.0)
    rate = 16_000
    x = np.concatenate([np.zeros(1600), vowel(0.3, rate), hiss(0.2, rate), vowel(0.2, rate), np.zeros(800)])
    frames = extract_all(x, rate)
    clf = LiveClassifier(model)
    streamed = np.array([clf.step(f) for f in frames][clf.delay :] + clf.flush())
    assert streamed.shape == (len(frames), len(OVR_VISEMES))
    _, v = utterance_features(model, frames)
    batch = np.exp(np.array([LiveClassifier(model).network_log_posterior(w) for w in windows(v)]))
    np.testing.assert_allclose(streamed, batch, atol=1e-9)


def test_offline_weights_keep_the_spoken_phone_on_top_and_on_time() -> None:
    from avatar_studio.lipsync.offline import segment_weights

    segments = [("SIL", 0.0, 0.1), ("AA", 0.1, 0.2), ("M", 0.2, 0.23), ("IY", 0.23, 0.4), ("SIL", 0.4, 0.5)]
    w = segment_weights(segments, 50)
    top = [OVR_VISEMES[i] for i in w.argmax(axis=1)]
    assert top == ["sil"] * 10 + ["aa"] * 10 + ["PP"] * 3 + ["ih"] * 17 + ["sil"] * 10
    assert w[18, OVR_VISEMES.index("PP")] > 0.05  # the lips start to close before the M (anticipation)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_silence_gives_sil_and_a_closed_mouth(table: VisemeTable) -> None:
    frames = LipSyncEngine(table).analyze(np.zeros(48_000, dtype=np.int16), 48_000)
    assert len(frames) == 100
    assert [f.t for f in frames[:3]] == [0.0, 0.01, 0.02]
    for f in frames:
        assert f.visemes["sil"] == pytest.approx(1.0)
        assert max(f.blendshapes.values()) == 0.0
        assert set(f.visemes) == set(OVR_VISEMES)


def test_vowel_and_hiss_give_different_dominant_visemes(table: VisemeTable) -> None:
    engine = LipSyncEngine(table)
    v = engine.analyze(vowel(1.0, 44_100), 44_100)
    s = engine.analyze(hiss(1.0, 44_100), 44_100)
    assert _dominant(v) in ("aa", "E", "oh")
    assert _dominant(s) in ("SS", "CH", "FF", "TH")
    assert v[50].blendshapes["jawOpen"] > s[50].blendshapes["jawOpen"]
    assert sum(v[50].visemes.values()) == pytest.approx(1.0)


def test_streaming_equals_whole_file_whatever_the_chunk_size(table: VisemeTable) -> None:
    rate = 48_000
    x = np.concatenate([np.zeros(4800), vowel(0.4, rate), hiss(0.3, rate), np.zeros(2400)])
    engine = LipSyncEngine(table)
    whole = engine.analyze(x, rate)
    for chunk in (1, 441, 480, 4096):
        engine.reset()
        got = []
        for i in range(0, len(x), chunk):
            got += engine.feed(x[i : i + chunk], rate)
        got = (got + engine.finish())[: len(whole)]
        assert [f.t for f in got] == [f.t for f in whole]
        for a, b in zip(got, whole, strict=True):
            assert a.visemes == pytest.approx(b.visemes, abs=1e-9)
            assert a.blendshapes == pytest.approx(b.blendshapes, abs=1e-9)


def test_stereo_and_int16_input_are_accepted(table: VisemeTable) -> None:
    mono = (vowel(0.3, 16_000) * 32767).astype(np.int16)
    stereo = np.stack([mono, mono], axis=1)
    a = LipSyncEngine(table).analyze(mono, 16_000)
    b = LipSyncEngine(table).analyze(stereo, 16_000)
    assert [f.visemes for f in a] == [f.visemes for f in b]
    with pytest.raises(ValueError, match="int16"):
        LipSyncEngine(table).feed(np.zeros(10, dtype=np.int32), 16_000)
    with pytest.raises(ValueError, match="mode"):
        LipSyncEngine(table, mode="fast")  # type: ignore[arg-type]


def test_blendshapes_match_the_table(table: VisemeTable) -> None:
    frames = LipSyncEngine(table).analyze(vowel(0.5, 16_000), 16_000)
    f = frames[30]
    assert f.blendshapes == pytest.approx(table.blendshapes(f.visemes), abs=1e-9)


def test_offline_mode_silence_and_speech(table: VisemeTable) -> None:
    pytest.importorskip("pocketsphinx")
    engine = LipSyncEngine(table, mode="offline")
    x = np.concatenate([np.zeros(8000), vowel(0.6, 16_000), np.zeros(8000)])
    frames = engine.analyze(x, 16_000)
    assert len(frames) == 160
    assert frames[5].visemes["sil"] == pytest.approx(1.0)
    assert max(frames[5].blendshapes.values()) == 0.0
    assert engine.feed(x, 16_000) == []  # offline: buffered until finish
    assert len(engine.finish()) == 160
