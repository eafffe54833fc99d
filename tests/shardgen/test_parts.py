"""shardgen --part I/N + merge and pack_parts on an engine: byte-identical to one plain pack, on real bytes."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from functools import partial
from pathlib import Path

import pytest

from shardgen.cli import main
from shardgen.parts import MergeError, merge, pack_parts
from shardgen.plan import parse_part
from shardgen.recipes import get
from shardgen.writer import MANIFEST, PARTS_DIR, PackError, PackOptions, pack

ROOT = Path(__file__).resolve().parents[2]
OPTS = dict(max_shard_samples=8, progress=False)


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file a reader uses: each tar, each .idx and dataset.json (and nothing else is left)."""
    files = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(root.rglob("*")) if p.is_file()}
    assert all(k == MANIFEST or k.endswith((".tar", ".idx")) for k in files), files
    return files


@pytest.fixture(scope="module")
def plain(demo_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    pack(get("csv").load(demo_src), out, PackOptions(**OPTS))
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_parts_then_merge_equal_a_plain_pack(n: int, demo_src: Path, plain: Path, tmp_path: Path) -> None:
    col = get("csv").load(demo_src)
    for i in reversed(range(1, n + 1)):  # any order
        res = pack(col, tmp_path, PackOptions(**OPTS), part=(i, n))
        assert not (tmp_path / MANIFEST).exists()  # no reader sees the dataset before the merge
        assert res.manifest["part"] == i and set(res.manifest["planned"]) == {s["path"] for s in res.manifest["shards"]}
    merge(tmp_path)
    assert _tree(tmp_path) == _tree(plain)
    assert len(_tree(plain)) > 2 * 7 + 1  # more shards than parts: every part has work


def test_round_robin_spreads_every_group_over_the_parts(demo_src: Path, tmp_path: Path) -> None:
    col = get("csv").load(demo_src)
    a = pack(col, tmp_path, PackOptions(**OPTS), part=(1, 2)).manifest["planned"]
    b = pack(col, tmp_path, PackOptions(**OPTS), part=(2, 2)).manifest["planned"]
    assert not set(a) & set(b) and abs(len(a) - len(b)) <= 1
    assert {p.split("-")[0] for p in a} == {p.split("-")[0] for p in b}  # both parts hold every (split, fold)


def test_merge_refuses_parts_of_different_packs(demo_src: Path, tmp_path: Path) -> None:
    col = get("csv").load(demo_src)
    pack(col, tmp_path, PackOptions(**OPTS), part=(1, 2))
    with pytest.raises(MergeError, match=r"part\(s\) 2/2 missing .*part-0002-of-0002\.json not found"):
        merge(tmp_path)
    other = PackOptions(**{**OPTS, "max_shard_samples": 9})
    pack(col, tmp_path, other, part=(2, 2))
    with pytest.raises(MergeError, match=r"part-0002-of-0002\.json: packed from a different source records, recipe or options"):
        merge(tmp_path)
    col.records.pop()  # another source: one clip fewer
    pack(col, tmp_path, PackOptions(**{**OPTS, "overwrite": True}), part=(2, 2))
    with pytest.raises(MergeError, match="different source"):
        merge(tmp_path)
    assert not (tmp_path / MANIFEST).exists()


def test_merge_refuses_a_part_given_twice_and_other_pack_sizes(demo_src: Path, tmp_path: Path) -> None:
    col = get("csv").load(demo_src)
    pack(col, tmp_path / "a", PackOptions(**OPTS), part=(1, 2))
    pack(col, tmp_path / "b", PackOptions(**OPTS), part=(1, 2))
    one = f"{PARTS_DIR}/part-0001-of-0002.json"
    with pytest.raises(MergeError, match=r"part 1/2 given twice"):
        merge(tmp_path / "a", [str(tmp_path / "a" / one), str(tmp_path / "b" / one)])
    pack(col, tmp_path / "a", PackOptions(**OPTS), part=(2, 3))
    with pytest.raises(MergeError, match="packs of different sizes"):
        merge(tmp_path / "a")


def test_a_part_refuses_to_run_twice_without_resume_or_overwrite(demo_src: Path, tmp_path: Path) -> None:
    col = get("csv").load(demo_src)
    pack(col, tmp_path, PackOptions(**OPTS), part=(1, 2))
    with pytest.raises(PackError, match=r"part 1/2 is complete in .* already"):
        pack(col, tmp_path, PackOptions(**OPTS), part=(1, 2))
    res = pack(col, tmp_path, PackOptions(**{**OPTS, "resume": True}), part=(1, 2))
    assert res.encoded_clips == 0 and res.kept_shards > 0


@pytest.mark.parametrize("bad", ["0/2", "3/2", "x/2", "1/0", "2", "1.5/2"])
def test_bad_part_is_a_clear_error(bad: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        parse_part(bad)
    with pytest.raises(SystemExit) as e:
        main(["pack", "--recipe", "csv", str(tmp_path), str(tmp_path / "out"), "--part", bad])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --part/--pack-part: part {bad!r}" in err
    assert not (tmp_path / "out").exists()  # nothing started


def test_every_shard_stays_under_max_shard_bytes(demo_src: Path, tmp_path: Path) -> None:
    """The plan cuts from an upper bound of each sample's bytes: a hard limit, kept or transcoded audio."""
    for sr, codec in ((16000, "flac"), (8000, "flac"), (22050, "wav")):
        res = pack(get("csv").load(demo_src), tmp_path / f"{sr}{codec}",
                   PackOptions(sample_rate=sr, codec=codec, max_shard_bytes=1_500_000, progress=False))
        shards = [s for sp in res.manifest["splits"].values() for s in sp["shards"]]
        assert len(shards) > 2 and all(s["bytes"] <= 1_500_000 for s in shards)
        assert all((tmp_path / f"{sr}{codec}" / s["path"]).stat().st_size == s["bytes"] for s in shards)


def test_cli_parts_and_merge(demo_src: Path, plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    for i in (1, 2):
        assert main(["pack", "--recipe", "csv", str(demo_src), str(out), "--max-shard-samples", "8",
                     "--no-progress", "--part", f"{i}/2"]) == 0
    assert "shardgen merge" in capsys.readouterr().out
    assert main(["merge", str(out)]) == 0
    assert "merged" in capsys.readouterr().out
    assert _tree(out) == _tree(plain)
    assert main(["merge", str(tmp_path / "nothing")]) == 2
    assert "no part manifest" in capsys.readouterr().err


def test_pack_part_next_to_a_recipe_part_option() -> None:
    """fsd50k's own --part (dev|eval) wins that name; --pack-part, which the Slurm script passes, stays ours."""
    from shardgen.cli import _parser

    args = _parser("fsd50k").parse_args(["pack", "--recipe", "fsd50k", "src", "out", "--part", "dev",
                                         "--pack-part", "2/3"])
    assert (args.part, args.pack_part) == ("dev", (2, 3))
    script = (ROOT / "shardgen" / "slurm" / "pack_array.sbatch").read_text()
    assert '--pack-part "${SLURM_ARRAY_TASK_ID}/${PARTS}"' in script


def test_slurm_array_script(demo_src: Path, plain: Path, tmp_path: Path) -> None:
    """The documented Slurm script, run as the array tasks and the merge job would run it."""
    script = ROOT / "shardgen" / "slurm" / "pack_array.sbatch"
    out = tmp_path / "out"
    env = {**os.environ, "SRC": str(demo_src), "OUT": str(out), "RECIPE": "csv", "PYTHON": sys.executable,
           "PACK_ARGS": "--max-shard-samples 8", "SLURM_ARRAY_TASK_COUNT": "3"}
    for task in (3, 1, 2):
        subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(task)}, cwd=ROOT, check=True)
    subprocess.run(["bash", str(script)], env={**env, "MERGE": "1"}, cwd=ROOT, check=True, capture_output=True)
    assert _tree(out) == _tree(plain)


def test_a_killed_part_leaves_nothing_taken_as_complete(demo_src: Path, plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    col = get("csv").load(demo_src)
    pack(col, out, PackOptions(**OPTS), part=(2, 2))
    cmd = [sys.executable, "-m", "shardgen.cli", "pack", "--recipe", "csv", str(demo_src), str(out),
           "--max-shard-samples", "8", "--no-progress", "--part", "1/2"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 60
    journal = out / PARTS_DIR / "part-0001-of-0002.jsonl"
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / PARTS_DIR / "part-0001-of-0002.json").exists()
    with pytest.raises(MergeError, match=r"1/2 missing .*not written: the part is still running or was killed"):
        merge(out)
    assert not (out / MANIFEST).exists()
    for t in out.rglob("*.tar"):  # every tar that has its final name is complete, with its index
        assert t.with_suffix(".idx").exists() and tarfile.open(t).getnames()
    res = pack(col, out, PackOptions(**{**OPTS, "resume": True}), part=(1, 2))
    assert res.kept_shards >= 2
    merge(out)
    assert _tree(out) == _tree(plain)


def test_pack_parts_on_a_dask_local_cluster(demo_src: Path, plain: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        res = pack_parts(partial(get("csv").load, demo_src), tmp_path, PackOptions(**OPTS), parts=3,
                         executor=client.get_executor())
        ran_on = client.run(os.getpid)
    assert len(ran_on) == 2
    assert res.encoded_clips == sum(sp["samples"] for sp in res.manifest["splits"].values())
    assert _tree(tmp_path) == _tree(plain)
    assert json.loads((tmp_path / MANIFEST).read_text()) == res.manifest


def test_cli_engine_dask(demo_src: Path, plain: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    assert main(["pack", "--recipe", "csv", str(demo_src), str(tmp_path), "--max-shard-samples", "8", "--no-progress",
                 "--engine", "dask", "--workers", "2", "--parts", "4"]) == 0
    assert _tree(tmp_path) == _tree(plain)
