"""The ``recpack`` command: thin handlers that parse arguments and call the library.

User errors (``RecpackError``) print one line, ``recpack: error: ...``, and
exit with status 1; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ._version import __version__
from .errors import RecpackError
from .format import manifest as mf
from .storage.urls import location


def _check_root(source) -> None:
    """A list whose relative paths lie under a folder that is not there is one line, not every file a bad input."""
    keys = getattr(source, "keys", ())
    if not os.path.isdir(source.root) and any(not os.path.isabs(key) for key in keys):
        raise RecpackError(f"{source.root}: no such folder, and the list's paths are relative to it "
                           "(set it with --root, or the list's '# root:' first line)")


def _cmd_pack(args: argparse.Namespace) -> int:
    from .pack.archive import open_input
    from .pack.packer import pack
    from .pack.plan import PackOptions
    from .pack.prepare import PrepareOptions

    if args.shard_range is not None:
        return _cmd_pack_range(args)
    if args.out is None:
        raise RecpackError("recpack pack needs SOURCE and OUT (or OUT alone with --shard-range A:B)")
    out = location(args.out, write=True)  # before any work: a URL recpack cannot write is one line, no folder
    source = open_input(args.source, args.root)
    if not args.engine:  # (an engine's driver may well lack the folder its executors read)
        _check_root(source)
    options = PackOptions(
        shards=args.shards,
        seed=args.seed,
        workers=args.workers,
        prepare=PrepareOptions(check=args.check, resize=args.resize, quality=args.quality),
        strict=args.strict,
        overwrite=args.overwrite,
        fsync=not args.no_fsync,
        order=args.order,
        spill_dir=args.spill_dir,
        spill_memory=args.spill_memory << 20,
        device_reads=not args.no_device_reads,
    )
    if args.engine:
        result = _pack_on_engine(args, source, out, options)
    elif out.is_remote:
        from .pack.upload import pack_to_url

        result, _ = pack_to_url(source, out, options, args.staging, show_progress=not args.quiet)
    else:
        result = pack(source, out.root, options, show_progress=not args.quiet)
    seconds = max(result.seconds, 1e-9)
    rates = (f": {result.processed / seconds:.0f} images/s, {result.bytes_in / 1e6 / seconds:.0f} MB/s read"
             if result.processed else " (no input read by this run: the interrupted run had read them)")
    print(f"packed {_count(result.records, 'image')} into {_count(result.shards, 'shard')} in {out} "
          f"({result.bytes_out / 1e6:.1f} MB) in {result.seconds:.1f} s{rates}")
    if (empty := result.shards - result.records) > 0:
        print(f"note: {empty} of the {result.shards} shards {'is' if empty == 1 else 'are'} empty: "
              "fewer good images than --shards")
    if result.resumed_shards:
        print(f"resumed: kept {_count(result.resumed_shards, 'finished shard')} from the interrupted run")
    if result.reencoded:
        print(f"converted {_count(result.reencoded, 'image')} (non-JPEG, CMYK, rotated or resized: re-encoded; "
              "grayscale: colour added losslessly)")
    if result.skipped:
        print(f"skipped {_count(result.skipped, 'bad input')}: "
              f"see {out.join(mf.REPORT_NAME)}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# --- packing in steps a scheduler drives: plan, shard ranges, commit; or all three on Spark or Ray ---

def _shared_folder(out, what: str) -> str:
    if out.is_remote:
        raise RecpackError(f"{out}: {what} writes into a folder every task reaches (a shared filesystem), "
                           "not a URL; pack into one, then copy it (or pack without --engine to upload)")
    return out.root


def _pack_on_engine(args: argparse.Namespace, source, out, options):
    from .pack.archive import ArchiveSource
    from .pack.engines import engine_conf, pack_on_engine

    if isinstance(source, ArchiveSource):
        raise RecpackError(f"{args.source}: --engine packs lists and image folders; pack archives without it "
                           "(or list their members into files first)")
    return pack_on_engine(source, _shared_folder(out, "--engine"), options, args.engine,
                          engine_conf(args.engine_conf), args.shards_per_task)


def _cmd_plan(args: argparse.Namespace) -> int:
    from .pack.plan import PackOptions
    from .pack.prepare import PrepareOptions
    from .pack.sources import open_source
    from .pack.stored_plan import plan

    out = _shared_folder(location(args.out, write=True), "recpack plan")
    source = open_source(args.source, args.root)
    options = PackOptions(shards=args.shards, seed=args.seed, strict=args.strict, overwrite=args.overwrite,
                          fsync=not args.no_fsync,
                          prepare=PrepareOptions(check=args.check, resize=args.resize, quality=args.quality))
    print_hash = plan(source, out, options)
    print(f"planned {_count(len(source), 'image')} into {_count(args.shards, 'shard')} in {out} (plan {print_hash[:12]}); "
          f"next: recpack pack {out} --shard-range A:B for every range of 0:{args.shards}, then recpack commit {out}")
    return 0


def _cmd_pack_range(args: argparse.Namespace) -> int:
    from .pack.shard_range import pack_range, parse_range
    from .pack.stored_plan import StoredPlan

    if args.out is not None:
        raise RecpackError("with --shard-range give OUT alone: the plan in it (recpack plan) holds the list and options")
    out = _shared_folder(location(args.source, write=True), "--shard-range")
    first, stop = parse_range(args.shard_range, StoredPlan.open(out).shards)
    result = pack_range(out, first, stop, workers=args.workers or os.cpu_count() or 1, show_progress=not args.quiet)
    kept = f"; {_count(len(result.kept), 'shard')} already finished" if result.kept else ""
    print(f"wrote {_count(len(result.written), 'shard')} of {first}:{stop} in {out} ({result.images} images read){kept}")
    return 0


def _cmd_commit(args: argparse.Namespace) -> int:
    from .pack.commit import commit

    out = _shared_folder(location(args.out, write=True), "recpack commit")
    result = commit(out, fsync=not args.no_fsync)
    print(f"committed {_count(result.records, 'image')} in {_count(result.shards, 'shard')} to {out} "
          f"({result.bytes_out / 1e6:.1f} MB) in {result.seconds:.1f} s")
    if result.skipped:
        print(f"skipped {_count(result.skipped, 'bad input')}: see {os.path.join(out, mf.REPORT_NAME)}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .pack.archive import holds_archives_only, is_archive, list_members, open_archives
    from .pack.sources import ROOT_COMMENT, format_lst_line, scan_image_folder

    path = args.directory
    if is_archive(path) or (os.path.isdir(path) and holds_archives_only(path)):
        list_members(open_archives(path), sys.stdout)
        return 0
    source = scan_image_folder(path)
    sys.stdout.write(f"{ROOT_COMMENT}{source.root}\n")
    sys.stdout.writelines(format_lst_line(index, item) for index, item in enumerate(source))
    return 0


def _info_json(dataset: str) -> dict:
    from .storage.datasets import load_manifest

    where = location(dataset)
    manifest = load_manifest(where)
    return {
        "path": str(where) if where.is_remote else os.path.abspath(where.root),
        "num_records": manifest.num_records,
        "num_shards": manifest.num_shards,
        "bytes": sum(shard.rec.bytes for shard in manifest.shards),
        "label_width": manifest.label_width,
        "has_masks": manifest.has_masks,
        "classes": list(manifest.classes) if manifest.classes is not None else None,
        "shards": [{"name": s.stem, "records": s.records, "bytes": s.rec.bytes} for s in manifest.shards],
        "created": manifest.created,
        "stats": manifest.stats,
    }


def _cmd_info(args: argparse.Namespace) -> int:
    info = _info_json(args.dataset)
    if args.json:
        json.dump(info, sys.stdout, indent=1)
        print()
        return 0
    records = [shard["records"] for shard in info["shards"]]
    print(f"dataset   {info['path']}")
    print(f"records   {info['num_records']} in {_count(info['num_shards'], 'shard')} ({min(records)}-{max(records)} per shard)")
    print(f"size      {info['bytes'] / 1e6:.1f} MB ({info['bytes'] / max(info['num_records'], 1) / 1e3:.1f} KB per record)")
    print(f"labels    {info['label_width']} per record{', with segmentation masks' if info['has_masks'] else ''}")
    if info["classes"]:
        shown = ", ".join(info["classes"][:10]) + (", ..." if len(info["classes"]) > 10 else "")
        print(f"classes   {len(info['classes'])}: {shown}")
    created = info["created"]
    if created.get("imported"):
        print(f"imported  from {', '.join(created.get('source', []))} on {created.get('date')}")
    elif created:
        print(f"made from {created.get('source')} (seed {created.get('seed')}, check {created.get('check')}, "
              f"{_resize_shown(created.get('resize'))}{created.get('skipped', 0)} skipped) on {created.get('date')}")
    if info["stats"]:
        from .measure.stats.summary import describe

        for i, line in enumerate(describe(info["stats"])):
            print(f"{'stats' if i == 0 else '':10s}{line}")
    else:
        print("stats     none yet: recpack stats computes them (normalize=True uses ImageNet's until then)")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    _local_only(args.dataset, "recpack stats writes its results into the manifest")
    from .measure.stats.run import StatsOptions, run
    from .measure.stats.summary import describe

    options = StatsOptions(sample=args.sample, seed=args.seed, mean_size=args.mean_size or None,
                           ignore_index=args.ignore_index, workers=args.workers, progress=not args.quiet)
    if args.plot:
        from .measure.stats.plot import check_destination

        check_destination(args.plot)
    result = run(args.dataset, options)
    manifest_path = os.path.join(args.dataset, mf.MANIFEST_NAME)
    unsaved = (f"not written to {manifest_path}: it holds a full pass's statistics, which a sample does not "
               "replace (recpack info shows them)")
    lines = describe(result.stats)
    if args.plot:
        from .measure.stats.plot import write_report

        write_report(args.plot, result.stats, result.mean_image, lines, mf.load(args.dataset).classes)
    if args.json:
        json.dump(result.stats, sys.stdout, indent=1)
        print()
        if not result.saved:
            print(f"recpack stats: {unsaved}", file=sys.stderr)
        return 0
    computed, failed = result.stats["computed"], result.stats["failed"]
    print("\n".join(lines))
    for name in failed["records"][:5]:
        print(f"failed {name}")
    if failed["count"] > 5:
        print(f"failed ... {failed['count'] - 5} more (recpack stats --json names up to {len(failed['records'])})")
    took = f"{result.seconds:.1f} s ({computed['images_per_s']:,.0f} images/s)"
    report = f"; report {args.plot}" if args.plot else ""
    print(f"written to {manifest_path} in {took}{report}" if result.saved else f"{unsaved}; {took}{report}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .read.verify import verify_dataset

    from .storage.datasets import load_manifest

    problems = list(verify_dataset(args.dataset, show_progress=not args.quiet))
    for problem in problems:
        print(f"recpack: corrupt: {problem}", file=sys.stderr)
    if problems:
        return 1
    manifest = load_manifest(args.dataset)
    print(f"ok: {_count(manifest.num_records, 'record')} in {_count(manifest.num_shards, 'shard')}, every checksum matches")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .pack.importer import import_rec

    manifest = import_rec(args.rec, args.out, show_progress=not args.quiet)
    print(f"imported {manifest.num_records} records from {manifest.num_shards} .rec files into {args.out} "
          "(the .rec files were read, not copied or changed)")
    return 0


def _local_only(dataset: str, why: str) -> None:
    if location(dataset).is_remote:
        raise RecpackError(f"{location(dataset)}: {why}, which needs the dataset in a local folder: copy it there first")


def _cmd_get(args: argparse.Namespace) -> int:
    _local_only(args.dataset, "recpack get reads the key index (an LMDB database)")
    from .format import keyindex
    from .read.verify import keyed_payload

    manifest = mf.load(args.dataset)
    found = keyindex.lookup(args.dataset, args.key)
    root = manifest.created.get("root")
    if found is None and root and os.path.exists(args.key):
        found = keyindex.lookup(args.dataset, os.path.relpath(os.path.abspath(args.key), root))
    if found is None:
        raise RecpackError(f"{args.dataset}: no record has the key {args.key!r}")
    payload = keyed_payload(args.dataset, manifest, args.key, found)
    _write_output(args.output, payload.image)
    if args.mask_output:
        if not len(payload.mask):
            raise RecpackError(f"{args.key}: this record has no mask")
        _write_output(args.mask_output, payload.mask)
    return 0


def _write_output(path: str, data) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        return
    with open(path, "wb") as handle:
        handle.write(data)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .measure import bench

    if args.dataset is None and not args.model:
        raise RecpackError("give a dataset to measure, or --model for the I/O model's table alone")
    if args.model:
        text, data = bench.model_only(args.dataset, args.images, args.kb, args.decode_per_core, args.cores,
                                      args.seq_mb_s, args.iops, args.ios_per_file)
    else:
        options = bench.BenchOptions(
            stages=tuple(args.stages.split(",")), limit=args.limit, threads=args.threads, workers=args.workers,
            batch_size=args.batch_size, size=args.size, cold=args.cold, vs_files=args.vs_files, root=args.root,
            seed=args.seed, ios_per_file=args.ios_per_file, progress=not args.quiet, hdd=_hdd(args),
        )
        report = bench.run(args.dataset, options)
        text, data = bench.format_report(report), report.as_dict()
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        print()
    else:
        print(text)
    return 0


def _resize_shown(resize) -> str:
    """How the info line names a pack's --resize: nothing when the images were stored as they came."""
    return "" if resize is None else f"resize {resize}, "


