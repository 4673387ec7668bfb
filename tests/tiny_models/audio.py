"""A tiny random Wav2Vec2 CTC speech recogniser with a character vocabulary, and WAV test clips."""

from __future__ import annotations

import io
import json
import math
import struct
import wave
from pathlib import Path

SAMPLING_RATE = 16_000
CHARACTERS = tuple("abcdefghijklmnopqrstuvwxyz'")


def speech_recognizer(folder: Path) -> Path:
    """Wav2Vec2ForCTC (one layer, hidden size 16) with a Wav2Vec2Processor over `CHARACTERS`."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate(CHARACTERS)}}
    vocab_path = folder / "vocab.json"
    vocab_path.write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_path), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
        ctc_loss_reduction="mean",
    )
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def wav_bytes(seconds: float = 0.5, rate: int = SAMPLING_RATE, channels: int = 1, sample_width: int = 2) -> bytes:
    """A WAV clip of a 440 Hz tone: PCM with `sample_width` bytes per sample (1, 2 or 4)."""
    frames = int(seconds * rate)
    peak = {1: 127, 2: 32767, 4: 2**31 - 1}[sample_width]
    fmt = {1: "B", 2: "h", 4: "i"}[sample_width]
    samples = []
    for n in range(frames):
        value = int(0.5 * peak * math.sin(2 * math.pi * 440 * n / rate))
        if sample_width == 1:
            value += 128  # 8-bit WAV is unsigned
        samples.extend([value] * channels)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(sample_width)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{len(samples)}{fmt}", *samples))
    return buffer.getvalue()


def float_wav_bytes(seconds: float = 0.25, rate: int = SAMPLING_RATE) -> bytes:
    """A mono 32-bit float WAV (format 3), which Python's `wave` module cannot read."""
    frames = int(seconds * rate)
    data = struct.pack(f"<{frames}f", *(0.3 * math.sin(2 * math.pi * 220 * n / rate) for n in range(frames)))
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body
