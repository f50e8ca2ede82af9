"""The lip-sync evaluation set: espeak-ng speech with exact phoneme times, degraded like a real room.

Why espeak-ng: it is the only offline source of speech whose phoneme boundaries are known exactly (the
C API reports each phoneme's start; ``avatar_studio.lipsync.espeak``), so every 10 ms frame gets a
ground-truth class without a human labeller. Why noise and reverberation: clean synthetic speech
flatters any front end; a microphone in a room adds both, and the live mode's gate and classifier
must cope.

Why a split by *voice and sentence*: tuning on some voices and sentences and reporting on others
measures generalisation, which is what matters for a user nobody trained on. ``tune`` items use
``TUNE_VOICES`` × the first ``N_TUNE_SENTENCES`` sentences; ``heldout`` items use ``HELDOUT_VOICES``
× the remaining sentences — no voice or sentence is shared.

The set is deterministic (fixed seeds) and cached under ``~/.cache/avatar_studio/lipsync_eval``
(``AVATAR_STUDIO_EVAL_CACHE`` overrides); the cache key covers every parameter below, so editing a
sentence or a condition rebuilds it. Building the full set takes a few seconds (espeak-ng's RTF is ≈0.002).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar_studio.lipsync.espeak import Synthesis, synthesize
from avatar_studio.lipsync.phonemes import SCORING_CLASSES, VISEME_CLASS, espeak_viseme

SAMPLE_RATE = 16000
FRAME_S = 0.01
CACHE_VERSION = 3
LEAD_S = 0.3
TRAIL_S = 0.4

# Written for this benchmark: every class in several contexts (bilabials, labiodentals, all vowel
# shapes, clusters, questions, numbers, pauses from punctuation).
SENTENCES: tuple[str, ...] = (
    "Bob bought a big blue balloon at the market.",
    "Five vivid violets grew beside the fence.",
    "Please pass me the paper plates, Mom.",
    "The cat sat on a flat mat in the sun.",
    "We need three cheap seats near the screen.",
    "Who took my boots and the blue spoon?",
    "Oh no, the old boat floated over the cold coast.",
    "Fresh fish for five friends on Friday.",
    "My brother plays the violin every evening.",
    "Can you call Paul before half past four?",
    "A quick brown fox jumps over the lazy dog.",
    "She sells seashells by the seashore.",
    "Maybe the baby will sleep by midnight.",
    "The weather was warm and wet all week.",
    "Judge the cheese by its rich yellow color.",
    "Leave the heavy valves in the van.",
    "Tom thought that the thin thread would break.",
    "Could you move the food to the cool room?",
    "Hot coffee in a tall mug, please.",
    "Eight gray whales swam past the bay.",
    "Patience is a virtue, but time is money.",
    "Open the window when the room gets warm.",
    "Nine men ran ten miles in the rain.",
    "Put the book on the wooden shelf.",
    "Why are you whispering in the hallway?",
    "Many people prefer apples to pears.",
    "Grab the map and meet me by the pump.",
    "Few vines survive a fierce winter.",
    "The music faded as the audience stood up.",
    "Is it true that June is usually humid?",
    "All of our autumn photos are on the phone.",
    "Pick up six bricks and a bucket of sand.",
    "The shiny ship sailed smoothly to shore.",
    "Every morning I boil an egg for breakfast.",
    "Mary bakes bread and buns on Mondays.",
    "Fifty five fluffy feathers fell from the roof.",
    "Luke drew a huge blue moon on the wall.",
    "Go slowly over the stony road home.",
    "I like to ride my bike at night.",
    "Sheep eat green leaves in the field.",
    "Bring a warm coat, it might snow tonight.",
    "Peter picked a peck of pickled peppers.",
    "The phone rang five times before anyone answered.",
    "Our neighbour owns a noisy brown cow.",
    "Which way is the museum from here?",
    "Ben broke the beam with a heavy hammer.",
    "Very few view the valley from above.",
    "The bathroom mirror was covered in steam.",
    "Ruth knew the truth about the blue shoe.",
    "Throw the ball over the fence, Joe.",
    "Please keep the keys in the small box.",
    "Papa made a maple pie for the party.",
    "Half of the staff left after lunch.",
    "Would you like some more soup?",
    "The judge gave a fair and brief verdict.",
    "Mice hide in the hay behind the barn.",
    "We will visit the zoo in the summer.",
    "Amy and Sam talked about the play all evening.",
    "Turn off the oven at four o'clock.",
    "The lamp above the bed was bright and warm.",
)
N_TUNE_SENTENCES = 40

TUNE_VOICES: tuple[str, ...] = ("en-us", "en-gb", "en-us+m3", "en-gb-x-rp+f2")
HELDOUT_VOICES: tuple[str, ...] = ("en-gb-scotland+f4", "en-us+m7", "en-029+f3")
RATES_WPM: tuple[int, ...] = (140, 175, 210)
PITCHES: tuple[int, ...] = (35, 50, 70)


@dataclass(frozen=True)
class Condition:
    """A recording condition: reverberation time (0 = none) and noise SNR (None = only a −65 dBFS floor)."""

    name: str
    rt60_s: float
    snr_db: float | None


CONDITIONS: tuple[Condition, ...] = (
    Condition("clean", 0.0, None),
    Condition("snr20", 0.0, 20.0),
    Condition("snr10", 0.0, 10.0),
    Condition("reverb0.4+snr20", 0.4, 20.0),
)
QUICK_CONDITIONS = ("clean", "snr10")


@dataclass(frozen=True)
class Item:
    """One utterance of the set; ``labels[k]`` is the class index (``SCORING_CLASSES``) at time ``k·10 ms``."""

    split: str
    sentence_index: int
    voice: str
    rate_wpm: int
    pitch: int
    condition: str
    audio: np.ndarray  # float32, SAMPLE_RATE, mono
    labels: np.ndarray  # int8

    @property
    def text(self) -> str:
        return SENTENCES[self.sentence_index]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


UNMAPPED_PHONEMES: set[str] = set()
"""espeak phonemes ``phonemes.espeak_viseme`` does not know, labelled by their base form (reported by the benchmark)."""


def _espeak_viseme(name: str) -> str | None:
    """``phonemes.espeak_viseme``, falling back to the base phoneme for numbered variants (``aI2`` → ``aI``)."""
    viseme = espeak_viseme(name)
    if viseme is None:
        for base in (name.rstrip("0123456789#"), name[:-1], name[:1]):
            viseme = espeak_viseme(base) if base else None
            if viseme is not None:
                UNMAPPED_PHONEMES.add(name)
                break
    return viseme


def frame_visemes(synthesis: Synthesis, n_frames: int) -> list[str]:
    """OVR viseme of the espeak phoneme under each frame time ``k·10 ms`` (the engine's ``Frame.t``)."""
    starts = np.array([p.start_s for p in synthesis.phonemes])
    visemes: list[str] = []
    for p in synthesis.phonemes:
        viseme = "sil" if p.is_pause else _espeak_viseme(p.name)
        if viseme is None and visemes and not any(ch.isalnum() for ch in p.name):
            UNMAPPED_PHONEMES.add(p.name)  # a modifier event (e.g. ``;``): it belongs to the phoneme before it
            visemes.append(visemes[-1])
            continue
        if viseme is None:
            raise KeyError(f"espeak phoneme {p.name!r} (in {synthesis.text!r}) has no viseme in phonemes.py")
        visemes.append(viseme)
    times = np.arange(n_frames) * FRAME_S
    idx = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(visemes) - 1)
    return [visemes[i] for i in idx]


