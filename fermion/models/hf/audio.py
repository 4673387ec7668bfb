"""`hf:` automatic speech recognition: an audio file in, its transcript out.

WAV files (PCM 8/16/24/32-bit or float, any sample rate, mono or stereo) are decoded here with no
extra library: channels are averaged and the signal is resampled to the model's rate. Other
formats (FLAC, OGG, ...) work when the optional `soundfile` package is installed; otherwise they
answer 422 with a conversion hint. Long recordings are transcribed in 30-second chunks.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from fermion.models.hf._pipeline import ModelService, check_model_dir, for_model, load_pipeline, model_name
from fermion.models.kinds import SourceError
from fermion.responses import InvalidInput
from fermion.service import Service, endpoint
from fermion.types import File

#: Shorter clips are refused: speech models cannot hear anything in them (and some fail outright).
MIN_SECONDS = 0.1
CHUNK_SECONDS = 30


def _silent_wav(seconds: float = MIN_SECONDS, rate: int = 8000) -> str:
    """Base64 of a short silent WAV (8-bit mono), the example "try it" in /docs sends."""
    import base64
    import struct

    frames = int(seconds * rate)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", frames) + b"\x80" * frames
    return base64.b64encode(b"RIFF" + struct.pack("<I", len(body)) + body).decode("ascii")


AudioFile = Annotated[
    File,
    Field(
        description="A recording: a WAV file (any rate, mono or stereo), as a multipart upload or base64 in JSON.",
        examples=[_silent_wav()],
    ),
]


class Transcription(BaseModel):
    """What was said."""

    text: str = Field(description="The transcript.", examples=["hello world"])


def read_wav(data: bytes) -> tuple[Any, int]:
    """Samples (mono float32 in [-1, 1]) and sample rate of a WAV file; `ValueError` saying why it cannot be read."""
    import numpy as np

    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    fmt = samples = None
    pos = 12
    while pos + 8 <= len(data) and (fmt is None or samples is None):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":
            fmt = data[pos + 8 : pos + 8 + size]
        elif chunk == b"data":
            samples = data[pos + 8 : pos + 8 + size]  # streamed WAVs may claim more than there is
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16 or samples is None:
        raise ValueError("a WAV file without its fmt or data chunk")
    tag = int.from_bytes(fmt[0:2], "little")
    channels = int.from_bytes(fmt[2:4], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    block = int.from_bytes(fmt[12:14], "little")
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real format opens the sub-format GUID
        tag = int.from_bytes(fmt[24:26], "little")
    if channels < 1 or rate < 1 or block < channels or block % channels:
        raise ValueError("a WAV file with a broken header")
    width = block // channels
    raw = samples[: len(samples) // block * block]
    if tag == 1 and width == 1:
        signal = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == 1 and width == 2:
        signal = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif tag == 1 and width == 3:
        triples = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        packed = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        signal = ((packed << 8) >> 8).astype(np.float32) / 8388608.0  # sign-extend 24 bits
    elif tag == 1 and width == 4:
        signal = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    elif tag == 3 and width in (4, 8):
        signal = np.frombuffer(raw, "<f4" if width == 4 else "<f8").astype(np.float32)
    else:
        raise ValueError(f"WAV encoding {tag} with {width * 8}-bit samples is not supported (use 8-32 bit PCM or float)")
    return signal.reshape(-1, channels).mean(axis=1), rate


def resample(signal: Any, rate: int, target: int) -> Any:
    """`signal` at `target` samples per second (band-limited, through the FFT)."""
    import numpy as np

    if rate == target or len(signal) == 0:
        return signal.astype(np.float32)
    length = max(1, round(len(signal) * target / rate))
    spectrum = np.fft.rfft(signal)
    bins = length // 2 + 1
    if bins <= len(spectrum):
        spectrum = spectrum[:bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(bins - len(spectrum), dtype=spectrum.dtype)])
    return (np.fft.irfft(spectrum, n=length) * (length / len(signal))).astype(np.float32)


def decode_audio(file: File, target_rate: int) -> Any:
    """The upload as mono float32 samples at `target_rate`; 422 when it cannot be read or is too short."""
    what = ", ".join(part for part in (file.filename, file.content_type, f"{file.size} bytes") if part)
    try:
        signal, rate = read_wav(file.data)
    except ValueError as wav_error:
        try:
            import soundfile
        except ImportError:
            raise InvalidInput(
                f"the file is not audio this server can read ({what}: {wav_error}); send a WAV file "
                "(e.g. ffmpeg -i input.mp3 -ar 16000 -ac 1 output.wav)"
            ) from None
        try:
            frames, rate = soundfile.read(file.open(), dtype="float32", always_2d=True)
        except Exception as exc:
            raise InvalidInput(f"the file is not audio ({what}: {exc}); send a WAV, FLAC or OGG file") from None
        signal = frames.mean(axis=1)
    if len(signal) < MIN_SECONDS * rate:
        raise InvalidInput(f"the recording is too short ({len(signal) / rate:.3f} s); send at least {MIN_SECONDS} s of audio")
    return resample(signal, rate, target_rate)


class SpeechRecognition(ModelService):
    task = "automatic-speech-recognition"

    def setup(self) -> None:
        self.pipe = load_pipeline(self.task, self.model_dir, self.device)
        self.rate = int(self.pipe.feature_extractor.sampling_rate)
        # CTC models and Whisper transcribe long audio in overlapping chunks; other seq2seq models cannot.
        chunked = self.pipe.type in ("ctc", "ctc_with_lm", "seq2seq_whisper")
        self.options: dict[str, Any] = {"chunk_length_s": CHUNK_SECONDS, "ignore_warning": True} if chunked else {}

    @endpoint(max_batch_size=8, max_wait_ms=10)
    def transcribe(self, audio: list[AudioFile]) -> list[Transcription]:
        """Transcribe a recording: the text of what was said."""
        inputs = [{"raw": decode_audio(file, self.rate), "sampling_rate": self.rate} for file in audio]
        results = self.pipe(inputs, batch_size=len(inputs), **self.options)
        return [Transcription(text=str(result["text"]).strip()) for result in results]


def build(model_dir: str, task: str, device: str | None = None) -> Service:
    """The Service for speech recognition with the model in `model_dir`, on `device` (default the CPU)."""
    source = f"hf:{model_dir}"
    check_model_dir(model_dir, source)
    if task != SpeechRecognition.task:
        raise SourceError(f"{source}: task '{task}' is not {SpeechRecognition.task}")
    return for_model(
        SpeechRecognition, model_dir, f"Speech recognition with {model_name(model_dir)}: WAV audio in, text out.", device=device
    )
