"""Figure-level tests of the plots the notebooks draw: each draws, labels its axes and reflects its input
(the chance line at 1/num_classes, the best epoch, the sorted bars, the true class's bar...)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tinyconv.study import analysis, measures  # noqa: E402
from tinyconv.study import figures as tinyfigures  # noqa: E402
from tinyconv.training import plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _hlines(ax) -> list[float]:
    """y of every horizontal line spanning the axes (axhline)."""
    return [line.get_ydata()[0] for line in ax.get_lines()
            if len(set(np.ravel(line.get_ydata()))) == 1 and tuple(line.get_xdata()) == (0, 1)]


def _extents(fig, texts) -> list:
    """The drawn boxes (display pixels) of `texts` once `fig` is laid out and drawn: the text itself, without
    an annotation's leader line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    return [Text.get_window_extent(t, renderer) if isinstance(t, Text) else t.get_window_extent(renderer)
            for t in texts]


def _overlapping(boxes) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes) if i < j and a.overlaps(b)]


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def _history(epochs=6):
    rows = []
    for e in range(epochs):
        rows.append(dict(epoch=e, loss=2.0 - 0.2 * e, val_loss=2.1 - 0.15 * e, top1=0.1 + 0.05 * e,
                         val_top1=[0.1, 0.2, 0.35, 0.3, 0.33, 0.31][e], lr=1e-3 * (e + 1) / epochs))
    return rows


def test_plot_training_marks_chance_best_epoch_schedule_and_reference():
    rows = _history()
    reference = [dict(epoch=e, val_loss=1.9 - 0.1 * e, val_top1=0.2 + 0.04 * e) for e in range(10)]
    fig = plots.plot_training(rows, num_classes=10, title="tiny, quick", reference=reference)
    ax_loss, ax_acc, ax_lr = fig.axes
    assert ax_acc.get_ylabel() == "top-1 accuracy" and ax_lr.get_ylabel().startswith("learning rate")
    assert 1 / 10 in _hlines(ax_acc)  # chance
    labels = ax_acc.get_legend_handles_labels()[1]
    assert "chance (1/10)" in labels and "reference (val)" in labels
    best = [label for label in labels if label.startswith("best val")]
    assert best == ["best val: 35.0% (epoch 3)"]  # the max of val_top1, 1-based epoch
    np.testing.assert_allclose(ax_lr.get_lines()[0].get_ydata(), [row["lr"] for row in rows])
    # 200 classes: the chance line moves; no reference: no dashed line
    fig = plots.plot_training(rows, num_classes=200)
    assert 1 / 200 in _hlines(fig.axes[1])
    assert "reference (val)" not in fig.axes[1].get_legend_handles_labels()[1]
    # a run stopped early, drawn over the epochs its recipe plans: every panel spans them
    fig = plots.plot_training(rows, num_classes=200, reference=reference, planned_epochs=100)
    assert all(ax.get_xlim() == (0, 101) for ax in fig.axes)


@pytest.mark.parametrize("preset", ["seed", "tiny", "convmixer"])
def test_plot_block_diagram_follows_the_stage_plan(preset):
    from tinyconv.model.config import get_config, stage_plan

    config = get_config(preset)
    fig = tinyfigures.plot_block_diagram(config)
    text = _texts(fig)
    for entry in stage_plan(config):
        shape = "x".join(str(n) for n in entry["output_shape"])
        if entry["kind"] != "head":
            assert shape in text, (entry["name"], shape)
        if entry["kind"] == "stage":
            assert f"{entry['name']}: {config.depths[int(entry['name'][5:]) - 1]} x" in text
    assert ("down1" in text) == (config.num_stages > 1)
    assert "SE/8" in text if preset != "convmixer" else "SE/" not in text
    assert f"{config.num_classes} logits" in text and "residual" in text


def test_plot_confusion_shows_row_shares_and_counts():
    confusion = np.array([[8, 2, 0], [1, 4, 5], [0, 0, 10]])
    fig = tinyfigures.plot_confusion(confusion, ["cat", "dog", "fox"])
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), confusion / confusion.sum(axis=1, keepdims=True))
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(n) for n in confusion.ravel() if n)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "fox"]


def test_plot_top_predictions_colours_the_true_class():
    names = [f"c{i}" for i in range(6)]
    logits = np.array([[5.0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 6.0]])
    classes, probabilities = analysis.top_predictions(logits, k=3)
    images = np.zeros((2, 64, 64, 3), np.uint8)
    fig = tinyfigures.plot_top_predictions(images, np.array([0, 4]), classes, probabilities, names, columns=2)
    bar_axes = [ax for ax in fig.axes if ax.patches]
    assert len(bar_axes) == 2
    for ax, true, top in zip(bar_axes, (0, 4), classes):
        green = [i for i, bar in enumerate(ax.patches) if bar.get_facecolor()[:3] == matplotlib.colors.to_rgb("tab:green")]
        assert green == [list(top).index(true)]  # image 1's true class is its 2nd guess
        widths = [bar.get_width() for bar in ax.patches]
        assert widths == sorted(widths, reverse=True) and ax.get_xlabel() == "probability"


