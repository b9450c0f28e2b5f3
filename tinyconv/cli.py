"""The `tinyconv` command. Each subcommand parses its arguments and calls one library function;
the notebooks call the same functions. TensorFlow is imported only by the subcommands that need it: the
modules imported at the top here do not import it, so `tinyconv --help` and `tinyconv download` start fast.

Expected failures raise TinyconvError: printed as one line `tinyconv: error: ...` (a line per problem when it
lists several, as verify's does), exit status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tinyconv import __version__, fileio, runtime
from tinyconv.data.dataset import (
    SPLITS,
    VERIFY_MAX_PROBLEMS,
    cache_dir,
    default_data_dir,
    format_summary,
    prepare,
    verify,
)
from tinyconv.data.download import download_dataset
from tinyconv.errors import TinyconvError
from tinyconv.model.config import PRESETS
from tinyconv.study.runner import check_notebooks, remake_command, run_notebooks
from tinyconv.training.overrides import parse_overrides, recipe_flags
from tinyconv.training.recipe import PROFILES
from tinyconv.runtime import quiet_tensorflow


def _data_dir(args) -> Path:
    return Path(args.data_dir) if args.data_dir else default_data_dir()


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _require_model(path) -> None:
    """A model path that names nothing is one line at once, before TensorFlow is imported (4-6 s on 2 CPU cores):
    the library says the same when it loads a model (tinyconv.deploy.inference), for its own callers."""
    if not Path(path).exists():
        raise TinyconvError(f"{path}: no such model file")


# argparse types for numeric flags: nonsense (0 steps, a negative time limit, NaN) is refused in one line by
# argparse itself (`tinyconv CMD: error: argument --flag: ...`, exit 2) instead of running with a silent meaning


def positive_int(text: str) -> int:
    """An integer >= 1 (a count: steps, images, MiB, a process id)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _number(text: str, ok, words: str) -> float:
    """`text` as a float that satisfies `ok`, else argparse's one-line refusal ("must be <words>, got ...")."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not ok(value):  # NaN fails every comparison, so no `ok` takes it
        raise argparse.ArgumentTypeError(f"must be {words}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a duration)."""
    return _number(text, lambda value: 0 < value < math.inf, "a number > 0")


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    return _number(text, lambda value: 0.0 <= value <= 1.0, "a number in [0, 1]")


# ---------------------------------------------------------------------------------------------- data


def cmd_download(args) -> int:
    root = download_dataset(_data_dir(args), url=args.url, sha256=args.sha256, md5=args.md5)
    print(f"dataset ready at {root}")
    return 0


def cmd_verify(args) -> int:
    summary = verify(_data_dir(args))
    if args.json:
        _print_json(summary)
    else:
        print(format_summary(summary))
    return 0


def cmd_prepare(args) -> int:
    data_dir = _data_dir(args)
    splits = args.splits or SPLITS
    manifest = prepare(data_dir, force=args.force, splits=splits)
    cache = cache_dir(data_dir)
    for split, entry in manifest["splits"].items():
        if split in splits:  # the others cached before are left as they were
            print(f"{split}: {entry['count']} images cached in {cache / entry['images']}")
    return 0


def cmd_bench_data(args) -> int:
    from tinyconv.bench import bench_data  # imports TensorFlow (~3 s): only for this subcommand

    result = bench_data(
        _data_dir(args), batch_size=args.batch_size, seconds=args.seconds, compare_keras=args.compare_keras
    )
    if args.json:
        _print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:>32}: {value}")
    return 0


# --------------------------------------------------------------------------------------------- model


def cmd_info(args) -> int:
    from tinyconv.model.build import format_info, model_info  # builds the model: imports Keras (TensorFlow ~3 s)

    info = model_info(args.preset)
    if args.json:
        _print_json(info)
    else:
        print(format_info(info))
    return 0


