"""A sweep's results: the results.csv / results.md tables, each variant over its seeds, the seed noise and which
differences exceed it, the Pareto front, and what notebook 06 reads.

    rows = read_results("results/sweeps/cpu_quick/results.csv")     # one dict per trial, numbers as numbers
    summary = variant_summary(rows)                                   # mean, sd, range of val top-1 per variant
    print(format_noise_report(rows, baseline="base"))                 # markdown: what exceeds the noise

The noise is the seed-to-seed standard deviation of val top-1 pooled over every variant (each variant's spread
comes from its seeds alone); a difference of two means counts as real when it exceeds twice its standard error.
tinyconv.experiments.sweep writes the rows (from its trials' run folders); tinyconv.study.figures plots them. No Keras here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
from pathlib import Path

from tinyconv.errors import TinyconvError
from tinyconv.fileio import write_text

RESULT_COLUMNS = (
    "trial", "variant", "preset", "overrides", "seed", "params", "macs", "top1", "top5", "best_top1",
    "train_img_s", "wall_s", "epochs", "device", "run_dir", "status", "stem", "down", "k1", "axial",
)


def write_results(rows: list[dict], out: Path, spec=None) -> None:
    """DIR/results.csv (every column) and DIR/results.md (the table, then each variant over its seeds);
    `spec`, a tinyconv.experiments.sweep.SweepSpec, heads results.md with what the sweep was."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key, "")) for key in RESULT_COLUMNS})
    write_text(Path(out) / "results.csv", buffer.getvalue())
    write_text(Path(out) / "results.md", format_results_md(rows, spec))