def test_plot_class_accuracy_sorts_with_error_bars_and_chance():
    accuracy = np.array([0.5, 0.9, 0.1, 0.7])
    counts = np.array([50, 50, 50, 50])
    fig = tinyfigures.plot_class_accuracy(accuracy, counts, ["a", "b", "c", "d"])
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == [0.9, 0.7, 0.5, 0.1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "d", "a", "c"]
    assert 1 / 4 in _hlines(ax)
    assert "chance (1/4)" in ax.get_legend_handles_labels()[1]
    # the error bars span +-1 binomial standard error
    segments = [c for c in ax.collections if hasattr(c, "get_segments")][0].get_segments()
    spans = sorted(abs(seg[1][1] - seg[0][1]) / 2 for seg in segments)
    np.testing.assert_allclose(spans, sorted(measures.standard_error(accuracy, counts)), atol=1e-9)
    # 200 classes: no tick labels, chance at 1/200; the 10 best and 10 worst named under the axis, legibly
    names = [f"class number {i}" for i in range(200)]
    fig = tinyfigures.plot_class_accuracy(np.linspace(0, 1, 200), np.full(200, 50), names)
    ax = fig.axes[0]
    assert 1 / 200 in _hlines(ax) and not ax.get_xticklabels()
    named = [t.get_text() for t in ax.texts]
    assert named[:2] == ["class number 199 100%", "class number 198 99%"] and named[-1] == "class number 0 0%"
    assert len(named) == 20 and "the 10 best and 10 worst named" in ax.get_xlabel()
    assert all(t.get_fontsize() >= 7 for t in ax.texts)
    boxes = _extents(fig, ax.texts)
    assert not _overlapping(boxes)
    label = ax.xaxis.label.get_window_extent(fig.canvas.get_renderer())
    assert not any(label.overlaps(b) for b in boxes)  # the axis label sits under the names
    # classes without val images (a subset of val) are left out and said to be, not drawn as zero accuracy
    accuracy, counts = np.full(200, np.nan), np.zeros(200, int)
    accuracy[:60], counts[:60] = np.linspace(0, 1, 60), np.arange(60) % 3 + 1
    ax = tinyfigures.plot_class_accuracy(accuracy, counts, [str(i) for i in range(200)]).axes[0]
    assert len(ax.patches) == 60 and "60 classes of 200 with val images" in ax.get_xlabel()
    assert "1-3 val images per class" in ax.get_title() and 1 / 200 in _hlines(ax)


def test_training_figure_has_whole_epoch_ticks():
    rows = [dict(epoch=0, loss=1.4, val_loss=1.5, top1=0.3, val_top1=0.25, lr=1e-3)]
    for ax in plots.plot_training(rows, num_classes=4).axes:
        assert list(ax.get_xticks()) == [1]
    rows = [dict(rows[0], epoch=e) for e in range(30)]
    for ax in plots.plot_training(rows, num_classes=4).axes:
        assert all(float(t).is_integer() for t in ax.get_xticks())


def test_plot_block_compare_draws_both_models():
    trained = [dict(block="s1b1", mean=0.8, min=0.5, max=1.2), dict(block="s1b2", mean=0.6, min=0.2, max=1.0)]
    untrained = [dict(block="s1b2", mean=1.0, min=1.0, max=1.0), dict(block="s1b1", mean=1.0, min=1.0, max=1.0)]
    fig = tinyfigures.plot_block_compare(trained, untrained, "mean", "layer scale", "|gamma|", band=("min", "max"))
    ax = fig.axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines["trained: mean"] == [0.8, 0.6]
    assert lines["untrained (same seed): mean"] == [1.0, 1.0]  # matched by block, not by row order
    assert ax.get_ylabel() == "|gamma|" and [t.get_text() for t in ax.get_xticklabels()] == ["s1b1", "s1b2"]
    # the legend is beside the axes, not over the band and lines
    legend, frame = _extents(fig, [ax.get_legend()])[0], ax.get_window_extent()
    assert legend.x0 >= frame.x1


