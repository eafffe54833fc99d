"""Planning reads clip headers itself (shardgen.plan.read_header): the same figures as soundfile.info."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shardgen import plan
from shardgen.plan import read_header
from shardgen.records import Record

SHARED = Path(__file__).resolve().parents[3] / "shared" / "audio-samples"


def _as_info(path_or_bytes) -> tuple:
    i = sf.info(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes)
    return (i.format, i.subtype, i.samplerate, i.channels, i.frames)


def _fields(h: plan.Header) -> tuple:
    return (h.format, h.subtype, h.samplerate, h.channels, h.frames)


def _wav_with_chunk_before_data(path: Path, x: np.ndarray, sr: int, extra: bytes) -> None:
    """A 16-bit WAV with a chunk of odd length (padded, as RIFF wants) between fmt and data."""
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    raw = buf.getvalue()
    data_at = raw.index(b"data")
    chunk = b"LIST" + len(extra).to_bytes(4, "little") + extra + (b"\0" if len(extra) % 2 else b"")
    body = raw[12:data_at] + chunk + raw[data_at:]
    path.write_bytes(b"RIFF" + (4 + len(body)).to_bytes(4, "little") + b"WAVE" + body)


@pytest.fixture()
def layouts(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for fmt, sub, sr, ch, n in [("FLAC", "PCM_16", 44100, 1, 44100), ("FLAC", "PCM_24", 48000, 2, 12345),
                                ("FLAC", "PCM_S8", 8000, 1, 999), ("WAV", "PCM_16", 16000, 1, 16001),
                                ("WAV", "PCM_24", 22050, 2, 777), ("WAV", "PCM_32", 32000, 1, 5000),
                                ("WAV", "FLOAT", 16000, 1, 300), ("WAV", "PCM_16", 16000, 6, 400),
                                ("OGG", "VORBIS", 16000, 1, 16000)]:
        p = tmp_path / f"{fmt}-{sub}-{sr}-{ch}.{fmt.lower()}"
        sf.write(p, 0.3 * rng.standard_normal((n, ch)), sr, format=fmt, subtype=sub)
        out.append(p)
    p = tmp_path / "list-chunk.wav"
    _wav_with_chunk_before_data(p, 0.1 * rng.standard_normal(1000), 16000, b"odd")
    out.append(p)
    cut = tmp_path / "truncated.wav"  # the data chunk claims more than the file holds
    cut.write_bytes(out[3].read_bytes()[:-1000])
    id3 = tmp_path / "id3.flac"  # a FLAC behind an ID3v2 tag
    id3.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + out[0].read_bytes())
    return out + [cut, id3]


def test_headers_read_directly_match_soundfile(layouts: list[Path]) -> None:
    read = 0
    for p in layouts:
        h = read_header(p)
        assert h is None or _fields(h) == _as_info(p), p.name
        assert read_header(p.read_bytes()) == h  # bytes (HF records) as paths
        read += h is not None
    by_name = {p.name: read_header(p) for p in layouts}
    # what it reads itself, and what it leaves to soundfile
    assert all(by_name[n] is not None for n in ("FLAC-PCM_16-44100-1.flac", "FLAC-PCM_24-48000-2.flac",
                                                "FLAC-PCM_S8-8000-1.flac", "WAV-PCM_16-16000-1.wav",
                                                "WAV-PCM_24-22050-2.wav", "WAV-PCM_32-32000-1.wav",
                                                "WAV-PCM_16-16000-6.wav", "list-chunk.wav"))
    assert all(by_name[n] is None for n in ("WAV-FLOAT-16000-1.wav", "OGG-VORBIS-16000-1.ogg", "truncated.wav",
                                            "id3.flac"))
    assert read == 8


def test_probe_gives_the_bounds_soundfile_gave(layouts: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    records = [Record(key=f"k{i}", source=p.name, path=p, labels=[0], split="train") for i, p in enumerate(layouts)]
    jobs = [(r, 16000, "flac", 1, False, 3) for r in records]
    fast = [plan.probe(j) for j in jobs]
    monkeypatch.setattr(plan, "read_header", lambda src: None)
    slow = [plan.probe(j) for j in jobs]
    assert fast == slow
    # every one has a bound but the ID3-tagged FLAC, which libsndfile does not open either way
    assert [isinstance(b, int) for b in fast] == [p.name != "id3.flac" for p in layouts]
    assert "id3.flac" in str(fast[-1]) and "cannot open audio" in str(fast[-1])


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/audio-samples is absent")
def test_real_recordings_headers_match_soundfile() -> None:
    files = sorted(SHARED.rglob("*.flac"))
    assert len(files) > 100
    for p in files:
        h = read_header(p)
        assert h is not None and _fields(h) == _as_info(p), p
