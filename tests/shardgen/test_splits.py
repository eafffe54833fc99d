"""Grouped, label-stratified splits and K-fold for data that has none (csv and folder recipes, shardgen.splits).

Real bytes: the synthetic demo clips (shardgen.synth), a CSV naming 15 speakers of unequal size
(4 to 12 clips), packed with the csv recipe and read back from the tars.
"""
from __future__ import annotations

import csv
import json
import random
import shutil
import tarfile
from pathlib import Path

import pytest

from shardgen import splits
from shardgen.cli import main
from shardgen.recipes import get
from shardgen.records import RecipeError
from shardgen.synth import NAMES, synthesize

SIZES = [4, 12, 5, 11, 6, 10, 7, 9, 8, 8, 6, 10, 5, 11, 8]  # 15 speakers, 120 clips, the largest 12
FR = {"train": 0.7, "valid": 0.2, "test": 0.1}


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic clips; speakers.csv (path, labels, speaker, room) without split or fold columns."""
    root = synthesize(tmp_path_factory.mktemp("split-src"), num_clips=sum(SIZES), seed=0, progress=False)
    rows = [r for r in csv.DictReader(open(root / "metadata.csv")) if r["split"] != "noise"]
    speaker = [f"spk{k:02d}" for k, n in enumerate(SIZES) for _ in range(n)]
    random.Random(3).shuffle(speaker)  # speakers interleaved over the clips
    with open(root / "speakers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "speaker", "room"])
        for r, s in zip(rows, speaker):
            w.writerow([r["path"], r["labels"], s, f"room{int(s[3:]) % 4}"])
    (root / "metadata.csv").unlink()  # only speakers.csv from here on
    return root


def _pack(src: Path, out: Path, *opts: str, recipe: str = "csv") -> dict:
    extra = ["--csv-file", "speakers.csv"] if recipe == "csv" and "--csv-file" not in opts else []
    assert main(["pack", "--recipe", recipe, str(src), str(out), "--no-progress", "--codec", "wav",
                 *extra, *opts]) == 0
    return json.loads((out / "dataset.json").read_text())


def _samples(out: Path) -> dict[str, dict]:
    """key -> the sample's json, from every tar; each key once."""
    found: dict[str, dict] = {}
    for tar in sorted(out.rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(tf.extractfile(m).read())
                    assert meta["key"] not in found, f"{meta['key']} in two shards"
                    assert tar.parent.name == meta["split"] and tar.name.startswith(
                        "all-" if meta["fold"] is None else f"fold{meta['fold']}-")
                    found[meta["key"]] = meta
    return found


def _by_group(samples: dict[str, dict], field: str) -> dict[str, set]:
    out: dict[str, set] = {}
    for meta in samples.values():
        out.setdefault(meta["group"], set()).add(meta[field])
    return out


@pytest.fixture(scope="module")
def packed(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split-out") / "ds"
    _pack(src, out, "--split-by", "speaker", "--valid-fraction", "0.2", "--test-fraction", "0.1")
    return out


def test_grouped_split_keeps_every_group_in_one_split(src: Path, packed: Path) -> None:
    samples = _samples(packed)
    rows = list(csv.DictReader(open(src / "speakers.csv")))
    assert len(samples) == len(rows) == 120  # every clip in exactly one split (each key once, above)
    speaker = {r["path"]: r["speaker"] for r in rows}
    assert all(meta["group"] == speaker[meta["source"]] == meta["speaker"] for meta in samples.values())
    where = _by_group(samples, "split")
    assert len(where) == 15 and all(len(s) == 1 for s in where.values()), where
    assert {next(iter(s)) for s in where.values()} == set(FR)
    m = json.loads((packed / "dataset.json").read_text())
    assert m["recipe"]["split"] == {"by": "speaker", "seed": 0, "valid_fraction": 0.2, "test_fraction": 0.1,
                                    "method": splits.METHOD}
    assert sum(m["groups"].values()) == 15


def test_split_sizes_within_one_group_of_the_fractions(packed: Path) -> None:
    samples = _samples(packed)
    n = {s: sum(1 for x in samples.values() if x["split"] == s) for s in FR}
    for s, f in FR.items():  # the proved bound: |n_s - f_s N| <= largest group (12 clips)
        assert abs(n[s] - f * 120) <= max(SIZES), (s, n)


def _class_error(items: list[tuple[str, list[int]]], where: dict[str, str], fr: dict) -> tuple[float, float]:
    """(the worst |count_{s,c} - f_s N_c| in units of the largest one-group count of c,
    the summed squared error sum_{s,c} (count_{s,c} - f_s N_c)^2 / N_c)."""
    total: dict[int, int] = {}
    step: dict[int, int] = {}
    per_group: dict[tuple[str, int], int] = {}
    for g, labels in items:
        for c in labels:
            total[c] = total.get(c, 0) + 1
            per_group[g, c] = per_group.get((g, c), 0) + 1
    for (g, c), k in per_group.items():
        step[c] = max(step.get(c, 0), k)
    worst = sq = 0.0
    for s, f in fr.items():
        for c in total:
            have = sum(k for (g, cc), k in per_group.items() if cc == c and where[g] == s)
            worst = max(worst, abs(have - f * total[c]) / step[c])
            sq += (have - f * total[c]) ** 2 / total[c]
    return worst, sq


def test_label_shares_per_split_near_the_whole_sets(packed: Path) -> None:
    # Bound: for every split s and class c, |count_{s,c} - f_s N_c| <= 2 * g_c, g_c the largest number
    # of clips of c in any one speaker. Why 2: groups are indivisible, so a class count moves in steps
    # of up to g_c; the size bound already lets a split hold one group more or less than its share
    # (one step), and the greedy, placing groups one at a time, can leave one more step of error.
    # With 22 long-tailed classes over 120 clips no bound on shares alone is meaningful: a class
    # with 3 clips cannot be shared 70/20/10.
    samples = _samples(packed)
    items = [(m["group"], m["labels"]) for m in samples.values()]
    where = {m["group"]: m["split"] for m in samples.values()}
    worst, _ = _class_error(items, where, FR)
    assert worst <= 2, worst
    # and the common classes (>= 20 clips) are within 10 points of their whole-set share in train
    train = [m for m in samples.values() if m["split"] == "train"]
    for c in range(len(NAMES)):
        n_c = sum(c in m["labels"] for m in samples.values())
        if n_c >= 20:
            assert abs(sum(c in m["labels"] for m in train) / len(train) - n_c / 120) <= 0.10, NAMES[c]


def test_stratification_beats_label_blind_grouping(packed: Path) -> None:
    # the same greedy without labels is only size-balanced: over 20 seeds its label error is worse
    samples = _samples(packed)
    items = [(m["group"], m["labels"]) for m in samples.values()]
    strat = [_class_error(items, splits.split_groups(items, 0.2, 0.1, s), FR)[1] for s in range(20)]
    blind = [_class_error(items, splits.split_groups([(g, []) for g, _ in items], 0.2, 0.1, s), FR)[1]
             for s in range(20)]
    assert sum(strat) < sum(blind), (sum(strat), sum(blind))
    folds = {k: 0.2 for k in range(1, 6)}
    strat = [_class_error(items, splits.fold_groups(items, 5, s), folds)[1] for s in range(20)]
    blind = [_class_error(items, splits.fold_groups([(g, []) for g, _ in items], 5, s), folds)[1] for s in range(20)]
    assert sum(strat) < sum(blind), (sum(strat), sum(blind))


def test_same_seed_identical_other_seed_different_row_order_irrelevant(src: Path, packed: Path,
                                                                       tmp_path: Path) -> None:
    again = tmp_path / "again"
    _pack(src, again, "--split-by", "speaker", "--valid-fraction", "0.2", "--test-fraction", "0.1",
          "--split-seed", "0")
    assert (again / "dataset.json").read_bytes() == (packed / "dataset.json").read_bytes()

    rows = list(csv.DictReader(open(src / "speakers.csv")))
    random.Random(7).shuffle(rows)
    with open(src / "shuffled.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "labels", "speaker", "room"])
        w.writeheader()
        w.writerows(rows)
    shuffled = _pack(src, tmp_path / "shuffled", "--csv-file", "shuffled.csv", "--split-by", "speaker",
                     "--valid-fraction", "0.2", "--test-fraction", "0.1")
    base = json.loads((packed / "dataset.json").read_text())
    assert shuffled["splits"] == base["splits"]  # the same shards, byte for byte (sha256)
    first = {k: (m["split"], m["group"]) for k, m in _samples(packed).items()}
    assert {k: (m["split"], m["group"]) for k, m in _samples(tmp_path / "shuffled").items()} == first

    def assignment(seed: int) -> dict[str, str]:
        col = get("csv").load(src, csv_file="speakers.csv", split_by="speaker", valid_fraction=0.2,
                              test_fraction=0.1, split_seed=seed)
        return {r.key: r.split for r in col.records}

    assert assignment(0) == {k: s for k, (s, _) in first.items()}
    others = [assignment(seed) for seed in (1, 2)]
    assert all(a != assignment(0) for a in others)
    for a in others:  # still grouped
        speaker = {r["path"]: r["speaker"] for r in rows}
        col = get("csv").load(src, csv_file="speakers.csv")
        grouped: dict[str, set] = {}
        for r in col.records:
            grouped.setdefault(speaker[r.source], set()).add(a[r.key])
        assert all(len(s) == 1 for s in grouped.values())


def test_grouped_five_fold(src: Path, tmp_path: Path) -> None:
    m = _pack(src, tmp_path / "k5", "--split-by", "speaker", "--folds", "5", "--split-seed", "4")
    samples = _samples(tmp_path / "k5")
    assert len(samples) == 120 and {x["split"] for x in samples.values()} == {"train"}
    where = _by_group(samples, "fold")
    assert len(where) == 15 and all(len(f) == 1 for f in where.values()), where
    n = [sum(1 for x in samples.values() if x["fold"] == k) for k in range(1, 6)]
    assert sorted({x["fold"] for x in samples.values()}) == [1, 2, 3, 4, 5] == m["folds"]
    assert max(n) - min(n) <= max(SIZES), n  # balanced within the largest group
    assert all(abs(k - 24) <= max(SIZES) for k in n), n
    items = [(x["group"], x["labels"]) for x in samples.values()]
    worst, _ = _class_error(items, {x["group"]: x["fold"] for x in samples.values()}, {k: 0.2 for k in range(1, 6)})
    assert worst <= 2, worst  # the label bound of the split test, per fold
    assert m["recipe"]["split"]["folds"] == 5 and "5-fold by speaker" in m["recipe"]["split_rule"]


def test_pure_splitter_guarantees_over_many_seeds() -> None:
    # unequal groups 1..30 clips: the size bounds hold for every seed, and the result depends on the
    # multiset of (group, labels) only, not on the order of the items
    rng = random.Random(0)
    items = [(f"g{g}", [rng.randrange(6)]) for g in range(40) for _ in range(1 + (g * 7) % 30)]
    total, big = len(items), 30
    for seed in range(25):
        a = splits.split_groups(items, 0.15, 0.25, seed)
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        assert splits.split_groups(shuffled, 0.15, 0.25, seed) == a
        for s, f in {"train": 0.6, "valid": 0.15, "test": 0.25}.items():
            assert abs(sum(1 for g, _ in items if a[g] == s) - f * total) <= big
        k = splits.fold_groups(items, 7, seed)
        n = [sum(1 for g, _ in items if k[g] == j) for j in range(1, 8)]
        assert max(n) - min(n) <= big and all(abs(x - total / 7) <= big for x in n), n
    assert len({tuple(sorted(splits.split_groups(items, 0.15, 0.25, s).items())) for s in range(5)}) > 1
    # label-pure groups of very unequal size: where label greed alone would overfill a split
    for trial in range(300):
        rng = random.Random(trial)
        items = [(f"g{g}", [c]) for g in range(rng.randrange(4, 12))
                 for c in [rng.randrange(3)] for _ in range(rng.choice([1, 2, 5, 10, 20, 30]))]
        big = max(sum(1 for x, _ in items if x == g) for g, _ in items)
        for v, t in ((0.2, 0.1), (0.3, 0.3), (0.1, 0.4)):
            a = splits.split_groups(items, v, t, trial)
            for s, f in {"train": 1 - v - t, "valid": v, "test": t}.items():
                assert abs(sum(1 for g, _ in items if a[g] == s) - f * len(items)) <= big + 1e-9, (trial, s)
        k = splits.fold_groups(items, 3, trial)
        n = [sum(1 for g, _ in items if k[g] == j) for j in (1, 2, 3)]
        assert max(n) - min(n) <= big and min(n) > 0, (trial, n)


def _folder_src(src: Path, root: Path) -> Path:
    """SRC/<first label>/<speaker>_<clip>.flac from the synthetic clips (same bytes)."""
    for r in csv.DictReader(open(src / "speakers.csv")):
        label = r["labels"].split(";")[0]
        dst = root / label / f"{r['speaker']}_{Path(r['path']).name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / r["path"], dst)
    return root


def test_folder_recipe_groups_by_a_file_name_regex(src: Path, tmp_path: Path) -> None:
    root = _folder_src(src, tmp_path / "classes")
    out = tmp_path / "out"
    m = _pack(root, out, "--split-by", "^([^_]+)_", "--valid-fraction", "0.25", recipe="folder")
    samples = _samples(out)
    assert len(samples) == 120
    where = _by_group(samples, "split")
    assert set(where) == {f"spk{k:02d}" for k in range(15)} and all(len(s) == 1 for s in where.values())
    classes_of = {}
    for x in samples.values():
        classes_of.setdefault(x["group"], set()).add(x["source"].split("/")[0])
    assert max(len(c) for c in classes_of.values()) > 1  # a speaker across class folders is one group
    n_valid = sum(1 for x in samples.values() if x["split"] == "valid")
    assert abs(n_valid - 30) <= max(SIZES) and m["recipe"]["split"]["by"] == "^([^_]+)_"

    # the sub-folder form: SRC/<class>/<speaker>/<clip>, 3 folds
    nested = tmp_path / "nested"
    for f in root.rglob("*.flac"):
        spk, name = f.name.split("_", 1)
        (nested / f.parent.name / spk).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, nested / f.parent.name / spk / name)
    col = get("folder").load(nested, split_by="^([^/]+)/", folds=3)
    assert {r.group for r in col.records} == set(where)
    folds: dict[str, set] = {}
    for r in col.records:
        folds.setdefault(r.group, set()).add(r.fold)
    assert all(len(f) == 1 for f in folds.values()) and {r.fold for r in col.records} == {1, 2, 3}


# ---- bad input: each a clear error that names what is wrong -------------------------------------------

def _err(src: Path, tmp_path: Path, capsys, *opts: str, recipe: str = "csv") -> str:
    extra = ["--csv-file", "speakers.csv"] if recipe == "csv" and "--csv-file" not in opts else []
    assert main(["pack", "--recipe", recipe, str(src), str(tmp_path / "never"), "--no-progress",
                 *extra, *opts]) == 2
    assert not (tmp_path / "never" / "dataset.json").exists()
    return capsys.readouterr().err


def test_unknown_group_column_names_it_and_lists_the_columns(src: Path, tmp_path: Path, capsys) -> None:
    err = _err(src, tmp_path, capsys, "--split-by", "spekaer", "--valid-fraction", "0.2")
    assert "--split-by spekaer" in err and "'spekaer'" in err and "path, labels, speaker, room" in err


@pytest.mark.parametrize("opts, names", [
    (["--valid-fraction", "0.6", "--test-fraction", "0.5"], ["--valid-fraction 0.6", "--test-fraction 0.5", "1.1"]),
    (["--valid-fraction", "-0.1", "--test-fraction", "0.2"], ["--valid-fraction -0.1", "negative"]),
    (["--test-fraction", "-0.3"], ["--test-fraction -0.3", "negative"]),
    (["--folds", "1"], ["--folds 1", "K >= 2"]),
    (["--folds", "16"], ["--folds 16", "15 group(s)", "'speaker'"]),
    (["--folds", "3", "--test-fraction", "0.2"], ["--folds 3", "--test-fraction", "exclude each other"]),
    ([], ["--split-by speaker needs --valid-fraction"]),
    (["--test-fraction", "0.01"], ["--test-fraction 0.01", "split 'test' would be empty", "largest 12 clips"]),
])
def test_bad_split_options_name_the_option(src: Path, tmp_path: Path, capsys, opts: list[str],
                                           names: list[str]) -> None:
    err = _err(src, tmp_path, capsys, "--split-by", "speaker", *opts)
    assert all(n in err for n in names), err


def test_split_options_without_split_by(src: Path, tmp_path: Path, capsys) -> None:
    err = _err(src, tmp_path, capsys, "--valid-fraction", "0.2", "--folds", "5")
    assert "--valid-fraction and --folds" in err and "need(s) --split-by" in err


def test_csv_with_its_own_split_or_fold_column_is_refused(src: Path, tmp_path: Path, capsys) -> None:
    rows = list(csv.DictReader(open(src / "speakers.csv")))
    for col, value in (("split", "train"), ("fold", "2")):
        with open(src / f"with_{col}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "labels", "speaker", col])
            w.writeheader()
            w.writerows({"path": r["path"], "labels": r["labels"], "speaker": r["speaker"],
                         col: value if i % 2 else ""} for i, r in enumerate(rows))
        for opts in (["--valid-fraction", "0.2"], ["--folds", "5"]):
            err = _err(src, tmp_path, capsys, "--csv-file", f"with_{col}.csv", "--split-by", "speaker", *opts)
            assert f"already has a {col!r} column in use ({value})" in err and "--split-by speaker" in err, err
            assert "remove or empty" in err
    # an empty split column is not in use: the grouped split goes ahead
    with open(src / "empty_split.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "labels", "speaker", "split", "fold", "group"])
        w.writeheader()
        w.writerows({"path": r["path"], "labels": r["labels"], "speaker": r["speaker"] if i else "",
                     "split": "", "fold": "", "group": f"take{i}"} for i, r in enumerate(rows))
    col = get("csv").load(src, csv_file="empty_split.csv", split_by="speaker", folds=4)
    assert len(col.records) == 119 and {r.fold for r in col.records} == {1, 2, 3, 4}
    assert len(col.problems) == 1 and "empty 'speaker'" in col.problems[0].reason  # a row without a group
    assert col.records[0].group.startswith("spk") and col.records[0].extra["csv_group"].startswith("take")


def test_folder_bad_inputs(src: Path, tmp_path: Path, capsys) -> None:
    root = _folder_src(src, tmp_path / "classes")
    err = _err(root, tmp_path, capsys, "--split-by", "^([^_]+_", "--folds", "3", recipe="folder")
    assert "--split-by '^([^_]+_' is not a regular expression" in err
    err = _err(root, tmp_path, capsys, "--split-by", "^(nobody)_", "--folds", "3", recipe="folder")
    assert "--split-by '^(nobody)_' finds a group in no clip path" in err
    err = _err(root, tmp_path, capsys, "--split-by", "^([^_]+)_", "--folds", "40", recipe="folder")
    assert "--folds 40" in err and "15 group(s)" in err
    (root / "odd").mkdir()
    shutil.copyfile(next(root.rglob("*.flac")), root / "odd" / "nospeaker.flac")
    err = _err(root, tmp_path, capsys, "--split-by", "^([^_]+)_", "--folds", "3", recipe="folder")
    assert "'nospeaker.flac'" in err and "does not match" in err  # a problem, fatal by default
    col = get("folder").load(root, split_by="^([^_]+)_", folds=3)
    assert len(col.records) == 120 and len(col.problems) == 1  # --on-error skip would pack the 120
    split = tmp_path / "split"
    for part in ("train", "valid"):
        shutil.copytree(root / "odd", split / part / "odd")
    err = _err(split, tmp_path, capsys, "--split-by", "^(.)", "--valid-fraction", "0.5", recipe="folder")
    assert "already has split folders (train, valid)" in err and "--split-by" in err


def test_recipe_help_shows_split_examples() -> None:
    import contextlib
    import io

    for recipe, example in (("csv", "--split-by speaker --valid-fraction 0.2 --test-fraction 0.1"),
                            ("folder", "--split-by '^([^_]+)_' --valid-fraction 0.2")):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
            main(["pack", "--recipe", recipe, "--help"])
        text = buf.getvalue()
        assert example in text and "--folds K" in text and "--split-seed N" in text