def test_energy_and_erf_figures_put_untrained_beside_trained():
    trained = {"s1b1 depthwise 9x9": measures.energy_by_distance(np.eye(9))}
    untrained = {"s1b1 depthwise 9x9": measures.ring_area_share(9)}
    fig = tinyfigures.plot_energy_profiles(trained, untrained)
    assert len(fig.axes) == 2 and "untrained" in fig.axes[1].get_title()
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), 1.0)  # uniform stays at 1
    assert len(tinyfigures.plot_energy_profiles(trained).axes) == 1

    erf = np.zeros((64, 64))
    erf[30:34, 30:34] = 1 / 16
    wide = np.full((64, 64), 1 / 64**2)
    fig = tinyfigures.plot_erfs({"stage 1": erf}, {"stage 1": wide})
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("trained, stage 1") and titles[1].startswith("untrained, stage 1")
    assert "50% in a 3 px square" in titles[0] and f"50% in a {measures.erf_side(wide, 0.5)} px square" in titles[1]


def test_plot_receptive_fields_merges_equal_curves_and_uses_each_presets_depth():
    from tinyconv.model.build import model_info

    infos = {name: model_info(name) for name in ("seed", "tiny", "convmixer")}
    fig = tinyfigures.plot_receptive_fields(infos)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert "seed = tiny" in labels and "convmixer" in labels  # tiny no longer hides seed
    convmixer = [line for line in ax.get_lines() if line.get_label() == "convmixer"][0]
    # stem, then one stage of 8 blocks: its end is at depth 9, not at "stage1" of a 3-stage model
    assert list(convmixer.get_xdata()) == [1, 9]
    assert list(convmixer.get_ydata()) == [s["receptive_field"] for s in infos["convmixer"]["stages"][:-1]]
    assert 64 in _hlines(ax)
    # each part labelled once where curves share it (both stems at depth 1), no label on another, all inside
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("stem") == 1 and labels.count("stage1") == 2 and "stage3" in labels
    boxes = _extents(fig, ax.texts)
    assert not _overlapping(boxes)
    frame = ax.get_window_extent()
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)


def test_plot_augmentations_by_profile_titles_each_profile():
    images = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    examples = analysis.augmentation_by_profile(images, profiles=("quick", "full"), seed=0)
    assert list(examples)[0] == "original" and [k.split(":")[0] for k in list(examples)[1:]] == ["quick", "full"]
    assert "jitter" not in list(examples)[1] and "mix p=1" in list(examples)[2]  # quick: crop+flip only
    fig = tinyfigures.plot_augmentations(examples, title="per profile")
    assert fig._suptitle.get_text() == "per profile"
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles[:2] == ["original", "quick:\ncrop+flip"]  # one op per line
    assert titles[2].split("\n") == ["full:", "crop+flip", "jitter p=0.8", "cutout p=0.7", "mix p=1"]


def test_plot_block_diagram_names_variant_parts():
    text = _texts(tinyfigures.plot_block_diagram("resnet-small"))
    assert "maxpool" in text and "ResNet basic" in text and "grouped conv" not in text
    assert "ResNet basic block (He et al., 2016)" in text and "gamma" not in text
    text = _texts(tinyfigures.plot_block_diagram("tiny-down-haar"))
    assert "haar" in text and "mixed, SE/8" in text


def test_sweep_costs_reads_as_short_tick_labels_and_separate_pareto_labels():
    """Costs close together (parameters 340k-360k: a linear axis) get short engineering labels, not raw counts
    that run into each other, and neighbouring Pareto labels do not overlap."""
    summary = [dict(variant=f"tiny-stem-shuffle-unfold-{i}", params=340_000 + 5_000 * i, macs=45e6 + 1e6 * i,
                    train_img_s=100.0 + 10 * i, top1=0.5 + 0.0005 * i, sd=0.01, n=2) for i in range(5)]
    fig = tinyfigures.plot_sweep_costs(summary, baseline="tiny-stem-shuffle-unfold-0")
    # the bars are comparison intervals: 2 x pooled sd / sqrt(2n) = 2 x 1 point / 2 = 1 point each way, so that two
    # means of 2 seeds whose bars do not overlap differ by more than 2 x sd x sqrt(2/2) = 2 points (the test's rule)
    segments = fig.axes[0].containers[0][2][0].get_segments()
    assert [round(float(b[1][1] - b[0][1]) / 2, 6) for b in segments] == [1.0] * 5
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        ticks = [t.get_text().replace("\u2212", "-") for t in ax.get_xticklabels() if t.get_text()]
        assert ticks and all(len(t) <= 5 for t in ticks), ticks  # "345k", "47M": no "340000"
        labels = _extents(fig, ax.texts)
        assert not _overlapping(labels)
        frame = ax.get_window_extent()
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in labels)
    assert fig.axes[0].get_xscale() == "linear"
    assert len(fig.axes[0].texts) == 5  # cheaper is worse here: every variant is on the parameters' front
    assert not any(ax.get_legend() for ax in fig.axes) and len(fig.legends) == 1  # under the panels, covering none
    assert "chance" not in " ".join(t.get_text() for t in fig.legends[0].get_texts())
    fig = tinyfigures.plot_sweep_costs(summary, chance=0.1)
    assert all(10.0 in _hlines(ax) for ax in fig.axes)
    assert "chance (10 %)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_sweep_accuracy_figures_draw_chance():
    rows = [dict(variant=v, top1=t, seed=s) for v, t, s in (("base", 0.14, 0), ("base", 0.16, 1), ("k3", 0.2, 0))]
    fig = tinyfigures.plot_accuracy_vs_setting([(3, rows[2]), (9, rows[0])], rows[:2], "k", chance=0.1)
    assert 10.0 in _hlines(fig.axes[0]) and "chance (10 %)" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert 10.0 not in _hlines(tinyfigures.plot_accuracy_vs_setting([(3, rows[2])], [], "k").axes[0])
    comparisons = [dict(variant="base", baseline="base", diff=0.0, noise=0.01, exceeds=False),
                   dict(variant="k3", baseline="base", diff=0.05, noise=0.01, exceeds=True)]
    ax = tinyfigures.plot_variant_spread(rows, comparisons, chance=0.005).axes[0]
    chance = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert len(chance) == 1 and tuple(chance[0].get_xdata()) == (0.5, 0.5)