def cmd_bench(args) -> int:
    if args.backend and args.backend != runtime.backend():
        return _rerun_with_backend(args.backend)
    from tinyconv.bench import bench_model  # imports the Keras backend (TensorFlow ~3 s): only for this subcommand

    result = bench_model(
        preset=args.preset,
        batch_size=args.batch_size,
        steps=args.steps,
        jit_compile=args.jit_compile,
        mixed_precision=runtime.precision_policy(args.mixed_precision),
    )
    if args.json:
        _print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


def _rerun_with_backend(backend: str) -> int:
    """This command again in a subprocess whose Keras backend is `backend` (a process has one backend)."""
    argv = [arg for arg in sys.argv[1:] if not arg.startswith("--backend")]
    if "--backend" in sys.argv:  # "--backend jax": drop its value too
        index = sys.argv.index("--backend")
        argv = sys.argv[1:index] + sys.argv[index + 2 :]
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.call([sys.executable, "-m", "tinyconv", *argv], env=env)


# ------------------------------------------------------------------------------------------ training


def train_overrides(args) -> dict:
    """The recipe fields `tinyconv train`'s flags set: --set and the per-field flags, --epochs, --batch-size, --classes."""
    overrides = parse_overrides(args.set or [])
    for name in ("epochs", "batch_size", "classes"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    return overrides


def train_request(flags: list[str]) -> tuple[str | None, str, dict]:
    """(preset, profile, overrides) of `tinyconv train FLAGS`, read as that command reads them: for a tool that builds
    the run's model without training it (benchmarks/gpu_profile.py --choose, given a GPU lease's train flags)."""
    args = parse_args(["train", *flags])
    return args.preset, args.profile, train_overrides(args)


def cmd_train(args) -> int:
    from tinyconv.training.train import train  # imports TensorFlow (~3 s): only for this subcommand

    metrics = train(
        preset=args.preset,
        profile=args.profile,
        data_dir=_data_dir(args),
        out=args.out,
        overrides=train_overrides(args),
        time_limit=args.time_limit,
        restart=args.restart,
    )
    if args.json:  # the "done: ..." line (or the time limit's) has said the rest; the file holds all of it
        _print_json(metrics)
    return 0


def cmd_sweep(args) -> int:
    from tinyconv.experiments.sweep import load_spec, run_sweep  # Ray is imported only once trials run

    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else Path("runs") / "sweeps" / Path(args.spec).stem
    run_sweep(spec, out, data_dir=_data_dir(args), address=args.address, num_cpus=args.num_cpus)
    return 0


def cmd_evaluate(args) -> int:
    from tinyconv.deploy.inference import evaluate, format_evaluation  # imports TensorFlow: only for this subcommand

    if args.localization:
        from tinyconv.study.localize import evaluate_localization, format_localization, load_localizable

        load_localizable(args.model, _data_dir(args))  # a model without a CAM head: one line now, not after minutes
    # minutes on 2 CPU cores: a bar per pass over val on stderr (stdout keeps the result, --json's included)
    result = evaluate(args.model, data_dir=_data_dir(args), tta=not args.no_tta, progress=True)
    if args.localization:
        result["localization"] = evaluate_localization(args.model, data_dir=_data_dir(args))
    if args.json:
        _print_json(result)
    else:
        print(format_evaluation(result))
        if args.localization:
            print(format_localization(result["localization"]))
    return 0


def cmd_localize(args) -> int:
    # Keras/TensorFlow and matplotlib: only for this subcommand
    from tinyconv.study.figures import plot_localization
    from tinyconv.fileio import check_writable, save_figure
    from tinyconv.study.localize import localize_images

    out = Path(args.out)
    check_writable(out, "the figures", folder=True)  # one line before the model loads, not a traceback after
    results = localize_images(args.model, args.images, data_dir=_data_dir(args), threshold=args.threshold,
                              resize=args.resize)
    out.mkdir(parents=True, exist_ok=True)
    for index, entry in enumerate(results):
        fig = plot_localization(entry["pixels"], entry["map"], entry["box"],
                                title=f"{entry['name']} ({entry['probability']:.0%})")
        target = out / f"{index:03d}_{Path(entry['image']).stem}_cam.png"
        save_figure(fig, target, dpi=100)
        print(f"{entry['image']}: {entry['name']} ({entry['wnid']}, {entry['probability']:.1%}), "
              f"box {entry['box']} -> {target}")
    return 0


def cmd_predict(args) -> int:
    from tinyconv.deploy.inference import format_predictions, predict  # imports TensorFlow: only for this subcommand

    result = predict(args.model, args.images, data_dir=_data_dir(args), top=args.top, skip_unreadable=True,
                     resize=args.resize)
    if args.json:
        _print_json(result)  # the skipped images too, as {"image", "error"} in their place
    elif any("error" not in entry for entry in result):
        print(format_predictions(result))
    unreadable = [entry["error"] for entry in result if "error" in entry]
    for error in unreadable:  # one bad image among many costs only its own prediction
        print(f"tinyconv: error: {error}", file=sys.stderr)
    return 1 if unreadable else 0


def cmd_export(args) -> int:
    from tinyconv.deploy.export import export_model, format_export  # imports TensorFlow: only for this subcommand

    # progress: each step on stderr (converting is silent for up to a minute), bars over val when it is measured
    report = export_model(args.model, args.format, out=args.out, quantize=args.quantize, data_dir=_data_dir(args),
                          val_accuracy=True if args.val_accuracy else None, force=args.force, progress=True)
    if args.json:
        _print_json(report)
    else:
        print(format_export(report))
    return 0


def cmd_notebooks(args) -> int:
    if args.check:
        stale = check_notebooks()
        for name, reason in stale.items():
            print(f"{name}: {reason}")
        if stale:
            print(f"{len(stale)} notebook(s) stale; {remake_command(list(stale))}")
            return 1
        print("every committed notebook's outputs come from this checkout's code and files")
        return 0
    run_notebooks(profile=args.profile, out=Path(args.out), data_dir=_data_dir(args), only=args.only)
    return 0


# ------------------------------------------------------------------------------------------- parser


def cmd_state(args) -> int:
    # stdlib only, but imported here so that `--help` never pays for it
    from tinyconv.training import run_state

    if args.action == "pack":
        manifest = run_state.pack_state(args.run, args.out, piece_bytes=args.piece_mib * 2**20)
    elif args.action == "watch":
        manifest = run_state.watch_state(args.run, args.out, args.pid, interval=args.interval,
                                         piece_bytes=args.piece_mib * 2**20)
        if manifest is None:
            print(f"state watch: process {args.pid} ended before any epoch of {args.run} was backed up; nothing packed")
            return 0
    elif args.action == "sessions":
        rows = run_state.session_rows(args.run)
        print(run_state.session_table(rows, _reference_top1(Path(args.run) / "config.json")))
        return 0
    elif args.action == "keep":
        manifest = run_state.keep_state(args.state, args.kept, args.run)
        where = (f"{args.kept} removed (the run is complete; config, history and metrics beside it)"
                 if manifest["complete"] else f"kept in {args.kept} (config and history beside it)")
        print(f"restored {args.run} at epoch {manifest['epoch']}; the state is {where}")
        if manifest["complete"]:  # the model a GPU lease trained exists only here now (docs/gpu.md, "When the run is done")
            print(f"its final model, with its class list: {Path(args.run) / 'model.keras'}")
        return 0
    else:
        manifest = run_state.restore_state(args.state, args.run)
        print(f"restored {args.run} at epoch {manifest['epoch']}{' (complete)' if manifest['complete'] else ''} "
              f"from {args.state}")
        return 0
    print(f"packed {args.run} at epoch {manifest['epoch']} into {args.out}: "
          + ", ".join(f"{piece['name']} ({piece['bytes']:,} bytes)" for piece in manifest["pieces"]))
    return 0


def _reference_top1(config_path: Path) -> dict[int, float] | None:
    """{epoch (1-based): the reference's val top-1} for a run comparable with it (its config.json's profile and
    class count; tinyconv.training.reference.comparable_with_reference), else None."""
    from tinyconv.training.reference import reference_curve_for

    try:
        doc = json.loads(config_path.read_text())
        rows = reference_curve_for(doc["profile"], len(doc["wnids"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {row["epoch"] + 1: row["val_top1"] for row in rows} if rows else None


# Not argparse choices: an unknown preset is reported by get_config as a one-line TinyconvError, exit 1.
_PRESETS_HELP = f"model preset: {', '.join(PRESETS)}"


# An argparse builder: one block per subcommand, long by nature.
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyconv",
        description="Train and study a convolution-only ConvMixer variant on Tiny ImageNet.",
    )
    parser.add_argument("--version", action="version", version=f"tinyconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    def resize_arg(p):
        # inference.RESIZE_MODES, written out: importing inference here would import TensorFlow for --help
        p.add_argument("--resize", choices=("crop", "squash"), default="crop",
                       help="how an image of another shape becomes the model's 64 x 64 square: crop (the default) "
                       "centre-crops it to a square, then resizes (keeps proportions; the sides of a wide or tall "
                       "photo are cut off); squash resizes the whole image (nothing cut off; a wide or tall photo "
                       "is distorted)")

    def data_dir_arg(p):
        p.add_argument(
            "--data-dir",
            metavar="DIR",
            help="folder that holds (or will hold) tiny-imagenet-200/ "
            "(default: $TINYCONV_DATA_DIR, else the repository's data/)",
        )

    p = add("download", cmd_download, "download, check and extract Tiny ImageNet (resumable)")
    p.add_argument("--url", help="URL or local path of the zip (default: $TINYCONV_DATA_URL, else the official URL)")
    checksum = p.add_mutually_exclusive_group()
    checksum.add_argument("--sha256", metavar="HEX", help="expected sha256 of the zip")
    checksum.add_argument("--md5", metavar="HEX", help="expected md5 of the zip (the official md5 by default)")
    data_dir_arg(p)

    p = add("verify", cmd_verify, "check layout, counts and that every image decodes (every problem is named, "
            f"one line each, the first {VERIFY_MAX_PROBLEMS} and how many more; exit status 1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    data_dir_arg(p)

    p = add("prepare", cmd_prepare, "decode every image once into a uint8 cache under the data dir (the splits "
            "already cached and current are kept as they are)")
    p.add_argument("--split", dest="splits", action="append", choices=SPLITS,
                   help="prepare only this split (repeat for several; default: train, val and test); `evaluate` and "
                        "the like prepare the split they need themselves")
    p.add_argument("--force", action="store_true", help="rebuild the splits even if they are current")
    data_dir_arg(p)

    p = add("bench-data", cmd_bench_data, "time a fresh prepare and the cached train pipeline")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per batch (default 128)")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="how long to time the pipeline (> 0)")
    p.add_argument(
        "--compare-keras",
        action="store_true",
        help="also time keras.utils.image_dataset_from_directory on train/ (decodes every epoch)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    data_dir_arg(p)

    p = add("info", cmd_info, "parameters, multiply-accumulates and receptive field of a preset")
    p.add_argument("preset", nargs="?", default="seed", help=f"{_PRESETS_HELP} (default: seed)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("bench", cmd_bench, "training and inference throughput on random data")
    p.add_argument("--preset", default="seed", help=f"{_PRESETS_HELP} (default: seed)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per step (default 64)")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps after warm-up")
    p.add_argument(
        "--jit-compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="XLA compilation of the train/infer step (auto: the fastest known setting for this device)",
    )
    p.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="off",
                   help="auto/on: bfloat16 under JAX, float16 under TensorFlow, on a capable GPU (default: off)")
    p.add_argument("--backend", choices=("tensorflow", "jax"),
                   help="the Keras backend to measure (default: this process's, $KERAS_BACKEND); another "
                        "one runs in a subprocess")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("train", cmd_train, "train a preset with a recipe profile; writes runs/NAME/ and resumes if killed")
    p.add_argument("--preset", default=None, help=f"{_PRESETS_HELP} (default: the profile's)")
    p.add_argument("--profile", default="quick", choices=list(PROFILES),
                   help="the recipe: reference (the reference notebook's, exactly), full (ours, 100 epochs), "
                   "quick (10 classes, minutes on a CPU), ci (seconds, for tests); default quick")
    p.add_argument("--epochs", type=int, help="epochs to train (default: the profile's)")
    p.add_argument("--batch-size", type=int, help="images per step, all devices together (default: the profile's)")
    p.add_argument("--classes", type=int, help="train on the first K classes of wnids.txt")
    p.add_argument("--out", help="run folder (default: <preset>-<profile> in $TINYCONV_RUNS_ROOT, else in the "
                   "repository's runs/)")
    p.add_argument("--json", action="store_true", help="print the run's metrics as one JSON object at the end "
                   "(they are in RUN/metrics.json in any case)")
    p.add_argument("--restart", action="store_true",
                   help="train the run folder's run again from epoch 1 (e.g. when its resume state is damaged); "
                   "its models, history and figures are deleted once the data has loaded")
    p.add_argument("--time-limit", type=positive_float, metavar="MINUTES",
                   help="stop at the last epoch end within MINUTES (> 0) of training; the run stays resumable "
                   "(default: no limit)")
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override any recipe field, e.g. --set lr=1e-3 --set mix_prob=0 (repeatable); "
        "--lr 1e-3 --mix-prob 0 works too, for every field of tinyconv.training.recipe.TrainConfig",
    )
    data_dir_arg(p)

    p = add("sweep", cmd_sweep, "train every trial of a sweep file on Ray Tune (resumable); writes "
            "DIR/<trial>/ run folders, DIR/results.csv and DIR/results.md")
    p.add_argument("spec", help="a sweep file (TOML: profile, seeds, [budget], [base], [grid] and/or "
                                "[[trials]]; docs/experiments.md)")
    p.add_argument("--out", metavar="DIR", help="the sweep folder (default: runs/sweeps/<spec name>)")
    p.add_argument("--address", help="an existing Ray cluster (e.g. 10.0.0.5:6379 or auto); default: start "
                                     "Ray on this machine for the sweep and stop it at the end")
    p.add_argument("--num-cpus", type=int, metavar="N",
                   help="CPUs Ray may use on this machine, N >= 1 (default: all); a CPU-only machine runs one "
                        "trial at a time on them")
    data_dir_arg(p)

    p = add("evaluate", cmd_evaluate, "top-1, top-5 and per-class accuracy of a saved model on val")
    p.add_argument("model", help="a .keras file or a run folder")
    p.add_argument("--no-tta", action="store_true", help="skip the horizontal-flip test-time augmentation")
    p.add_argument("--localization", action="store_true",
                   help="also score class activation map boxes on the val boxes (GT-known loc, top-1 loc and "
                        "BoxAcc at thresholds chosen on 10 train images with boxes per class; MaxBoxAcc)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    data_dir_arg(p)

    p = add("predict", cmd_predict, "top-5 classes with names for JPEG or PNG images of any size")
    p.add_argument("model", help="a .keras file, a run folder, or an export (.onnx, .tflite, SavedModel folder)")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="JPEG or PNG files; an unreadable one is named on stderr (one line each) and skipped, the "
                   "others are predicted, and the exit status is then 1")
    p.add_argument("--top", type=positive_int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON list, one entry per image: its top classes, "
                   "or for an unreadable image {\"image\", \"error\"}")
    resize_arg(p)
    data_dir_arg(p)

    p = add("export", cmd_export, "export a model as a SavedModel, TFLite or ONNX file taking raw uint8 pixels, "
            "checked against the Keras model on val images (docs/deploy.md)")
    p.add_argument("model", help="a .keras file or a run folder")
    p.add_argument("--format", required=True, metavar="FORMAT", help="savedmodel, tflite or onnx")
    p.add_argument("--out", help="output file (a folder for savedmodel; default: beside the model, e.g. best.onnx); "
                   "an existing one is refused unless it is an earlier export of this format and --force is given")
    p.add_argument("--force", action="store_true", help="replace an earlier export of this format at the output "
                   "path (never anything else: the model, its run folder or another file is always refused)")
    p.add_argument("--quantize", metavar="KIND", help="tflite only: float16, int8 (int8 weights, float "
                   "activations) or int8-full (integer activations too); post-training, the val accuracy drop "
                   "is measured and printed")
    p.add_argument("--val-accuracy", action="store_true", help="measure val top-1 of both models for any format")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    data_dir_arg(p)

    p = add("localize", cmd_localize, "save each image with its class activation map and box, titled with "
            "the top-1 class")
    p.add_argument("model", help="a .keras file or a run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG images of any size")
    p.add_argument("--out", default="runs/localize", help="folder for the PNGs (default: runs/localize)")
    p.add_argument("--threshold", type=fraction, default=0.2,
                   help="box = largest region where the map >= THRESHOLD * its max, THRESHOLD in [0, 1] "
                   "(default: 0.2)")
    resize_arg(p)
    data_dir_arg(p)

    p = add("notebooks", cmd_notebooks, "run the numbered notebooks (01_download ..) headless with papermill")
    p.add_argument("--profile", default="auto", choices=["auto", *PROFILES],
                   help="the notebooks' training profile: auto (quick on a CPU, full on a GPU), or one named")
    p.add_argument("--out", default="runs/notebooks", help="folder for the executed notebooks")
    p.add_argument("--only", nargs="+", help="run only these notebooks (prefixes such as 01 03); with --out "
                   "notebooks also those that read what they write (07 reads 04's run)")
    p.add_argument("--check", action="store_true", help="run nothing: list the committed notebooks whose outputs "
                   "no longer come from this checkout's code or files, and why (exit 1 if any)")
    data_dir_arg(p)

    p = add("state", cmd_state, "pack a run's resumable state into checked pieces of at most 16 MiB (for a GPU "
            "lease's $OUT), or restore it into a run folder; list what each training session did")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    piece_help = "largest piece in MiB (default 16, the most one file a GPU lease returns may hold)"
    q = actions.add_parser("pack", help="pack RUN's newest backed-up epoch into OUT once",
                           description="pack RUN's newest backed-up epoch into OUT once")
    q.add_argument("run", metavar="RUN", help="the run folder (holds config.json and backup/)")
    q.add_argument("out", metavar="OUT", help="folder for the pieces and manifest.json (older pieces are removed)")
    q.add_argument("--piece-mib", type=positive_int, default=16, help=piece_help)
    q = actions.add_parser("watch", help="pack RUN into OUT after every backed-up epoch until process PID ends",
                           description="pack RUN into OUT after every backed-up epoch until process PID ends, "
                           "then once more")
    q.add_argument("run", metavar="RUN", help="the run folder training writes")
    q.add_argument("out", metavar="OUT", help="folder for the pieces and manifest.json")
    q.add_argument("--pid", type=positive_int, required=True, help="the training process; the watch ends when it does")
    q.add_argument("--interval", type=positive_float, default=1.0,
                   help="seconds between looks at RUN's backup (default 1)")
    q.add_argument("--piece-mib", type=positive_int, default=16, help=piece_help)
    q = actions.add_parser("restore", help="check the pieces in STATE and restore them into RUN",
                           description="check the pieces in STATE against their manifest, then restore them into "
                           "RUN (new, or the same run at an older or equal epoch); train resumes it from there")
    q.add_argument("state", metavar="STATE", help="folder with manifest.json and its pieces")
    q.add_argument("run", metavar="RUN", help="the run folder to restore into")
    q = actions.add_parser("keep", help="a lease's returned STATE becomes the state KEPT in the repository",
                           description="check a lease's returned STATE, restore it into RUN, and make it the run's "
                           "state at KEPT (e.g. results/seed-reference/state), replacing an older one of the same "
                           "run, with the run's config.json and history.csv beside it and the lease.log found beside "
                           "STATE in leases/lease-NN.log; a complete run's KEPT is removed, its metrics.json added "
                           "(docs/gpu.md)")
    q.add_argument("state", metavar="STATE", help="the returned folder with manifest.json and its pieces")
    q.add_argument("kept", metavar="KEPT", help="the run's state folder in the repository")
    q.add_argument("--run", required=True, help="the run folder to restore into (as `state restore`)")
    q = actions.add_parser("sessions", help="what each training session of a run did, as a Markdown table",
                           description="one row per training session of RUN (its sessions.jsonl and history.csv): "
                           "device, backend and dtype, the epochs it completed, minutes per epoch, the hours of "
                           "training steps, train images/s and val top-1 at its last epoch (beside the reference's "
                           "for the reference and full profiles on 200 classes)")
    q.add_argument("run", metavar="RUN", help="a run folder, or the run's files kept in the repository "
                   "(e.g. results/seed-reference)")
    return parser


# These never import TensorFlow, so they start in a fraction of a second.
_COMMANDS_WITHOUT_TENSORFLOW = {"download", "verify", "prepare", "notebooks", "sweep", "state"}  # sweep: in Ray's workers


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, a scheduler stopping a job), raised where the signal lands: each command then stops as it
    does on Ctrl-C (a run says how far it got and how to resume; locks are released, temporaries removed)."""


def _on_sigterm(signum, frame):
    if os.getpid() != _sigterm_owner:
        # a process forked by the command inherits this handler; it must die as the default does (prepare's decoding
        # pool resets SIGTERM in each worker, processes.start_worker: a Python handler can miss the signal there)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    fileio.note_stop(signum)
    raise Terminated


def _on_sigint(signum, frame):
    # Python's own handler, plus a record that survives the KeyboardInterrupt being lost in a destructor
    if os.getpid() == _sigterm_owner:
        fileio.note_stop(signum)
    raise KeyboardInterrupt


_sigterm_owner = None  # the process whose main() installed _on_sigterm


def main(argv: list[str] | None = None) -> int:
    # Python's default for SIGTERM ends the process on the spot, with nothing said and no clean-up: for the length of
    # the command, in the main thread, it stops as Ctrl-C does; the caller's handler is back when main returns
    # (tests and scripts call main in their own process)
    global _sigterm_owner
    previous = None
    fileio.clear_stops()
    if threading.current_thread() is threading.main_thread():
        _sigterm_owner = os.getpid()
        previous = signal.signal(signal.SIGTERM, _on_sigterm), signal.signal(signal.SIGINT, _on_sigint)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
        fileio.clear_stops()


def parse_args(argv: list[str] | None):
    """The command line's namespace; `train` also takes a flag per recipe field (`--lr 1e-3`), added to its --set."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        try:
            args.set = (args.set or []) + recipe_flags(extra)
        except ValueError as exc:
            parser.error(str(exc))
    return args


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    try:
        if getattr(args, "model", None) is not None:  # evaluate, predict, localize, export
            _require_model(args.model)
        if args.command not in _COMMANDS_WITHOUT_TENSORFLOW and runtime.backend() == "tensorflow":
            quiet_tensorflow()  # keep TensorFlow's native start-up chatter off the terminal
        code = args.func(args)
        if fileio.stop_requested():  # its interrupt was lost (see fileio.note_stop), yet the user asked
            raise Terminated if fileio.stop_requested() == signal.SIGTERM else KeyboardInterrupt
        return code
    except TinyconvError as exc:
        for line in str(exc).splitlines() or [""]:  # several problems (verify's): one error line each
            print(f"tinyconv: error: {line}", file=sys.stderr)
        return 1
    except Terminated:
        print("tinyconv: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        if fileio.stop_requested() == signal.SIGTERM:  # raised by atomic_path for a lost SIGTERM
            print("tinyconv: terminated (SIGTERM)", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("tinyconv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stderr.close()
        return 141
    except Exception:
        if fileio.stop_requested() is None:
            raise
        # an interrupt raised inside C code that calls back into Python (TensorFlow's converter) can surface as
        # another error, e.g. "SystemError: ... bad argument to internal function" (seen once in an export, 2026-12-06)
        stopped = fileio.stop_requested() == signal.SIGTERM
        print("tinyconv: terminated (SIGTERM)" if stopped else "tinyconv: interrupted", file=sys.stderr)
        return 128 + signal.SIGTERM if stopped else 130


if __name__ == "__main__":
    sys.exit(main())
