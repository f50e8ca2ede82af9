"""espeak-ng through its C API (ctypes): speech audio plus the exact time of every phoneme.

Why the C API and not the ``espeak-ng`` command: on Debian 12 no CLI option prints phoneme *timings*
for the normal voices (``--pho`` needs MBROLA, ``-x``/``--ipa`` print strings only), while the library
reports an ``espeakEVENT_PHONEME`` with an ``audio_position`` for each phoneme it synthesises. That makes
espeak-ng a timing oracle: the ground truth for the lip-sync evaluation set and for tests, with no
recorded speech and no network (see ``design/lipsync.md`` Part 2 (b)).

Why a module-level lock: libespeak-ng keeps one global synthesiser (voice, parameters, callback), so
two threads synthesising at once would mix their audio and events.

The library is ``libespeak-ng.so.1`` from the Debian package ``libespeak-ng1`` (the ``espeak-ng``
package brings the voice data too). Output is 16-bit mono PCM at 22 050 Hz for the Debian build.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "EspeakError",
    "PhonemeEvent",
    "Synthesis",
    "espeak_available",
    "list_voices",
    "synthesize",
]

_INSTALL_HINT = "install the Debian packages espeak-ng and libespeak-ng1 (apt-get install espeak-ng libespeak-ng1)"

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0

_PAUSE_NAMES = frozenset({"_", "_:", "_!", "_!_", "_|", "_^_", "", " "})
_STRESS_MARKS = "'`,%=ˈˌ"


class EspeakError(RuntimeError):
    """espeak-ng cannot be used: library missing, voice unknown or synthesis failed."""


@dataclass(frozen=True)
class PhonemeEvent:
    """One phoneme as espeak-ng spoke it, in seconds from the start of the audio.

    ``name`` is espeak's phoneme mnemonic (ASCII mode, e.g. ``aI``, ``tS``, ``@2``) or IPA (``ipa=True``),
    with stress marks removed; ``raw`` keeps the original. Pauses are named ``_`` (see ``is_pause``).
    """

    name: str
    start_s: float
    end_s: float
    raw: str = ""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def is_pause(self) -> bool:
        return self.name in _PAUSE_NAMES or self.name.startswith("_")


@dataclass(frozen=True)
class Synthesis:
    """Speech audio and its phoneme timeline; the phonemes tile ``[0, duration_s]`` without gaps."""

    text: str
    voice: str
    rate_wpm: int
    pitch: int
    sample_rate: int
    pcm: np.ndarray = field(repr=False)  # int16, mono
    phonemes: tuple[PhonemeEvent, ...]

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate

    def samples(self) -> np.ndarray:
        """The audio as float32 in [-1, 1), the format the lip-sync engine and sounddevice take."""
        return (self.pcm.astype(np.float32) / 32768.0).astype(np.float32)

    def phoneme_at(self, t_s: float) -> PhonemeEvent | None:
        """The phoneme sounding at ``t_s`` (None outside the audio)."""
        for event in self.phonemes:
            if event.start_s <= t_s < event.end_s:
                return event
        return None

    def write_wav(self, path: str | Path) -> Path:
        """Save as 16-bit mono WAV (what the app's WAV playback and review load)."""
        import wave

        path = Path(path)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(self.pcm.astype("<i2").tobytes())
        return path


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h (40 bytes on x86_64 and aarch64)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Voice(ctypes.Structure):
    """``espeak_VOICE``, only read (by ``list_voices``)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # not c_char_p: it holds several NUL-separated entries
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class _Library:
    """The loaded library, initialised once per phoneme-name mode (ASCII or IPA)."""

    def __init__(self) -> None:
        self.lib: ctypes.CDLL | None = None
        self.sample_rate = 0
        self.ipa: bool | None = None
        self.chunks: list[np.ndarray] = []
        self.marks: list[tuple[str, int]] = []
        # Kept referenced for the life of the process: the C library holds this pointer.
        self.callback = _SynthCallback(self._on_audio)

    def _on_audio(self, wav: ctypes._Pointer, count: int, events: ctypes._Pointer) -> int:
        if wav and count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                name = bytes(events[i].id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self.marks.append((name, events[i].audio_position))
            i += 1
        return 0

    def load(self, ipa: bool) -> ctypes.CDLL:
        if self.lib is None:
            candidates = [ctypes.util.find_library("espeak-ng"), "libespeak-ng.so.1", "libespeak-ng.so"]
            errors = []
            for name in [c for c in candidates if c]:
                try:
                    self.lib = ctypes.CDLL(name)
                    break
                except OSError as exc:
                    errors.append(str(exc))
            if self.lib is None:
                raise EspeakError(f"the espeak-ng library (libespeak-ng.so.1) was not found; {_INSTALL_HINT}")
            lib = self.lib
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetVoiceByName.restype = ctypes.c_int
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_SetParameter.restype = ctypes.c_int
            lib.espeak_Synth.argtypes = [
                ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                ctypes.c_void_p, ctypes.c_void_p,
            ]  # fmt: skip
            lib.espeak_Synth.restype = ctypes.c_int
            lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
            lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        if self.ipa != ipa:
            options = _INITIALIZE_PHONEME_EVENTS | (_INITIALIZE_PHONEME_IPA if ipa else 0)
            rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, options)
            if rate <= 0:
                raise EspeakError(f"espeak-ng failed to initialise (voice data missing?); {_INSTALL_HINT}")
            self.sample_rate = rate
            self.lib.espeak_SetSynthCallback(self.callback)
            self.ipa = ipa
        return self.lib


_LOCK = threading.Lock()
_STATE = _Library()


def espeak_available() -> bool:
    """True when libespeak-ng loads and initialises (for tests and benchmarks that need it)."""
    try:
        with _LOCK:
            _STATE.load(ipa=False)
    except EspeakError:
        return False
    return True


def list_voices() -> list[str]:
    """Identifiers of the installed voices (``gmw/en-US`` …); variants are added with ``+`` (``en-us+f3``)."""
    with _LOCK:
        lib = _STATE.load(ipa=bool(_STATE.ipa))
        table = lib.espeak_ListVoices(None)
        names = []
        i = 0
        while table[i]:
            identifier = table[i].contents.identifier
            if identifier:
                names.append(identifier.decode("utf-8", "replace"))
            i += 1
    return names


def _voice_languages(lib: ctypes.CDLL) -> list[tuple[str, int, str]]:
    """(identifier, priority, language) for every installed voice and each language it speaks."""
    table = lib.espeak_ListVoices(None)
    found = []
    i = 0
    while table[i]:
        voice = table[i].contents
        identifier = (voice.identifier or b"").decode("utf-8", "replace")
        raw = voice.languages
        # `languages` is a list of (priority byte, NUL-terminated name), ended by a zero priority byte.
        offset = 0
        while raw is not None:
            priority = ctypes.c_ubyte.from_address(raw + offset).value
            if priority == 0:
                break
            name = ctypes.string_at(raw + offset + 1)
            found.append((identifier, priority, name.decode("utf-8", "replace")))
            offset += len(name) + 2
        i += 1
    return found


def _set_voice(lib: ctypes.CDLL, voice: str) -> None:
    """Select ``voice`` by name, else by language (``en-gb`` is a language, not a voice name, in espeak-ng 1.51)."""
    if lib.espeak_SetVoiceByName(voice.encode("utf-8")) == _EE_OK:
        return
    base, plus, variant = voice.partition("+")
    candidates = sorted(
        (priority, identifier)
        for identifier, priority, language in _voice_languages(lib)
        if language.lower() == base.lower() and not identifier.startswith("mb/")  # MBROLA voices need extra data
    )
    for _, identifier in candidates:
        if lib.espeak_SetVoiceByName(f"{identifier}{plus}{variant}".encode()) == _EE_OK:
            return
    raise EspeakError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices`)")


def _clean(name: str) -> str:
    return name.strip().lstrip(_STRESS_MARKS).replace("ˈ", "").replace("ˌ", "") or "_"


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 175, pitch: int = 50, ipa: bool = False) -> Synthesis:
    """Speak ``text`` and return the audio with its phoneme timeline.

    ``voice`` is a name or language with an optional variant (``en-gb-scotland``, ``en-us+f3``);
    ``rate_wpm`` 80–450 words per minute; ``pitch`` 0–100 (50 is the voice's normal pitch).
    A phoneme ends where the next one starts and the last one at the end of the audio; any audio
    before the first phoneme event is reported as a pause, so the events always cover the whole audio.
    """
    if not text.strip():
        raise EspeakError("nothing to say: the text is empty")
    if not 80 <= rate_wpm <= 450:
        raise EspeakError(f"rate {rate_wpm} wpm is outside espeak-ng's range 80–450")
    if not 0 <= pitch <= 100:
        raise EspeakError(f"pitch {pitch} is outside espeak-ng's range 0–100")
    with _LOCK:
        lib = _STATE.load(ipa)
        _set_voice(lib, voice)
        lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        _STATE.chunks, _STATE.marks = [], []
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        status = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        chunks, marks, sample_rate = _STATE.chunks, _STATE.marks, _STATE.sample_rate
        _STATE.chunks, _STATE.marks = [], []
    if status != _EE_OK:
        raise EspeakError(f"espeak-ng synthesis failed with status {status}")
    pcm = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
    return Synthesis(text, voice, int(rate_wpm), int(pitch), sample_rate, pcm, _timeline(marks, len(pcm) / sample_rate))


def _timeline(marks: Sequence[tuple[str, int]], total_s: float) -> tuple[PhonemeEvent, ...]:
    events: list[PhonemeEvent] = []
    starts = [min(max(ms / 1000.0, 0.0), total_s) for _, ms in marks]
    if not marks or starts[0] > 0.0:
        events.append(PhonemeEvent("_", 0.0, starts[0] if marks else total_s, raw=""))
    for k, (raw, _) in enumerate(marks):
        end = starts[k + 1] if k + 1 < len(marks) else total_s
        if end > starts[k]:
            events.append(PhonemeEvent(_clean(raw), starts[k], end, raw=raw))
    return tuple(events)