def _plot_reference_runs():
    """scripts/plot_reference_runs.py as a module (it is a script, not part of the package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "plot_reference_runs.py"
    spec = importlib.util.spec_from_file_location("plot_reference_runs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_reference_runs_draws_each_runs_val_top1_and_its_loss_gap_to_the_reference(tmp_path):
    from tinyconv.training.history import write_history
    from tinyconv.training.reference import read_reference_curve

    script = _plot_reference_runs()
    reference = read_reference_curve()
    rows = [{"epoch": e, "loss": reference[e]["loss"] + 0.01 * (e + 1), "val_top1": 0.1 + 0.05 * e} for e in range(4)]
    (tmp_path / "run").mkdir()
    write_history(tmp_path / "run" / "history.csv", rows)
    out = tmp_path / "runs.png"
    assert script.main([str(out), f"the run={tmp_path / 'run'}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = script.read_runs([str(tmp_path / "run")])
    assert [label for label, _ in bare] == [str(tmp_path / "run")] and bare[0][1][-1]["epoch"] == 3
    fig = script.draw(script.read_runs([f"the run={tmp_path / 'run'}"]), "t")
    ax_top1, ax_loss = fig.axes
    ours = [line for line in ax_top1.get_lines() if line.get_label().startswith("the run:")]
    assert len(ours) == 1 and "25.00 % at epoch 4" in ours[0].get_label()
    assert list(ours[0].get_xdata()) == [1, 2, 3, 4] and np.allclose(ours[0].get_ydata(), [10, 15, 20, 25])
    gap = [line for line in ax_loss.get_lines() if line.get_label() == "the run"][0]
    assert np.allclose(gap.get_ydata(), [0.01, 0.02, 0.03, 0.04])  # the run's loss minus the reference's
    assert 63.03 in [round(y, 2) for y in _hlines(ax_top1)]  # the reference's final top-1


def test_plot_reference_runs_starts_no_tensorflow_or_keras(tmp_path):
    """cpu_lease.sh stop redraws the figure with it after every session: it reads histories and draws, so it has no
    reason to pay TensorFlow's start-up (~6 s) nor print its C++ chatter (python -X importtime lists each import)."""
    from tinyconv.training.history import write_history

    (tmp_path / "run").mkdir()
    write_history(tmp_path / "run" / "history.csv", [{"epoch": 0, "loss": 5.0, "val_top1": 0.1}])
    script = Path(__file__).resolve().parents[1] / "scripts" / "plot_reference_runs.py"
    done = subprocess.run([sys.executable, "-X", "importtime", str(script), str(tmp_path / "out.png"),
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "matplotlib" in imported and "tinyconv" in imported  # the listing is real
    assert not imported & {"tensorflow", "keras", "jax"}
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_reference_runs_names_a_run_without_history_and_writes_nothing(tmp_path, capsys):
    script = _plot_reference_runs()
    out = tmp_path / "runs.png"
    out.write_bytes(b"the user's figure")
    assert script.main([str(out), f"gone={tmp_path / 'nowhere'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"plot_reference_runs: {tmp_path / 'nowhere' / 'history.csv'} is missing or has no epochs"]
    assert out.read_bytes() == b"the user's figure"
    assert script.main([str(out), str(tmp_path / "bare")]) == 1  # a bare RUN_DIR is labelled by itself
    assert f"{tmp_path / 'bare' / 'history.csv'} is missing" in capsys.readouterr().err