def _hdd(args: argparse.Namespace):
    """The simulated disk of ``--hdd`` (its own figures imply it), or None."""
    if not (args.hdd or args.hdd_iops or args.hdd_mb_s):
        return None
    from .measure.throttle import Throttle

    return Throttle(args.hdd_iops or Throttle.iops, args.hdd_mb_s or Throttle.mb_s)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but a bad argument is one line (the error and where help is), not the usage block too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recpack",
        description="Pack image datasets into shuffled, sequentially read RecordIO shards; read, check and measure them.",
    )
    parser.add_argument("--version", action="version", version=f"recpack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    pack = commands.add_parser("pack", help="shuffle an image list once and write sharded RecordIO files")
    pack.add_argument("source", help="list file (path<TAB>label, 'path label', or im2rec .lst), ImageFolder directory, "
                      "tar archive (.tar, .tar.gz: class folders or per-class tars inside) or folder of tars")
    pack.add_argument("out", nargs="?", help="output dataset folder, or a URL (s3://bucket/prefix, gs://...)")
    pack.add_argument("--shards", type=_positive, default=64, help="number of shards (default 64)")
    pack.add_argument("--workers", type=_positive, default=None, help="worker processes (default: all cores)")
    pack.add_argument("--seed", type=_non_negative, default=0, help="shuffle seed (default 0: reruns are byte-identical)")
    pack.add_argument("--root", default=None,
                      help="folder that relative list paths are under (default: a '# root: DIR' first line, else the list's folder)")
    pack.add_argument("--check", choices=("decode", "header"), default="decode",
                      help="decode: check that every block of every JPEG parses (default); header: check markers only, faster")
    pack.add_argument("--resize", type=_positive, default=None, metavar="SHORTER_SIDE",
                      help="shrink images whose shorter side is larger, re-encoding them")
    pack.add_argument("--quality", type=_quality, default=95, help="JPEG quality where images are re-encoded (default 95)")
    pack.add_argument("--strict", action="store_true", help="fail the pack on the first bad input")
    pack.add_argument("--overwrite", action="store_true", help="replace a complete dataset already in OUT")
    pack.add_argument("--no-fsync", action="store_true",
                      help="skip the final fsync: faster, but a power cut soon after may lose the dataset")
    pack.add_argument("--order", choices=("auto", "list", "disk"), default="auto",
                      help="read inputs in list order, or in disk order into spill files then write the shards "
                      "(same bytes); auto (default): disk for archives, and for lists not in the page cache on a disk "
                      "that says it rotates")
    pack.add_argument("--spill-dir", default=None,
                      help="where disk order parks prepared records (default: in memory when they fit in half the "
                      "available memory, else inside OUT); another disk is faster")
    pack.add_argument("--spill-memory", type=_positive, default=1024, metavar="MB",
                      help="MB of spill each worker maps at a time when writing shards in disk order (default 1024)")
    pack.add_argument("--no-device-reads", action="store_true",
                      help="in disk order, read every file through the filesystem (by default, as root, files on "
                      "ext4 that are not in the page cache are read from the disk device, many to a request)")
    pack.add_argument("--staging", default=None, metavar="DIR",
                      help="OUT is a URL: pack in a folder under DIR, then upload (default: the temporary folder)")
    pack.add_argument("--quiet", action="store_true", help="no progress bar")
    steps = pack.add_argument_group("packing in steps or on an engine (see recpack plan, recpack commit)")
    steps.add_argument("--shard-range", default=None, metavar="A:B",
                       help="recpack pack OUT --shard-range A:B: write shards A..B-1 of the plan in OUT "
                       "(any attempt writes the same bytes: retries and duplicates are harmless)")
    steps.add_argument("--engine", choices=("spark", "ray"), default=None,
                       help="plan here, write the shards as PySpark or Ray tasks (the engine's retries), commit here")
    steps.add_argument("--engine-conf", action="append", default=[], metavar="KEY=VALUE",
                       help="passed to the engine: Spark config (spark.master=local[2,3]); ray.init arguments "
                       "(address=auto, num_cpus=2) and task.OPTION for Ray's tasks (task.max_retries=5); repeatable")
    steps.add_argument("--shards-per-task", type=_positive, default=1, help="shards each engine task writes (default 1)")
    pack.set_defaults(handler=_cmd_pack)

    planning = commands.add_parser("plan", help="shuffle a list once and write the pack's plan into OUT, "
                                   "for recpack pack OUT --shard-range A:B tasks and recpack commit")
    planning.add_argument("source", help="list file or ImageFolder directory (as for recpack pack)")
    planning.add_argument("out", help="output dataset folder, reached by every task at the same path")
    planning.add_argument("--shards", type=_positive, default=64, help="number of shards (default 64)")
    planning.add_argument("--seed", type=_non_negative, default=0, help="shuffle seed (default 0)")
    planning.add_argument("--root", default=None, help="folder that relative list paths are under (as for pack)")
    planning.add_argument("--check", choices=("decode", "header"), default="decode", help="as for recpack pack")
    planning.add_argument("--resize", type=_positive, default=None, metavar="SHORTER_SIDE", help="as for recpack pack")
    planning.add_argument("--quality", type=_quality, default=95, help="as for recpack pack")
    planning.add_argument("--strict", action="store_true", help="a bad input fails its shard's task")
    planning.add_argument("--overwrite", action="store_true", help="replace a complete dataset already in OUT")
    planning.add_argument("--no-fsync", action="store_true", help="do not fsync the plan")
    planning.set_defaults(handler=_cmd_plan)

    committing = commands.add_parser("commit", help="publish OUT once every shard of its plan is written: checks "
                                     "every shard, builds the key index, writes the manifest last")
    committing.add_argument("out", help="the dataset folder holding the plan and the shards")
    committing.add_argument("--no-fsync", action="store_true", help="skip the fsync before the manifest")
    committing.set_defaults(handler=_cmd_commit)

    listing = commands.add_parser("list", help="print an im2rec-style .lst for an ImageFolder directory or a tar archive")
    listing.add_argument("directory", help="an ImageFolder tree (DIR/<class>/<image>), a tar archive or a folder of tars")
    listing.set_defaults(handler=_cmd_list)

    info = commands.add_parser("info", help="counts, sizes, classes and provenance of a dataset")
    info.add_argument("dataset")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=_cmd_info)

    verify = commands.add_parser("verify", help="check framing and every checksum")
    verify.add_argument("dataset")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(handler=_cmd_verify)

    adopt = commands.add_parser("import", help="index existing MXNet .rec files into a dataset, without rewriting them")
    adopt.add_argument("rec", nargs="+", help=".rec files or folders of them (an .idx beside a .rec is checked)")
    adopt.add_argument("out", help="folder for the manifest and record indexes; it points at the .rec files")
    adopt.add_argument("--quiet", action="store_true", help="no progress bar")
    adopt.set_defaults(handler=_cmd_import)

    get = commands.add_parser("get", help="extract one image by its source key")
    get.add_argument("dataset")
    get.add_argument("key", help="the image path as written in the source list")
    get.add_argument("-o", "--output", default="-", help="where to write the image (default: stdout)")
    get.add_argument("--mask-output", default=None, help="also write the record's mask here")
    get.set_defaults(handler=_cmd_get)

    bench = commands.add_parser("bench", help="measure read, CRC, decode and DataLoader speed; predict epoch times")
    bench.add_argument("dataset", nargs="?", help="a packed dataset (optional with --model)")
    bench.add_argument("--stages", default="raw,crc,decode,loader", type=_bench_stages,
                       help="comma-separated subset of raw,crc,decode,loader (default: all)")
    bench.add_argument("--limit", type=_positive, default=None, help="records per stage (default: the whole dataset)")
    bench.add_argument("--threads", type=_positive, default=None, help="decode threads of the decode stage (default: cores)")
    bench.add_argument("--workers", type=_positive, default=None,
                       help="DataLoader workers, and concurrent reads with --vs-files (default: cores)")
    bench.add_argument("--batch-size", type=_positive, default=256)
    bench.add_argument("--size", type=_positive, default=224, help="crop size of the decode stages (default 224)")
    bench.add_argument("--cold", action="store_true", help="evict the files from the page cache before each stage")
    bench.add_argument("--vs-files", default=None, metavar="LIST",
                       help="also read these images (list or ImageFolder) as individual files in shuffled order")
    bench.add_argument("--root", default=None, help="folder that relative --vs-files paths are under")
    bench.add_argument("--seed", type=_non_negative, default=0)
    bench.add_argument("--json", action="store_true", help="one JSON document with every figure")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.add_argument("--model", action="store_true", help="only print the I/O model's epoch-time table")
    bench.add_argument("--images", type=_positive, default=None, help="model: images per epoch (default: the dataset's, else ImageNet-21k's 14.2M)")
    bench.add_argument("--kb", type=float, default=None, help="model: mean image size in KB (default: the dataset's, else 110)")
    bench.add_argument("--seq-mb-s", type=float, default=None, help="model: your disk's sequential MB/s (with --iops)")
    bench.add_argument("--iops", type=float, default=None, help="model: your disk's random reads per second")
    bench.add_argument("--decode-per-core", type=float, default=None, help="model: images decoded per second per core")
    bench.add_argument("--cores", type=_positive, default=None, help="model: cores decoding (default: this machine's)")
    bench.add_argument("--ios-per-file", type=float, default=1.0,
                       help="model: random reads per individual file (1: metadata cached; 2-3: cold inodes/dirs)")
    bench.add_argument("--hdd", action="store_true",
                       help="run the stages cold on a simulated hard drive (a cgroup block-I/O throttle on the "
                            "dataset's disk; needs root) and check the model's HDD row against them")
    bench.add_argument("--hdd-iops", type=_positive, default=None, metavar="N",
                       help="--hdd: read I/Os per second (default 110)")
    bench.add_argument("--hdd-mb-s", type=_positive, default=None, metavar="M",
                       help="--hdd: read MB per second (default 170)")
    bench.set_defaults(handler=_cmd_bench)

    stats = commands.add_parser("stats", help="per-channel mean/std, sizes, classes, mask class weights: into the manifest")
    stats.add_argument("dataset")
    stats.add_argument("--sample", type=_positive, default=None, metavar="N",
                       help="estimate from N records drawn at random, with 95%% confidence intervals (default: every record)")
    stats.add_argument("--seed", type=_non_negative, default=0, help="the sample's seed (default 0)")
    stats.add_argument("--mean-size", type=_non_negative, default=224, metavar="SIDE",
                       help="side of the average image (each image squashed to SIDE x SIDE; default 224, 0: none)")
    stats.add_argument("--ignore-index", type=_mask_value, default=None, metavar="VALUE",
                       help="a mask value left out of the class counts and weights (e.g. 255)")
    stats.add_argument("--workers", type=_positive, default=None, help="worker processes (default: all cores)")
    stats.add_argument("--plot", default=None, metavar="PNG", help="also draw a report picture (needs matplotlib)")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.add_argument("--quiet", action="store_true", help="no progress bar")
    stats.set_defaults(handler=_cmd_stats)
    return parser


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def _non_negative(text: str) -> int:
    return _whole_number(text, 0)


def _positive(text: str) -> int:
    return _whole_number(text, 1)


def _quality(text: str) -> int:
    value = _positive(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, not {value}")
    return value


def _mask_value(text: str) -> int:
    value = _non_negative(text)
    if value > 255:
        raise argparse.ArgumentTypeError(f"must be a mask value between 0 and 255, not {value}")
    return value


def _bench_stages(text: str) -> str:
    unknown = set(text.split(",")) - {"raw", "crc", "decode", "loader"}
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {', '.join(sorted(unknown))}")
    return text


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.command == "pack" and args.out is not None and not args.out.strip():
        parser.error("OUT is empty: name the output dataset folder")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(args, parser)
    try:
        return args.handler(args)
    except RecpackError as error:
        print(f"recpack: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("recpack: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `recpack info ... | head`
        return 0
    except OSError as error:  # the machine said no (permissions, a missing folder, a full disk): one line too
        where = f"{error.filename}: " if error.filename else ""
        print(f"recpack: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