def frame_labels(synthesis: Synthesis, n_frames: int) -> np.ndarray:
    """Class index of the espeak phoneme under each frame time ``k·10 ms`` (the engine's ``Frame.t``)."""
    table = {v: SCORING_CLASSES.index(c) for v, c in VISEME_CLASS.items()}
    return np.array([table[v] for v in frame_visemes(synthesis, n_frames)], dtype=np.int8)


def synthesize_item(sentence_index: int, voice: str, rate_wpm: int, pitch: int) -> tuple[np.ndarray, list[str]]:
    """Padded 16 kHz speech (before ``degrade``) and the OVR viseme of every 10 ms frame.

    The same recipe as ``build`` (so an item's ``labels`` are these visemes' classes); training code uses
    it to get the 15-viseme truth of tuning items, or speech for extra tuning-split settings.
    """
    from avatar_studio.lipsync.features import resample

    syn = synthesize(SENTENCES[sentence_index], voice=voice, rate_wpm=rate_wpm, pitch=pitch)
    audio16 = resample(syn.samples().astype(np.float64), syn.sample_rate).astype(np.float32)
    n_frames = int(np.ceil(len(audio16) / SAMPLE_RATE / FRAME_S))
    visemes = frame_visemes(syn, n_frames)
    lead, trail = round(LEAD_S / FRAME_S), round(TRAIL_S / FRAME_S)
    hop = round(FRAME_S * SAMPLE_RATE)
    audio16 = np.concatenate([np.zeros(lead * hop, np.float32), audio16, np.zeros(trail * hop, np.float32)])
    return audio16, ["sil"] * lead + visemes + ["sil"] * trail


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum /= np.sqrt(np.maximum(freqs, 50.0))
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.std(noise) + 1e-12)


