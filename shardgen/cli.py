"""`shardgen`: pack datasets into WebDataset audio shards, verify them, compute stats.

Examples::

    shardgen synth data/demo-src --seed 0
    shardgen pack --recipe csv data/demo-src data/demo --workers 2
    shardgen pack --recipe esc50 ~/datasets/ESC-50-master data/esc50 --sample-rate 32000
    shardgen pack --recipe esc50 ESC-50-master/ s3://bucket/esc50 --part 2/8   # then: shardgen merge s3://bucket/esc50
    shardgen pack --recipe esc50 ESC-50-master/ s3://bucket/esc50 --engine dask --scheduler tcp://head:8786 --parts 64
    shardgen verify data/demo
    shardgen stats data/demo --plot classes.png
    shardgen features data/demo data/demo-mel --n-mels 64 --hop-length 160
    shardgen recipes
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from . import __version__, recipes
from .records import RecipeError

EPILOG = __doc__.split("Examples::", 1)[1]


def _parser(recipe: str | None = None) -> argparse.ArgumentParser:
    """The CLI; with ``recipe``, `pack` also takes that recipe's options (anywhere on the line)."""
    p = argparse.ArgumentParser(prog="shardgen", description="Datasets -> WebDataset audio shards (format v1).",
                                epilog="examples:" + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"shardgen {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    # conflict_handler: a recipe option of the same name (fsd50k's --part dev|eval) wins; --pack-part stays
    pk = sub.add_parser("pack", help="pack a dataset with a recipe", formatter_class=argparse.RawDescriptionHelpFormatter,
                        conflict_handler="resolve",
                        epilog="examples:\n  shardgen pack --recipe csv data/demo-src data/demo --workers 2\n"
                               "  shardgen pack --recipe folder my_classes/ out/ --codec wav --max-shard-samples 500\n"
                               "  shardgen pack --recipe csv data/demo-src data/demo --plot pack.png   # shard sizes, classes by split\n"
                               "  shardgen pack --recipe esc50 ESC-50-master/ out/ --resume\n"
                               "  shardgen pack --recipe esc50 ESC-50-master/ s3://bucket/esc50 --workers 8\n"
                               "  shardgen pack --recipe esc50 ESC-50-master/ s3://bucket/esc50 --part 3/8   # 8 jobs, then merge\n"
                               "  shardgen pack --recipe esc50 ESC-50-master/ out/ --engine dask --workers 4 --parts 8\n"
                               "  shardgen pack --recipe esc50 ESC-50-master/ out/ --engine dask --scheduler tcp://head:8786\n"
                               "Slurm: shardgen/slurm/pack_array.sbatch (one array task per --part, then one merge job)\n"
                               "recipe options: shardgen pack --recipe NAME --help")
    pk.add_argument("--recipe", required=True, help="recipe name (see `shardgen recipes`)")
    pk.add_argument("src", type=Path, help="dataset root in its official layout")
    pk.add_argument("out", help="output folder, or bucket prefix s3://…, gs://…, file://… (credentials from the environment)")
    pk.add_argument("--workers", type=int, default=1, help="parallel encoding processes (output is identical)")
    pk.add_argument("--sample-rate", type=int, default=16000, help="target sample rate (default 16000)")
    pk.add_argument("--channels", type=int, default=1, help="target channels (default 1: downmix)")
    pk.add_argument("--codec", choices=["flac", "wav"], default="flac", help="codec for re-encoded audio")
    pk.add_argument("--max-shard-bytes", type=int, default=256_000_000, help="target shard size (default 256 MB)")
    pk.add_argument("--max-shard-samples", type=int, default=None, help="at most this many samples per shard")
    pk.add_argument("--on-error", choices=["raise", "skip"], default=None,
                    help="bad records: fail, or skip and list them (default: the recipe's, raise for folder/csv)")
    pk.add_argument("--strict", action="store_true", help="same as --on-error raise")
    pk.add_argument("--resume", action="store_true", help="keep complete shards of an interrupted pack, redo the rest")
    pk.add_argument("--overwrite", action="store_true", help="replace an existing pack in OUT")
    pk.add_argument("--no-progress", action="store_true", help="no progress bar")
    pk.add_argument("--plot", type=Path, metavar="PNG",
                    help="write a PNG of the shard sizes and the class counts by split (with --part: pass it to merge)")
    pk.add_argument("--part", "--pack-part", dest="pack_part", type=_part, default=None, metavar="I/N",
                    help="pack only part I of N (1-based, whole shards, round-robin); then `shardgen merge OUT` "
                         "(--pack-part with recipes that have a --part option of their own)")
    pk.add_argument("--engine", choices=["local", "dask"], default="local",
                    help="local: this process and --workers encoders; dask: --parts parts on a Dask cluster, then merge")
    pk.add_argument("--scheduler", default=None, metavar="ADDR",
                    help="Dask scheduler address (tcp://host:8786); default: a local cluster of --workers processes")
    pk.add_argument("--parts", type=int, default=None, help="with --engine dask: number of parts (default 2 per Dask worker)")
    if recipe is not None:
        module = recipes.get(recipe)
        group = pk.add_argument_group(f"options of the {recipe} recipe", (module.__doc__ or "").strip())
        module.add_arguments(group)
        pk.set_defaults(recipe_dests=[a.dest for a in group._group_actions])

    vf = sub.add_parser("verify", help="check shards against dataset.json",
                        epilog="example:\n  shardgen verify data/demo\n  shardgen verify s3://bucket/demo",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    vf.add_argument("dataset", help="dataset folder or URL holding dataset.json")
    vf.add_argument("--no-decode", action="store_true", help="skip decoding every clip (faster)")

    def fold_list(text: str) -> list[int]:  # `--folds 1 2 3` or `--folds 1,2,3`
        try:
            return [int(f) for f in text.split(",") if f.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"folds are integers (e.g. 1 2 3 or 1,2,3), got {text!r}") from None

    st = sub.add_parser("stats", help="class histogram, durations, feature statistics",
                        description="Print the class table and clip durations; compute per-mel-bin log-mel mean/std\n"
                                    "over a split (and folds) and add them to dataset.json, with the split, folds,\n"
                                    "sample and feature settings they came from.",
                        epilog="examples:\n  shardgen stats data/demo --plot classes.png\n"
                               "  shardgen stats data/esc50 --folds 1 2 3 4          # fold 5 held out\n"
                               "  for k in 1 2 3 4 5; do shardgen stats data/esc50 --exclude-folds $k; done"
                               "   # one set per CV split\n"
                               "  shardgen stats data/audioset --max-clips 5000 --seed 0   # a random sample of all shards\n"
                               "  shardgen stats data/esc50 --n-mels 64 --n-fft 512 --hop-length 160 --f-max 8000\n"
                               "the feature options must be those of the Frontend that standardizes with them",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("dataset", type=Path)
    st.add_argument("--plot", type=Path, help="write a PNG bar chart of the class histogram")
    st.add_argument("--split", default="train", help="split for feature statistics (default train)")
    which = st.add_mutually_exclusive_group()
    which.add_argument("--folds", type=fold_list, nargs="+", default=None, metavar="FOLD",
                       help="only these folds of the split (default: all); keep evaluation folds out")
    which.add_argument("--exclude-folds", type=fold_list, nargs="+", default=None, metavar="FOLD",
                       help="every fold of the split but these (e.g. the held-out fold)")
    st.add_argument("--n-mels", type=int, default=128)
    st.add_argument("--n-fft", type=int, default=1024)
    st.add_argument("--win-length", type=int, default=None, help="default: n_fft")
    st.add_argument("--hop-length", type=int, default=None, help="default: 10 ms")
    st.add_argument("--f-min", type=float, default=0.0)
    st.add_argument("--f-max", type=float, default=None, help="default: half the sample rate")
    st.add_argument("--mel-scale", choices=["htk", "slaney"], default="htk")
    st.add_argument("--max-clips", type=int, default=None,
                    help="use a random sample of this many clips across all shards (default: every clip)")
    st.add_argument("--seed", type=int, default=0, help="seed of the --max-clips sample (default 0)")

    ft = sub.add_parser("features", help="cache fp16 log-mels: DATASET -> OUT with a <key>.logmel.npy per sample",
                        description="Decode every clip of DATASET once, compute its log-mel with the Frontend's own\n"
                                    "LogMel (float32, whole clip), store it as float16 <key>.logmel.npy (n_mels x frames)\n"
                                    "in shards with the same names, keys and members, and record the settings in\n"
                                    "OUT/dataset.json (written last). Read it with\n"
                                    "wds_audio.loader(OUT, ..., features=\"cached\"): no audio is decoded.",
                        epilog="examples:\n  shardgen features data/demo data/demo-mel --n-mels 64 --hop-length 160\n"
                               "  shardgen features data/esc50 data/esc50-mel --sample-rate 32000 --n-mels 128 "
                               "--n-fft 1024 --hop-length 320\n"
                               "  shardgen features data/esc50 data/esc50-mel --drop-audio --splits train valid\n"
                               "  shardgen features data/esc50 data/esc50-mel --overwrite --threads 4\n"
                               "the options must be those of the Frontend that will read the features (it checks them)",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ft.add_argument("dataset", help="a packed dataset (folder or URL holding dataset.json)")
    ft.add_argument("out", help="output folder, or bucket prefix s3://…, gs://…")
    ft.add_argument("--features", choices=["logmel"], default="logmel",
                    help="feature kind (MFCC is not cacheable: its per-clip top_db floor depends on the crop)")
    ft.add_argument("--sample-rate", type=int, default=None,
                    help="rate the features are computed at (default: the dataset's); clips are resampled with soxr HQ "
                         "as the loader does")
    ft.add_argument("--n-mels", type=int, default=128)
    ft.add_argument("--n-fft", type=int, default=1024)
    ft.add_argument("--win-length", type=int, default=None, help="default: n_fft")
    ft.add_argument("--hop-length", type=int, default=None, help="default: 10 ms")
    ft.add_argument("--f-min", type=float, default=0.0)
    ft.add_argument("--f-max", type=float, default=None, help="default: half the sample rate")
    ft.add_argument("--mel-scale", choices=["htk", "slaney"], default="htk")
    ft.add_argument("--drop-audio", action="store_true",
                    help="leave the audio member out (smaller shards; only features=\"cached\" can read them then)")
    ft.add_argument("--splits", nargs="+", default=None, metavar="SPLIT", help="only these splits (default: all)")
    ft.add_argument("--threads", type=int, default=1, help="clips computed at once (output is identical)")
    ft.add_argument("--overwrite", action="store_true", help="replace what OUT holds")
    ft.add_argument("--no-progress", action="store_true", help="no progress bar")

    sy = sub.add_parser("synth", help="write the embedded demo dataset (csv recipe layout)",
                        epilog="example:\n  shardgen synth data/demo-src --seed 0 --num-clips 2000",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sy.add_argument("out", type=Path)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--num-clips", type=int, default=2000)
    sy.add_argument("--workers", type=int, default=2)

    mg = sub.add_parser("merge", help="write dataset.json from the part manifests of `pack --part I/N`",
                        epilog="examples:\n  shardgen merge data/esc50\n  shardgen merge s3://bucket/esc50\n"
                               "  shardgen merge out/ out/.parts/part-0001-of-0002.json out/.parts/part-0002-of-0002.json",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    mg.add_argument("out", help="the OUT every part was packed into (folder or bucket URL)")
    mg.add_argument("manifests", nargs="*", help="part manifests (default: every OUT/.parts/part-*.json)")
    mg.add_argument("--keep-parts", action="store_true", help="keep OUT/.parts after merging")
    mg.add_argument("--plot", type=Path, metavar="PNG", help="write a PNG of the shard sizes and the class counts by split")

    sub.add_parser("recipes", help="list recipes and their expected layouts",
                   description="List every dataset recipe with the layout it expects (one line each).",
                   epilog="examples:\n  shardgen recipes\n"
                          "  shardgen pack --recipe esc50 --help      # one recipe's layout and options\n",
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    return p


def _part(text: str) -> tuple[int, int]:
    from .plan import parse_part

    try:
        return parse_part(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _pack_dask(args: argparse.Namespace, source, opts) -> object:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("--engine dask needs Dask: pip install 'wds-audio[distributed]'") from None
    from .parts import pack_parts

    if args.scheduler:
        client, cluster = Client(args.scheduler), None
    else:
        cluster = LocalCluster(n_workers=max(1, args.workers), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        parts = args.parts or 2 * workers
        print(f"dask: {workers} worker(s) at {client.scheduler.address}, {parts} part(s)", file=sys.stderr)
        one = type(opts)(**{**opts.__dict__, "workers": 1})  # the engine's workers are the parallelism
        return pack_parts(source, args.out, one, parts=parts, executor=client.get_executor())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def cmd_merge(args: argparse.Namespace) -> int:
    from .parts import merge
    from .writer import PackError

    try:
        m, problems = merge(args.out, args.manifests or None, keep_parts=args.keep_parts)
    except PackError as e:
        print(f"shardgen merge: error: {e}", file=sys.stderr)
        return 2
    shards = sum(len(sp["shards"]) for sp in m["splits"].values())
    clips = sum(sp["samples"] for sp in m["splits"].values())
    print(f"merged {m['name']!r}: {clips} clips in {shards} shards -> {args.out.rstrip('/')}/dataset.json"
          + (f" ({len(problems)} skipped input(s) listed there)" if problems else ""))
    if args.plot:
        _plot_pack(m, args.plot, None)
    return 0


def _plot_pack(manifest: dict, path: Path, max_shard_bytes: int | None) -> None:
    from .stats import plot_pack

    plot_pack(manifest, path, max_shard_bytes)
    print(f"shard sizes and class counts chart: {path}")


def cmd_pack(args: argparse.Namespace) -> int:
    import functools

    from .recipes._common import summarize
    from .writer import PackError, PackOptions, pack

    recipe = recipes.get(args.recipe)
    ropts = {d: getattr(args, d) for d in args.recipe_dests}
    on_error = "raise" if args.strict else (args.on_error or recipe.DEFAULT_ON_ERROR)
    try:
        opts = PackOptions(sample_rate=args.sample_rate, codec=args.codec, channels=args.channels,
                           max_shard_bytes=args.max_shard_bytes, max_shard_samples=args.max_shard_samples,
                           workers=args.workers, on_error=on_error, resume=args.resume,
                           overwrite=args.overwrite, progress=not args.no_progress)
        if args.plot and args.pack_part:
            raise ValueError("--plot with --part: a part sees only its own shards; pass --plot to `shardgen merge`")
        if args.engine == "dask":
            if args.pack_part:
                raise ValueError("--part and --engine dask exclude each other: the engine runs every part")
            result = _pack_dask(args, functools.partial(recipe.load, args.src, **ropts), opts)
        else:
            if args.scheduler or args.parts:
                raise ValueError("--scheduler and --parts need --engine dask")
            collection = recipe.load(args.src, **ropts)
            result = pack(collection, args.out, opts, part=args.pack_part)
    except (RecipeError, PackError, ValueError) as e:
        print(f"shardgen pack: error: {e}", file=sys.stderr)
        return 2
    m = result.manifest
    if args.pack_part:
        i, n = args.pack_part
        print(f"\npacked part {i}/{n} of {m['header']['name']!r} -> {args.out} in {result.seconds:.1f} s "
              f"({result.encoded_clips / max(result.seconds, 1e-9):.1f} clips/s, {result.shards_written} shard(s) "
              f"written, {result.kept_shards} kept); when all {n} parts are done: shardgen merge {args.out}")
        return 0
    print(f"\npacked {m['name']!r} -> {args.out} in {result.seconds:.1f} s "
          f"({result.encoded_clips / max(result.seconds, 1e-9):.1f} clips/s, "
          f"{result.encoded_bytes / 1e6 / max(result.seconds, 1e-9):.1f} MB/s encoded"
          f"{f', {result.kept_shards} shard(s) kept from the interrupted run' if result.kept_shards else ''})")
    for name, sp in m["splits"].items():
        print(f"  {name:>10}: {sp['samples']:7d} clips  {len(sp['shards']):4d} shards  "
              f"{sp['bytes'] / 1e6:9.1f} MB  {sp['duration'] / 3600:7.2f} h  folds {sp['folds'] or '-'}")
    if result.problems:
        print(f"skipped {len(result.problems)} input(s) (listed in dataset.json 'skipped'):")
        print(summarize(result.problems))
    if args.plot:
        _plot_pack(m, args.plot, args.max_shard_bytes)
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from .features import FeatureOptions, make_features, summary
    from .writer import PackError

    try:
        opts = FeatureOptions(kind=args.features, sample_rate=args.sample_rate, n_fft=args.n_fft,
                              win_length=args.win_length, hop_length=args.hop_length, n_mels=args.n_mels,
                              f_min=args.f_min, f_max=args.f_max, mel_scale=args.mel_scale,
                              keep_audio=not args.drop_audio, splits=args.splits, overwrite=args.overwrite,
                              threads=args.threads, progress=not args.no_progress)
        result = make_features(args.dataset, args.out, opts)
    except (PackError, ValueError) as e:
        print(f"shardgen features: error: {e}", file=sys.stderr)
        return 2
    print(summary(result, args.out))
    return 0


def cmd_recipes() -> int:
    for name, module in recipes.available().items():
        print(f"{name:16s} {module.DESCRIPTION}")
        doc = (module.__doc__ or "").strip().split("\n", 1)
        if len(doc) > 1:
            print(textwrap.indent(doc[1].strip(), " " * 4))
        print()
    return 0


def _recipe_in(argv: list[str]) -> str | None:
    """The value of `pack --recipe NAME` / `--recipe=NAME`, found before argparse runs."""
    if argv[:1] != ["pack"]:
        return None
    for i, a in enumerate(argv):
        if a == "--recipe" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--recipe="):
            return a.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    recipe = _recipe_in(argv)
    if recipe is not None and recipe not in recipes.available():
        print(f"shardgen pack: error: unknown recipe {recipe!r}; see `shardgen recipes`", file=sys.stderr)
        return 2
    args = _parser(recipe).parse_args(argv)
    if args.command == "pack":
        return cmd_pack(args)
    if args.command == "merge":
        return cmd_merge(args)
    if args.command == "features":
        return cmd_features(args)
    if args.command == "verify":
        from .verify import verify
        problems = verify(args.dataset, decode=not args.no_decode)
        return 1 if problems else 0
    if args.command == "stats":
        from .stats import run_stats
        return run_stats(args)
    if args.command == "synth":
        from .synth import synthesize
        out = synthesize(args.out, num_clips=args.num_clips, seed=args.seed, workers=args.workers)
        print(f"wrote {args.num_clips} clips + background noise to {out} (csv recipe layout: metadata.csv)")
        return 0
    return cmd_recipes()


if __name__ == "__main__":
    sys.exit(main())