def _csv_value(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def read_results(path) -> list[dict]:
    """results.csv -> rows with numbers as numbers (None where empty)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TinyconvError(f"{path}: cannot read sweep results ({exc.strerror or exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("trial", "variant", "seed", "top1", "params", "status") if c not in (reader.fieldnames or [])]
    if missing:
        raise TinyconvError(f"{path}: not a sweep results file (no column {', '.join(missing)})")
    rows = []
    for row in reader:
        for key in ("seed", "params", "macs", "epochs", "k1"):
            row[key] = int(float(row[key])) if row.get(key) not in (None, "") else None
        for key in ("top1", "top5", "best_top1", "train_img_s", "wall_s"):
            row[key] = float(row[key]) if row.get(key) not in (None, "") else None
        rows.append(row)
    return rows


def variant_summary(rows: list[dict]) -> list[dict]:
    """Per variant (in order of appearance): seeds done, mean, sd and range of val top-1, params, MACs, img/s."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("status") == "done" and row.get("top1") is not None:
            groups.setdefault(row["variant"], []).append(row)
    summary = []
    for variant, members in groups.items():
        top1 = [m["top1"] for m in members]
        summary.append({
            "variant": variant, "n": len(members), "top1": statistics.fmean(top1),
            "sd": statistics.stdev(top1) if len(top1) > 1 else None, "min": min(top1), "max": max(top1),
            "params": members[0]["params"], "macs": members[0]["macs"],
            "train_img_s": statistics.fmean(m["train_img_s"] for m in members),
            "overrides": members[0].get("overrides", ""),
        })
    return summary


def pooled_sd(summary: list[dict]) -> float | None:
    """The seed-to-seed standard deviation of val top-1 pooled over every variant with 2+ seeds (the noise:
    each variant's spread comes from its seeds alone, so pooling gives the estimate many degrees of freedom)."""
    num = sum((s["n"] - 1) * s["sd"] ** 2 for s in summary if s["sd"] is not None)
    dof = sum(s["n"] - 1 for s in summary if s["sd"] is not None)
    return math.sqrt(num / dof) if dof else None


def pooled_dof(summary: list[dict]) -> int:
    """The degrees of freedom of pooled_sd: the sum of n - 1 over the variants with 2+ seeds."""
    return sum(s["n"] - 1 for s in summary if s["sd"] is not None)


def two_sided_p(z: float, dof: int) -> float:
    """P(|T| > z) for Student's t with `dof` degrees of freedom: how often a difference that is noise alone passes
    the `z`-noise test when the noise is itself estimated from `dof` degrees of freedom (0.062 for z = 2 and 17,
    not the normal curve's 0.046)."""
    from scipy import stats  # a dependency (pyproject.toml); imported where used

    return float(2 * stats.t.sf(abs(z), dof))


def bonferroni_z(comparisons: int, dof: int, alpha: float = 0.05) -> float:
    """The |t| a difference must exceed so that `comparisons` tests together call noise real with probability at
    most `alpha` (Bonferroni: alpha / comparisons each, two-sided)."""
    from scipy import stats

    return float(stats.t.isf(alpha / (2 * max(comparisons, 1)), dof))


def _baseline(summary: list[dict], baseline: str | None) -> dict:
    """The summary row of `baseline`, or the first variant when None; a name with no finished trial is one line."""
    if baseline is None:
        return summary[0]
    found = next((s for s in summary if s["variant"] == baseline), None)
    if found is None:
        raise TinyconvError(f"baseline {baseline!r} has no finished trial in these results; variants: "
                            f"{', '.join(s['variant'] for s in summary)}")
    return found


def compare_to_baseline(summary: list[dict], baseline: str | None = None, z: float = 2.0) -> list[dict]:
    """Each variant's mean top-1 minus the baseline's, with the noise of that difference (the pooled seed sd
    times sqrt(1/n1 + 1/n2)) and whether |difference| exceeds `z` times it. The noise is estimated, so a difference
    of noise alone passes with two_sided_p(z, pooled_dof) (6 % for z = 2 and 17 degrees of freedom), and with many
    variants a few pass by chance: format_noise_report says how many and which survive Bonferroni's correction.

    The baseline is `baseline` (a variant name) or the first variant. Rows: variant, diff, noise, t, exceeds.
    """
    if not summary:
        return []
    base = _baseline(summary, baseline)
    sd = pooled_sd(summary)
    out = []
    for s in summary:
        diff = s["top1"] - base["top1"]
        noise = sd * math.sqrt(1 / s["n"] + 1 / base["n"]) if sd is not None else None
        t = diff / noise if noise else None
        out.append({"variant": s["variant"], "baseline": base["variant"], "diff": diff, "noise": noise, "t": t,
                    "exceeds": noise is not None and s is not base and abs(diff) > z * noise})
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost (x) and higher accuracy (y), ties kept."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def _pct(value) -> str:
    return f"{value * 100:.2f}" if isinstance(value, (int, float)) else ""


def format_results_md(rows: list[dict], spec=None) -> str:
    """results.md: what the sweep was, one line per trial, then each variant over its seeds vs the baseline."""
    lines = ["# Sweep results", ""]
    if spec is not None:
        budget = f"{spec.epochs} epochs" + (f", at most {spec.seconds:g} s" if spec.seconds else "")
        lines += [f"`tinyconv sweep {spec.path.name}`: profile `{spec.profile}`, seeds {spec.seeds}, {budget} per "
                  "trial." + (f" {spec.description}" if spec.description else ""), ""]
    lines += ["| trial | preset | overrides | seed | params | MMACs | val top-1 % | top-5 % | train img/s | wall s "
              "| device | run folder |", "|" + " --- |" * 12]
    for r in rows:
        macs = f"{r['macs'] / 1e6:.1f}" if isinstance(r.get("macs"), (int, float)) else ""
        params = f"{r['params']:,}" if isinstance(r.get("params"), int) else ""
        img_s = f"{r['train_img_s']:.0f}" if isinstance(r.get("train_img_s"), float) else ""
        wall = f"{r['wall_s']:.0f}" if isinstance(r.get("wall_s"), float) else ""
        top1 = _pct(r.get("top1")) if r.get("status") == "done" else r.get("status", "")
        lines.append(f"| {r['trial']} | {r['preset']} | {r['overrides'] or '(base)'} | {r['seed']} | {params} | {macs} "
                     f"| {top1} | {_pct(r.get('top5'))} | {img_s} | {wall} | {r.get('device', '')} | {r['run_dir']} |")
    variants = format_variants_md(rows, spec.baseline if spec else None)
    if variants:
        lines += ["", "## Variants over their seeds", "", variants]
    return "\n".join(lines) + "\n"


def format_variants_md(rows: list[dict], baseline: str | None = None, setup: dict | None = None) -> str:
    """A markdown table of each variant over its seeds: mean, sd, range, difference from the baseline and
    whether it exceeds the noise (compare_to_baseline); "" when no trial is done. With `setup` (sweep_setup)
    the table is preceded by what one trial is, so that "beyond noise" is read as a verdict on that set-up."""
    summary = variant_summary(rows)
    lines = []
    if summary and setup is not None:
        lines += [f"{setup_scope(setup)} *Beyond noise* below is a verdict on this set-up only.", ""]
    if summary:
        compared = {c["variant"]: c for c in compare_to_baseline(summary, baseline)}
        sd = pooled_sd(summary)
        if sd is not None:
            lines += [f"Noise: the seed-to-seed sd of val top-1, pooled over the variants, is {sd * 100:.2f} points; "
                      "a difference from the baseline counts as real when it exceeds twice its standard error.", ""]
        lines += ["| variant | seeds | mean val top-1 % | sd | range | vs baseline (points) | beyond noise |",
                  "|" + " --- |" * 7]
        for s in summary:
            c = compared[s["variant"]]
            sd_text = f"{s['sd'] * 100:.2f}" if s["sd"] is not None else ""
            vs = "baseline" if c["variant"] == c["baseline"] else f"{c['diff'] * 100:+.2f}"
            verdict = "" if c["variant"] == c["baseline"] or c["noise"] is None else ("yes" if c["exceeds"] else "no")
            lines.append(f"| {s['variant']} | {s['n']} | {s['top1'] * 100:.2f} | {sd_text} | "
                         f"{s['min'] * 100:.1f}-{s['max'] * 100:.1f} | {vs} | {verdict} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- notebook 06


REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_RESULTS = Path("results/sweeps/cpu_quick/results.csv")  # the CPU sweep of docs/experiments.md


def resolve_results(results, example_dir) -> tuple[Path, bool]:
    """(results.csv to read, whether it is a made-up example) for notebook 06.

    `results`: a results.csv or its sweep folder (relative paths from the repository root); None: the
    committed CPU sweep, or, where it is absent, a made-up example written into `example_dir`.
    """
    if results is not None:
        path = Path(results)
        path = path if path.is_absolute() else REPO_ROOT / path
        path = path / "results.csv" if path.is_dir() else path
        if not path.is_file():
            raise TinyconvError(f"{path}: no sweep results there; run tinyconv sweep SPEC --out DIR first")
        return path, False
    if (REPO_ROOT / COMMITTED_RESULTS).is_file():
        return REPO_ROOT / COMMITTED_RESULTS, False
    return example_results(Path(example_dir) / "example-sweep"), True


def read_manifest(results_path) -> dict:
    """The sweep.json beside a results.csv (its spec, budget, baseline), or {} when there is none."""
    try:
        return json.loads((Path(results_path).parent / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}


def _override_values(row: dict) -> dict:
    """{"model.kernel_sizes": [5, 3, 3]} from a row's "model.kernel_sizes=[5, 3, 3]; ..." text."""
    values = {}
    for item in filter(None, (part.strip() for part in str(row.get("overrides") or "").split(";"))):
        key, _, text = item.partition("=")
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


def base_rows(rows: list[dict]) -> list[dict]:
    """The done trials of the variant with no overrides of its own (the spec's [base] alone)."""
    return [row for row in rows if row.get("status") == "done" and not _override_values(row)]


def setting_series(rows: list[dict], key: str) -> list[tuple]:
    """(value, row) for the done trials whose only own override is `key` (e.g. "model.kernel_sizes"); a
    per-stage value counts by its first stage (the stage-1 kernel), a single value as it is."""
    series = []
    for row in rows:
        values = _override_values(row)
        if row.get("status") == "done" and list(values) == [key]:
            value = values[key]
            series.append((value[0] if isinstance(value, list) else value, row))
    return series


def format_noise_report(rows: list[dict], baseline: str | None = None, z: float = 2.0, setup: dict | None = None) -> str:
    """Markdown: the noise (pooled seed sd), then which variants differ from the baseline by more than `z`
    times the noise of a difference, and which do not; computed from the rows, never typed in. With `setup`
    (sweep_setup), a last paragraph says what set-up the verdicts are about (setup_scope)."""
    summary = variant_summary(rows)
    if not summary:
        return "No finished trials in these results."
    comparisons = compare_to_baseline(summary, baseline, z)
    sd = pooled_sd(summary)
    base = comparisons[0]["baseline"]
    base_top1 = next(s["top1"] for s in summary if s["variant"] == base)
    if sd is None:
        return (f"Every variant has a single seed, so the seed-to-seed noise cannot be estimated and no difference "
                f"from the baseline `{base}` ({base_top1:.2%}) can be called real. Run at least two seeds.")
    pooled = [s for s in summary if s["sd"] is not None]
    seeds = sorted({s["n"] for s in pooled})
    dof = pooled_dof(summary)
    chance = two_sided_p(z, dof)
    lines = [f"**Noise.** Across seeds, val top-1 of one variant varies with a standard deviation of "
             f"**{sd * 100:.2f} points** (pooled over the {len(pooled)} variants with {'/'.join(map(str, seeds))} "
             f"seeds each: {dof} degrees of freedom). A difference of two means of n seeds each has about "
             f"{sd * 100:.2f} x sqrt(2/n) points of noise; a difference counts as real here when it exceeds {z:g} "
             f"times that, which noise alone does with probability {chance:.3f} (Student's t, {dof} degrees of "
             f"freedom).", "", f"**Baseline** `{base}`: {base_top1:.2%}.", ""]
    beyond = [c for c in comparisons if c["exceeds"]]
    within = [c for c in comparisons if not c["exceeds"] and c["variant"] != base]
    if beyond:
        lines.append("**Beyond the noise:**")
        lines += [f"- `{c['variant']}`: {c['diff'] * 100:+.2f} points (noise {c['noise'] * 100:.2f}, "
                  f"{abs(c['diff']) / c['noise']:.1f}x)" for c in sorted(beyond, key=lambda c: -c["diff"])]
    else:
        lines.append("**No variant differs from the baseline by more than the noise.**")
    if within:
        lines += ["", f"**Within the noise** ({len(within)}): " + ", ".join(
            f"`{c['variant']}` ({c['diff'] * 100:+.1f})" for c in sorted(within, key=lambda c: -c["diff"]))]
    tested = [c for c in comparisons if c["variant"] != base and c["t"] is not None]
    if len(tested) > 1:
        strict = bonferroni_z(len(tested), dof)
        kept = [c for c in beyond if abs(c["t"]) > strict]
        names = ", ".join(f"`{c['variant']}` ({abs(c['t']):.1f}x)" for c in kept)
        if not beyond:
            verdict = "none passed even the first test"
        elif not kept:
            verdict = "none of those beyond the noise remains"
        else:
            verdict = f"{'all' if len(kept) == len(beyond) else len(kept)} of those beyond the noise remain: {names}"
        lines += ["", f"**Many comparisons.** {len(tested)} variants were each compared with the baseline, so about "
                      f"{len(tested) * chance:.1f} of them would pass the {z:g}-noise test by chance alone. Held to "
                      f"Bonferroni's stricter {strict:.2f} times the noise (all {len(tested)} tests together wrong at "
                      f"most 5 % of the time): {verdict}."]
    if setup is not None:
        scope = f"**Scope.** {setup_scope(setup)}"
        example = max(beyond, key=lambda c: abs(c["diff"]), default=None)
        if example is not None:  # the largest verdict, read as what it can say: speed, not the final figure
            faster, higher = ("learns faster", "higher") if example["diff"] > 0 else ("learns slower", "lower")
            scope += (f" So `{example['variant']}` {example['diff'] * 100:+.1f} points beyond the noise says that it "
                      f"{faster} in this set-up, not that it would end {higher} after a full schedule.")
        lines += ["", scope]
    return "\n".join(lines)


def _one(values: set):
    """The single value of a set, or None when it is empty or holds several."""
    return next(iter(values)) if len(values) == 1 else None


def sweep_setup(results_path, rows: list[dict]) -> dict:
    """What the trials of a sweep trained on and were scored on, from their run folders beside results.csv
    (metrics.json: epochs, classes, train and val images; config.json: train images per class), results.csv's
    `epochs` column where no run folder is there.

    Returns:
        {"epochs", "classes", "train_images", "val_images", "train_per_class": the one value every done trial
        shares (None when unknown or when trials differ), "chance": 1 / classes or None, "trials_read": how many
        run folders were read, "trials": done trials, "source": where the numbers came from (one phrase)}.
    """
    root = Path(results_path).parent
    seen: dict[str, set] = {key: set() for key in ("epochs", "classes", "train_images", "val_images", "train_per_class")}
    done = [row for row in rows if row.get("status") == "done"]
    read = 0
    for row in done:
        folder = Path(row.get("run_dir") or row["trial"])
        folder = folder if folder.is_absolute() else root / folder
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics = None
        if metrics is None:
            if row.get("epochs") is not None:
                seen["epochs"].add(int(row["epochs"]))
            continue
        read += 1
        for key in ("epochs", "classes", "train_images", "val_images"):
            if metrics.get(key) is not None:
                seen[key].add(int(metrics[key]))
        try:
            train = json.loads((folder / "config.json").read_text()).get("train") or {}
        except (OSError, ValueError):
            train = {}
        if train.get("max_train_per_class") is not None:
            seen["train_per_class"].add(int(train["max_train_per_class"]))
    setup = {key: _one(values) for key, values in seen.items()}
    classes = setup["classes"]
    share = f"all {read}" if read == len(done) else f"{read} of the {len(done)}"
    source = (f"the metrics.json in the run folders of {share} trials" if read else
              "results.csv's epochs column (no trial run folder beside it: classes and images unknown)")
    return {**setup, "chance": 1.0 / classes if classes else None, "trials_read": read, "trials": len(done),
            "source": source}


def setup_scope(setup: dict) -> str:
    """One sentence from sweep_setup: what one trial of the sweep is (epochs, train images, classes, val
    images) and so what its accuracies measure; what is not recorded is said to be unknown."""
    epochs, images, classes = setup.get("epochs"), setup.get("train_images"), setup.get("classes")
    what = f"{epochs} epoch{'s' if epochs != 1 else ''}" if epochs else "an unrecorded number of epochs"
    data = f"{images:,} train images" if images else "an unrecorded number of train images"
    if classes:
        data += f" of {classes} classes" + (f" ({setup['train_per_class']} per class)" if setup.get("train_per_class") else "")
    scored = f" and was scored on {setup['val_images']:,} val images" if setup.get("val_images") else ""
    if epochs is not None and epochs <= 3:
        measures = "how fast a variant learns in its first " + ("epoch" if epochs == 1 else f"{epochs} epochs")
    elif epochs:
        measures = f"the accuracy a variant reaches after {epochs} epochs"
    else:
        measures = "the accuracy a variant reaches in this set-up"
    if images is not None and images < 100_000:  # Tiny ImageNet has 100,000 train images
        measures += " on a small subset of Tiny ImageNet"
    if epochs is None or epochs < 100:
        measures += ", not the accuracy it would reach after a full schedule"
    return f"Each trial trained for {what} on {data}{scored}: these numbers measure {measures}."


def format_setup_md(setup: dict, summary: list[dict], baseline: str | None = None) -> str:
    """Markdown for notebook 06: the sweep's set-up (sweep_setup), its chance level and the baseline's mean
    against it; every number from the sweep's own files, which it names."""
    text = f"**What one trial is.** {setup_scope(setup)}"
    base = _baseline(summary, baseline) if summary else None
    if setup.get("chance"):
        text += f" Chance is **{setup['chance']:.1%}**"
        text += f"; the baseline `{base['variant']}` reaches **{base['top1']:.1%}**." if base is not None else "."
    else:
        text += " The number of classes is not recorded, so no chance level is drawn."
    return text + f" (Read from {setup['source']}.)"


def example_results(folder) -> Path:
    """Write a small made-up folder/results.csv (device "synthetic example") and return its path: what
    notebook 06 shows when no sweep has been run yet. Its numbers are invented and mean nothing."""
    rng = random.Random(0)
    variants = [("base", "", 0.60), ("stem-space_to_depth", "model.stem=space_to_depth", 0.61),
                ("down-haar", "model.down=haar", 0.58), ("kernel_sizes-3.3.3", "model.kernel_sizes=[3, 3, 3]", 0.55),
                ("kernel_sizes-13.3.3", "model.kernel_sizes=[13, 3, 3]", 0.61),
                ("axial_kernel_sizes-3", "model.axial_kernel_sizes=3", 0.59),
                ("axial_kernel_sizes-9", "model.axial_kernel_sizes=9", 0.60)]
    rows = []
    for seed in (0, 1):
        for index, (variant, overrides, top1) in enumerate(variants):
            k1 = json.loads(overrides.split("=")[1])[0] if "kernel_sizes=" in overrides and "axial" not in overrides else 9
            row = {column: "" for column in RESULT_COLUMNS}
            row.update(trial=f"{variant}-s{seed}", variant=variant, preset="tiny", overrides=overrides, seed=seed,
                       params=300_000 + 7_000 * index, macs=40_000_000 + 2_000_000 * k1, top1=top1 + rng.gauss(0, 0.01),
                       top5=0.9, best_top1=top1, train_img_s=200.0 - 5 * k1, wall_s=60.0, epochs=2,
                       device="synthetic example", run_dir=f"{variant}-s{seed}", status="done", k1=k1)
            rows.append(row)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_results(rows, folder)
    return folder / "results.csv"