def _reverb(x: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a direct path plus an exponentially decaying noise tail (−60 dB at ``rt60_s``)."""
    from scipy.signal import fftconvolve

    n = int(rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)
    tail[: int(0.003 * SAMPLE_RATE)] = 0.0  # first reflections arrive a few ms after the direct sound
    tail *= 0.5 / np.sqrt(np.sum(tail**2))  # direct-to-reverberant ratio ≈ +6 dB
    ir = tail
    ir[0] = 1.0
    wet = fftconvolve(x, ir)[: len(x)]
    return wet * (np.max(np.abs(x)) / (np.max(np.abs(wet)) + 1e-12))


def degrade(speech: np.ndarray, labels: np.ndarray, condition: Condition, seed: int) -> np.ndarray:
    """Apply ``condition``: reverb, then pink noise at the SNR measured over speech frames only."""
    rng = np.random.default_rng(seed)
    x = speech.astype(np.float64)
    if condition.rt60_s > 0:
        x = _reverb(x, condition.rt60_s, rng)
    floor = 10 ** (-65 / 20) * rng.standard_normal(len(x))  # a real microphone is never digitally silent
    if condition.snr_db is not None:
        hop = int(FRAME_S * SAMPLE_RATE)
        speech_mask = np.repeat(labels != SCORING_CLASSES.index("sil"), hop)[: len(x)]
        speech_rms = np.sqrt(np.mean(x[: len(speech_mask)][speech_mask] ** 2)) if speech_mask.any() else 0.1
        x = x + _pink_noise(len(x), rng) * speech_rms * 10 ** (-condition.snr_db / 20)
    return np.clip(x + floor, -1.0, 1.0).astype(np.float32)


def plan(split: str, quick: bool) -> list[tuple[int, str, int, int, str]]:
    """(sentence, voice, rate, pitch, condition) for every item of ``split`` (``tune`` or ``heldout``)."""
    if split == "tune":
        sentences, voices = range(N_TUNE_SENTENCES), TUNE_VOICES
    elif split == "heldout":
        sentences, voices = range(N_TUNE_SENTENCES, len(SENTENCES)), HELDOUT_VOICES
    else:
        raise ValueError(f"split must be 'tune' or 'heldout', not {split!r}")
    conditions = [c.name for c in CONDITIONS if not quick or c.name in QUICK_CONDITIONS]
    if quick:
        sentences, voices = list(sentences)[:6], voices[:2]
    items = []
    for s in sentences:
        for v, voice in enumerate(voices):
            # rate and pitch vary with sentence and voice so every voice is heard at every setting
            rate = RATES_WPM[(s + v) % len(RATES_WPM)]
            pitch = PITCHES[(s + 2 * v) % len(PITCHES)]
            for condition in conditions:
                items.append((s, voice, rate, pitch, condition))
    return items


def cache_dir() -> Path:
    root = os.environ.get("AVATAR_STUDIO_EVAL_CACHE") or Path.home() / ".cache" / "avatar_studio" / "lipsync_eval"
    return Path(root)


def _cache_key(split: str, quick: bool) -> str:
    spec = {
        "v": CACHE_VERSION,
        "pad": [LEAD_S, TRAIL_S],
        "split": split,
        "quick": quick,
        "sentences": SENTENCES,
        "n_tune": N_TUNE_SENTENCES,
        "voices": [TUNE_VOICES, HELDOUT_VOICES],
        "rates": RATES_WPM,
        "pitches": PITCHES,
        "conditions": [c.__dict__ for c in CONDITIONS],
        "quick_conditions": QUICK_CONDITIONS,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build(split: str, quick: bool = False) -> list[Item]:
    """The items of ``split``, from the cache when it is current, else synthesised and cached."""
    path = cache_dir() / f"{split}-{_cache_key(split, quick)}.npz"
    if path.exists():
        try:
            return _load(path)
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    items = []
    speech_cache: dict[tuple[int, str, int, int], tuple[np.ndarray, np.ndarray]] = {}
    table = {v: SCORING_CLASSES.index(c) for v, c in VISEME_CLASS.items()}
    for k, (s, voice, rate, pitch, condition_name) in enumerate(plan(split, quick)):
        key = (s, voice, rate, pitch)
        if key not in speech_cache:
            audio16, visemes = synthesize_item(s, voice, rate, pitch)
            speech_cache[key] = (audio16, np.array([table[v] for v in visemes], dtype=np.int8))
        audio16, labels = speech_cache[key]
        condition = next(c for c in CONDITIONS if c.name == condition_name)
        noisy = degrade(audio16, labels, condition, seed=1000 + k)
        items.append(Item(split, s, voice, rate, pitch, condition_name, noisy, labels))
    _save(path, items)
    return items


def _save(path: Path, items: list[Item]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = [
        {"split": i.split, "s": i.sentence_index, "voice": i.voice, "rate": i.rate_wpm, "pitch": i.pitch,
         "condition": i.condition, "n_audio": len(i.audio), "n_labels": len(i.labels)}
        for i in items
    ]  # fmt: skip
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        meta=np.array(json.dumps(meta)),
        # int16 halves the cache (≈80 MB for the full set); the −65 dBFS noise floor is still ~18 LSB
        audio=np.round(np.concatenate([i.audio for i in items]) * 32767).astype(np.int16),
        labels=np.concatenate([i.labels for i in items]),
    )
    tmp.replace(path)


def _load(path: Path) -> list[Item]:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        audio, labels = data["audio"].astype(np.float32) / 32767, data["labels"]
    items, a, b = [], 0, 0
    for m in meta:
        items.append(
            Item(m["split"], m["s"], m["voice"], m["rate"], m["pitch"], m["condition"],
                 audio[a : a + m["n_audio"]], labels[b : b + m["n_labels"]])
        )  # fmt: skip
        a += m["n_audio"]
        b += m["n_labels"]
    return items


def iter_items(quick: bool = False) -> Iterator[Item]:
    yield from build("tune", quick)
    yield from build("heldout", quick)
