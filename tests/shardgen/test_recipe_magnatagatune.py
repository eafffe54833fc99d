"""magnatagatune recipe: hand-written annotations_final.csv in the release's format (tab-separated,
quoted fields, CRLF, the 188 tag columns in header order) plus short generated MP3 clips."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shardgen import cli
from shardgen.recipes import get, magnatagatune as mtat
from shardgen.records import RecipeError
from shardgen.writer import PackOptions, pack
from tests.conftest import write_tone
from tests.conftest import read_shards

# The tag columns of annotations_final.csv, in header order (between clip_id and mp3_path).
TAGS = [
    "no voice", "singer", "duet", "plucking", "hard rock", "world", "bongos", "harpsichord", "female singing",
    "clasical", "sitar", "chorus", "female opera", "male vocal", "vocals", "clarinet", "heavy", "silence",
    "beats", "men", "woodwind", "funky", "no strings", "chimes", "foreign", "no piano", "horns", "classical",
    "female", "no voices", "soft rock", "eerie", "spacey", "jazz", "guitar", "quiet", "no beat", "banjo",
    "electric", "solo", "violins", "folk", "female voice", "wind", "happy", "ambient", "new age", "synth",
    "funk", "no singing", "middle eastern", "trumpet", "percussion", "drum", "airy", "voice", "repetitive",
    "birds", "space", "strings", "bass", "harpsicord", "medieval", "male voice", "girl", "keyboard",
    "acoustic", "loud", "classic", "string", "drums", "electronic", "not classical", "chanting", "no violin",
    "not rock", "no guitar", "organ", "no vocal", "talking", "choral", "weird", "opera", "soprano", "fast",
    "acoustic guitar", "electric guitar", "male singer", "man singing", "classical guitar", "country",
    "violin", "electro", "reggae", "tribal", "dark", "male opera", "no vocals", "irish", "electronica", "horn",
    "operatic", "arabic", "lol", "low", "instrumental", "trance", "chant", "strange", "drone", "synthesizer",
    "heavy metal", "modern", "disco", "bells", "man", "deep", "fast beat", "industrial", "hard", "harp",
    "no flute", "jungle", "pop", "lute", "female vocal", "oboe", "mellow", "orchestral", "viola", "light",
    "echo", "piano", "celtic", "male vocals", "orchestra", "eastern", "old", "flutes", "punk", "spanish", "sad",
    "sax", "slow", "male", "blues", "vocal", "indian", "no singer", "scary", "india", "woman", "woman singing",
    "rock", "dance", "piano solo", "guitars", "no drums", "jazzy", "singing", "cello", "calm", "female vocals",
    "voices", "different", "techno", "clapping", "house", "monks", "flute", "not opera", "not english",
    "oriental", "beat", "upbeat", "soft", "noise", "choir", "female singer", "rap", "metal", "hip hop", "quick",
    "water", "baroque", "women", "fiddle", "english",
]
BACH = ("american_bach_soloists-j_s__bach__cantatas_volume_v-01-gleichwie_der_regen_und_schnee_vom_himmel_fallt"
        "_bwv_18_i_sinfonia")
CLIPS = [  # clip_id, tags, mp3_path
    (2, ["classical", "strings", "violin"], f"f/{BACH}-0-29.mp3"),
    (6, ["classical"], f"f/{BACH}-117-146.mp3"),
    (10, ["guitar", "rock"], "0/tilopa-turkishauch-05-copycat-0-29.mp3"),
    (12, [], "b/jacob_heringman-black_cow-01-dowland_a_fancy-30-59.mp3"),
    (15, ["techno", "electronic", "beat", "fast", "drums", "synth"], "c/magnatune-techno-01-x-0-29.mp3"),
    (21, ["piano", "solo"], "d/ehren_starks-lines_build_walls-02-tunnel-146-175.mp3"),
]


def row_line(clip_id: int, tags: list[str], mp3: str, quoted: bool = True) -> str:
    fields = [str(clip_id)] + ["1" if t in tags else "0" for t in TAGS] + [mp3]
    return "\t".join(f'"{f}"' if quoted else f for f in fields)


def annotations(clips: list[tuple[int, list[str], str]] = CLIPS, quoted: bool = True, eol: str = "\r\n",
                final_newline: bool = True) -> bytes:
    header = "\t".join(f'"{h}"' if quoted else h for h in ["clip_id", *TAGS, "mp3_path"])
    lines = [header] + [row_line(c, t, m, quoted) for c, t, m in clips]
    return (eol.join(lines) + (eol if final_newline else "")).encode()


def make_tree(root: Path, clips: list[tuple[int, list[str], str]] = CLIPS, audio_sub: str = "",
              audio_for: list[str] | None = None, **fmt) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations_final.csv").write_bytes(annotations(clips, **fmt))
    for i, mp3 in enumerate(audio_for if audio_for is not None else [m for _, _, m in clips]):
        write_tone(root / audio_sub / mp3, seconds=0.3, sr=16000, freq=300 + 100 * i)
    return root


def hot(labels: list[int], n: int) -> list[int]:
    return [int(i in labels) for i in range(n)]


def test_all_tags_directory_split_and_multi_hot(tmp_path: Path) -> None:
    c = mtat.load(make_tree(tmp_path / "MTAT"), tags="all")
    assert c.problems == [] and c.multi_label and c.classes == TAGS
    by = {r.extra["clip_id"]: r for r in c.records}
    assert {i: (r.split, r.group) for i, r in by.items()} == {
        2: ("test", "f"), 6: ("test", "f"), 10: ("train", "0"), 12: ("train", "b"), 15: ("valid", "c"),
        21: ("test", "d")}
    assert [TAGS[i] for i in by[6].labels] == ["classical"]                       # 1 tag
    assert [TAGS[i] for i in by[10].labels] == ["guitar", "rock"]                 # 2 tags, column order
    assert sorted(TAGS[i] for i in by[15].labels) == sorted(CLIPS[4][1])         # 6 tags
    assert hot(by[10].labels, 188)[TAGS.index("guitar")] == 1 and sum(hot(by[10].labels, 188)) == 2
    assert by[12].labels == []                                                    # untagged, kept
    r = by[2]
    assert (r.key, r.source, r.fold) == ("f_000002", f"f/{BACH}-0-29.mp3", None)
    assert r.extra == {"clip_id": 2, "tags": ["classical", "strings", "violin"]}
    assert all(len(x.key) <= 90 and "." not in x.key for x in c.records)
    assert c.info["untagged"] == {"count": 1, "dropped": False}
    assert c.info["split_rule"] == "mp3 folder: 0-9,a,b -> train, c -> valid, d,e,f -> test"


def test_quoting_line_endings_and_mp3_subfolder_parse_the_same(tmp_path: Path) -> None:
    a = mtat.load(make_tree(tmp_path / "a"), tags="all")
    b = mtat.load(make_tree(tmp_path / "b", audio_sub="mp3", quoted=False, eol="\n", final_newline=False),
                  tags="all")
    strip = lambda c: [(r.key, r.labels, r.split, r.group, r.extra) for r in c.records]  # noqa: E731
    assert strip(a) == strip(b) and b.problems == []
    assert b.records[0].path.parent.parent.name == "mp3" and b.info["options"]["audio_dir"] == "mp3"


def test_top50_is_computed_from_tag_frequency(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    hits = rng.random((150, len(TAGS))) < np.linspace(0.02, 0.5, len(TAGS))[rng.permutation(len(TAGS))]
    clips = [(i, [t for t, h in zip(TAGS, row) if h], f"{'0123456789abcdef'[i % 16]}/clip-{i}.mp3")
             for i, row in enumerate(hits)]
    root = make_tree(tmp_path / "MTAT", clips=clips, audio_for=[])
    c = mtat.load(root)
    counts = hits.sum(axis=0)
    reference = [TAGS[i] for i in np.lexsort((np.arange(len(TAGS)), -counts))[:50]]  # count desc, column asc
    assert c.classes == reference
    assert list(counts[[TAGS.index(t) for t in c.classes]]) == sorted(counts, reverse=True)[:50]
    # no audio at all: every row reported as missing, by line
    assert len(c.problems) == 150 and c.problems[0].where.endswith("annotations_final.csv:2")


def test_untagged_kept_or_dropped(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "MTAT")
    tags = tmp_path / "tags.txt"
    tags.write_text("guitar\npiano\n")
    kept = mtat.load(root, tags_file=tags)
    assert kept.classes == ["guitar", "piano"] and len(kept.records) == 6
    assert sum(r.labels == [] for r in kept.records) == 4 and kept.info["untagged"]["count"] == 4
    dropped = mtat.load(root, tags_file=tags, drop_untagged=True)
    assert sorted(r.extra["clip_id"] for r in dropped.records) == [10, 21]
    assert dropped.info["untagged"] == {"count": 4, "dropped": True} and dropped.problems == []


def test_tags_file_camel_case_and_errors(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "MTAT")
    f = tmp_path / "t.txt"
    f.write_text("noVocals\nmaleVocal\n\nnewAge\nfemale voice\nhip_hop\n")
    c = mtat.load(root, tags_file=f)
    assert c.classes == ["no vocals", "male vocal", "new age", "female voice", "hip hop"]
    assert c.info["options"]["tags"] == "file"
    f.write_text("guitar\nbanjolele\n")
    with pytest.raises(RecipeError, match=r"t.txt:2: tag 'banjolele' is not a column of annotations_final.csv"):
        mtat.load(root, tags_file=f)
    f.write_text("guitar\nGuitar\n")
    with pytest.raises(RecipeError, match=r"t.txt:2: tag 'Guitar' is listed twice"):
        mtat.load(root, tags_file=f)


def test_bad_rows_corrupt_and_unlisted_files(tmp_path: Path) -> None:
    empty_known = "6/norine_braun-now_and_zen-08-gently-117-146.mp3"
    clips = CLIPS + [
        (30, ["rock"], "1/missing-clip-0-29.mp3"),          # line 8: no audio
        (31, ["rock"], empty_known),                         # line 9: known-corrupt
        (32, ["rock"], "2/empty-0-29.mp3"),                  # line 10: 0-byte file
        (2, ["rock"], "3/dup-id-0-29.mp3"),                  # line 11: duplicate clip_id
        (33, ["rock"], "g/not-a-folder-0-29.mp3"),           # line 12: folder g
    ]
    audio = [m for _, _, m in CLIPS] + ["3/dup-id-0-29.mp3", "e/unlisted-0-29.mp3"]
    root = make_tree(tmp_path / "MTAT", clips=clips, audio_for=audio)
    for rel in (empty_known, "2/empty-0-29.mp3"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    text = (root / "annotations_final.csv").read_bytes()
    bad = [row_line(34, ["rock"], "4/x.mp3").replace('"1"', '"2"', 1),   # line 13: tag value 2
           row_line(35, [], "4/y.mp3").rsplit("\t", 3)[0],               # line 14: short row
           row_line(36, [], "4/z.mp3").replace('"36"', '"3x"')]          # line 15: clip_id
    (root / "annotations_final.csv").write_bytes(text + "\r\n".join(bad).encode() + b"\r\n")
    c = mtat.load(root, tags="all")
    table = root / "annotations_final.csv"
    got = {p.where: p.reason for p in c.problems}
    assert got[f"{table}:8"] == f"audio file 1/missing-clip-0-29.mp3 not found under {root}"
    assert got[f"{table}:9"] == f"known-corrupt clip {empty_known} (shipped as an empty file in the MTAT release)"
    assert got[f"{table}:10"] == "audio file 2/empty-0-29.mp3 is empty (0 bytes)"
    assert got[f"{table}:11"] == "duplicate clip_id 2 (also line 2)"
    assert got[f"{table}:12"] == "mp3_path 'g/not-a-folder-0-29.mp3' is not <0-9 or a-f>/<name>.mp3"
    assert got[f"{table}:13"] == "tag column 'rock' has value '2', expected 0 or 1"
    assert got[f"{table}:14"] == "malformed row: 187 fields, expected 190 (clip_id, tags, mp3_path)"
    assert got[f"{table}:15"] == "clip_id '3x' is not a number"
    assert got[str(root / "e" / "unlisted-0-29.mp3")] == "audio file not listed in annotations_final.csv"
    assert got[str(root / "3" / "dup-id-0-29.mp3")] == "audio file not listed in annotations_final.csv"
    assert len(c.problems) == 10 and len(c.records) == len(CLIPS)


def test_wrong_root_header_and_audio_dir(tmp_path: Path) -> None:
    make_tree(tmp_path / "MTAT")
    with pytest.raises(RecipeError, match=r"expected annotations_final.csv under .*did you mean .*MTAT"):
        mtat.load(tmp_path)
    with pytest.raises(RecipeError, match="--audio-dir nowhere: no folder at"):
        mtat.load(tmp_path / "MTAT", audio_dir="nowhere")
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "annotations_final.csv").write_text("clip_id,guitar,mp3_path\n2,1,f/x.mp3\n")
    with pytest.raises(RecipeError, match="expected a tab-separated header clip_id, <tags...>, mp3_path"):
        mtat.load(tmp_path / "csv")


def test_pack_transcodes_mp3_and_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    c = mtat.load(make_tree(tmp_path / "src"), tags="all")
    result = pack(c, out, PackOptions(sample_rate=16000, progress=False))
    m = json.loads((out / "dataset.json").read_text())
    assert result.problems == [] and m["num_classes"] == 188
    assert {k: v["samples"] for k, v in m["splits"].items()} == {"test": 3, "train": 2, "valid": 1}
    assert m["recipe"]["untagged"] == {"count": 1, "dropped": False}
    samples = read_shards(out)
    s = samples["c_000015"]
    assert set(s) == {"flac", "json", "labels"}  # MP3 is always transcoded
    assert sorted(TAGS[i] for i in np.flatnonzero(np.frombuffer(s["labels"], np.uint8))) == sorted(CLIPS[4][1])
    meta = json.loads(s["json"])
    assert (meta["split"], meta["group"], meta["clip_id"], meta["source"]) == (
        "valid", "c", 15, "c/magnatune-techno-01-x-0-29.mp3")
    # the transcoded clip still is the 700 Hz tone it was written as (5th clip: 300 + 4 * 100)
    x, sr = sf.read(io.BytesIO(s["flac"]))
    peak = np.argmax(np.abs(np.fft.rfft(x))) * sr / len(x)
    assert sr == 16000 and abs(peak - 700) < 10 and abs(len(x) / sr - 0.3) < 0.06
    assert np.frombuffer(samples["b_000012"]["labels"], np.uint8).sum() == 0


def test_cli_tags_drop_untagged_and_strict(tmp_path: Path) -> None:
    clips = CLIPS + [(40, ["rock"], "1/missing-0-29.mp3")]
    root = make_tree(tmp_path / "src", clips=clips, audio_for=[m for _, _, m in CLIPS])
    assert get("magnatagatune") is mtat
    rc = cli.main(["pack", "--recipe", "magnatagatune", str(root), str(tmp_path / "o"), "--no-progress",
                   "--tags", "all", "--drop-untagged"])
    m = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert rc == 0 and sum(s["samples"] for s in m["splits"].values()) == 5 and m["num_classes"] == 188
    assert [s["where"].rsplit(":", 1)[1] for s in m["skipped"]] == ["8"]
    assert m["recipe"]["options"]["drop_untagged"] is True
    assert cli.main(["pack", "--recipe", "magnatagatune", str(root), str(tmp_path / "strict"), "--strict",
                     "--no-progress"]) == 2


# --- the published top-50 list (MTAT_split, skipped when ../shared is absent) ---

def test_published_top50_list_resolves_and_matches_frequency_order(shared: Path, tmp_path: Path) -> None:
    published = shared / "datasets-meta" / "magnatagatune" / "MTAT_split" / "top50_tags.txt"
    names = [t for t in published.read_text().split("\n") if t.strip()]
    assert len(names) == 50
    header_names = mtat.resolve_tags(TAGS, names, str(published))  # camelCase -> header spelling
    assert len(header_names) == 50 and set(header_names) <= set(TAGS)
    assert header_names[:3] == ["guitar", "classical", "slow"]
    assert {"no vocals", "male vocal", "new age", "female voice"} <= set(header_names)
    # annotations in which the published list is the frequency order: rank k is on 60 - k clips
    clips = [(100 * k + j, [header_names[k]], f"{'0123456789abcdef'[j % 16]}/c{k}-{j}.mp3")
             for k in range(50) for j in range(60 - k)]
    clips += [(9000 + j, ["duet"], f"0/d-{j}.mp3") for j in range(5)]  # a less frequent tag
    root = make_tree(tmp_path / "MTAT", clips=clips, audio_for=[])
    assert mtat.load(root, tags_file=published).classes == header_names
    assert mtat.load(root).classes == header_names
