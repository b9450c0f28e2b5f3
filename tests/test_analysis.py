"""Unit tests of tinyconv.study.analysis on small built models and hand-made arrays (fast, no dataset)."""

from __future__ import annotations

import numpy as np
import pytest

from tinyconv.study import analysis, measures

from tinyconv.deploy import inference
from tinyconv.study import figures as tinyfigures
from tinyconv.errors import TinyconvError

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny preset with 10 classes and fixed weights (seeded), untrained."""
    from tinyconv.model.build import build_model

    keras.utils.set_random_seed(0)
    return build_model("tiny", num_classes=10)


@pytest.fixture(scope="module")
def images_normalized():
    return np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype(np.float32)


def test_find_blocks_reads_stages_from_the_model(tiny_model):
    from tinyconv.model.config import get_config

    config = get_config("tiny")
    blocks = analysis.find_blocks(tiny_model)
    assert len(blocks) == sum(config.depths)
    per_stage = [sum(1 for b in blocks if b.stage == s + 1) for s in range(len(config.depths))]
    assert per_stage == list(config.depths)
    assert [b.resolution for b in blocks if b.index == 0] == [(32, 32), (16, 16), (8, 8)]
    assert [b.layer.mode for b in blocks if b.index == 0] == list(config.modes)
    assert blocks[0].label == "s1b1"


def test_stem_kernel_and_rgb_tiles(tiny_model):
    kernel = analysis.stem_kernel(tiny_model)
    assert kernel.shape == (5, 5, 3, 48)
    tiles = measures.filters_as_rgb(kernel)
    assert tiles.shape == (48, 5, 5, 3)
    assert tiles.min() >= 0.0 and tiles.max() <= 1.0
    # each filter is scaled by its own max |w|, so every tile touches 0 or 1
    extremes = np.maximum(tiles.reshape(48, -1).max(axis=1), 1 - tiles.reshape(48, -1).min(axis=1))
    np.testing.assert_allclose(extremes, 1.0, atol=1e-6)


def test_axial_effective_kernel_is_rank_one_and_matches_the_layer(tiny_model):
    blocks = analysis.find_blocks(tiny_model)
    axial = [b for b in blocks if b.layer.axial is not None]
    assert axial, "the tiny preset has axial stages"
    for ref in axial:
        kernels = analysis.block_kernels(ref.layer)
        effective = kernels["axial_effective"]
        a = ref.layer.axial_kernel_size
        assert effective.shape == (a, a, ref.layer.output.shape[-1])
        np.testing.assert_allclose(effective, np.einsum("ic,jc->ijc", kernels["col"], kernels["row"]), rtol=1e-6)
        assert all(analysis.kernel_rank(effective[:, :, c]) == 1 for c in range(4))
    depthwise = [b for b in blocks if b.layer.mode == "depthwise"]
    name, kernel = analysis.main_kernel(depthwise[0].layer)
    assert name == "depthwise" and kernel.shape == (9, 9, 48)
    assert analysis.kernel_rank(kernel[:, :, 0]) > 1  # a free 9x9 kernel is not separable


def test_axial_effective_kernel_equals_the_convolution():
    """Convolving with the composed kxk kernel gives the layer's own output (zero padding, odd k)."""
    from tinyconv.model.layers import AxialDepthwiseConv2D

    layer = AxialDepthwiseConv2D(5)
    x = np.random.default_rng(1).normal(size=(2, 12, 12, 3)).astype(np.float32)
    expected = np.asarray(layer(x))
    effective = layer.effective_kernel()[:, :, :, None]  # [k, k, C, 1]
    got = np.asarray(keras.ops.depthwise_conv(x, effective, strides=1, padding="same"))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_energy_by_distance_sums_to_one_and_finds_the_ring():
    kernel = np.zeros((7, 7, 2))
    kernel[3, 3, 0] = 2.0  # center, energy 4
    kernel[0, 6, 1] = 2.0  # corner: ring 3, energy 4
    kernel[1, 3, 1] = 1.0  # ring 2, energy 1
    profile = measures.energy_by_distance(kernel)
    np.testing.assert_allclose(profile, [4 / 9, 0, 1 / 9, 4 / 9])
    uniform = measures.ring_area_share(5)
    np.testing.assert_allclose(uniform, [1 / 25, 8 / 25, 16 / 25])
    with pytest.raises(ValueError):
        measures.energy_by_distance(np.ones((4, 4)))


def test_layer_scale_and_squeeze_excite_stats(tiny_model, images_normalized):
    blocks = analysis.find_blocks(tiny_model)
    scale_rows = analysis.layer_scale_stats(blocks)
    assert len(scale_rows) == len(blocks)
    assert all(row["mean"] == pytest.approx(1.0) for row in scale_rows)  # untrained: gamma = init value 1
    se_rows = analysis.squeeze_excite_stats(tiny_model, images_normalized, blocks)
    assert [row["block"] for row in se_rows] == [b.label for b in blocks if b.layer.se is not None]
    for row in se_rows:
        assert 0.0 < row["mean"] < 1.0  # sigmoid gates
        assert 0.0 <= row["below_0_1"] <= 1.0


def test_se_input_reproduces_the_block(tiny_model, images_normalized):
    """se_input + SE + layer scale + residual + channel mixer rebuild the block's output."""
    from tinyconv.model.kernels import gelu

    ref = [b for b in analysis.find_blocks(tiny_model) if b.layer.se is not None][0]
    block = ref.layer
    probe = keras.Model(tiny_model.input, block.input)
    x = probe(images_normalized)
    y = block.layer_scale(block.se(analysis.se_input(block, x)))
    rebuilt = block.channel_bn(gelu(block.pointwise(x + y)), training=False)
    np.testing.assert_allclose(np.asarray(rebuilt), np.asarray(block(x, training=False)), atol=1e-4)


def test_effective_receptive_field_shape_mass_and_center(tiny_model, images_normalized):
    stages = analysis.stage_outputs(tiny_model)
    assert sorted(stages) == [1, 2, 3]
    erf = analysis.effective_receptive_field(tiny_model, images_normalized, stages[1], batch_size=2)
    assert erf.shape == (64, 64)
    assert erf.sum() == pytest.approx(1.0)
    peak = np.unravel_index(erf.argmax(), erf.shape)
    assert abs(peak[0] - 32) <= 3 and abs(peak[1] - 32) <= 3
    # the stage-1 unit sees stem 5x5 then two 9x9 blocks: nothing beyond its theoretical field
    rows, cols = np.nonzero(erf > 0)
    assert rows.min() >= 32 - 20 and rows.max() <= 32 + 20 and cols.min() >= 32 - 20
    deeper = analysis.effective_receptive_field(tiny_model, images_normalized, stages[3])
    assert measures.erf_side(deeper, 0.9) > measures.erf_side(erf, 0.9)
    # the centre unit of the even 32x32 stage-1 grid sits below and right of the image's centre (31.5, 31.5)
    row, col = measures.erf_centre(erf)
    assert 32 < row < 34 and 32 < col < 34


def test_erf_side_on_known_maps():
    erf = np.zeros((9, 9))
    erf[4, 4] = 1.0
    assert measures.erf_side(erf, 0.5) == 1 and measures.erf_centre(erf) == (4.0, 4.0)
    erf = np.ones((9, 9)) / 81
    assert measures.erf_side(erf, 0.99) == 9
    assert measures.erf_side(erf, 0.1) == 3  # 9 of 81 center pixels hold 11 %
    erf = np.zeros((64, 64))
    erf[30:34, 30:34] = 1 / 16  # even: centred between pixels 31 and 32
    assert measures.erf_side(erf, 1.0) == 4 and measures.erf_side(erf, 0.5) == 3  # 9 of the 16 pixels
    # a field off the image's centre is measured around its own centre: a 5x5 blob at (40, 20) holds all of its
    # mass in 5 px, where a square around the image's centre would need 2 * 20 + 5 = 45 px
    erf = np.zeros((64, 64))
    erf[38:43, 18:23] = 1 / 25
    assert measures.erf_centre(erf) == pytest.approx((40.0, 20.0))
    assert measures.erf_side(erf, 1.0) == 5
    # near an edge the square moves inside the image
    erf = np.zeros((64, 64))
    erf[0:2, 0:2] = 0.25
    assert measures.erf_side(erf, 1.0) == 2


def test_accuracy_helpers():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.array(
        [[5, 1, 0], [0, 9, 1], [0, 3, 0], [0, 2, 1], [1, 0, 0.5], [0, 0, 4]], dtype=np.float32
    )  # predictions 0, 1, 1, 1, 0, 2
    assert inference.topk_accuracy(labels, logits, 1) == pytest.approx(4 / 6)
    assert inference.topk_accuracy(labels, logits, 2) == pytest.approx(5 / 6)
    accuracy = inference.per_class_accuracy(labels, logits.argmax(axis=1), num_classes=4)
    np.testing.assert_allclose(accuracy[:3], [0.5, 1.0, 0.5])
    assert np.isnan(accuracy[3])
    # the most confident mistake first: sample 1 (9 vs 0) before sample 4 (1 vs 0)
    assert list(analysis.misclassified(labels, logits, count=5)) == [1, 4]


def test_data_helpers():
    images = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    images[0] = 10  # grey
    images[1, ..., 0] = 255  # red
    images[2] = 7
    images[2, 0, 0, 2] = 8  # one coloured pixel
    np.testing.assert_array_equal(analysis.grayscale_mask(images, chunk=2), [True, False, False])
    mean, std = analysis.channel_stats(images, chunk=2)
    pixels = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=0))
    np.testing.assert_allclose(std, pixels.std(axis=0))
    np.testing.assert_array_equal(analysis.count_per_class([0, 2, 2], 4), [1, 0, 2, 0])
    # every value, chunks that do not divide the images: the histograms' sums are exact
    images = np.random.default_rng(3).integers(0, 256, size=(7, 16, 16, 3), dtype=np.uint8)
    mean, std = analysis.channel_stats(images, chunk=3)
    pixels = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-12)


def test_augmentation_examples_keep_shapes_and_the_original():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    examples = analysis.augmentation_examples(images, seed=1)
    assert list(examples)[0] == "original" and "full recipe" in examples
    np.testing.assert_array_equal(examples["original"], images)
    for name, batch in examples.items():
        assert batch.shape == images.shape and batch.dtype == np.uint8, name
    assert not np.array_equal(examples["cutout"], images)
    again = analysis.augmentation_examples(images, seed=1)
    np.testing.assert_array_equal(again["full recipe"], examples["full recipe"])


def test_figures_and_preset_rows(tmp_path, tiny_model):
    import matplotlib

    matplotlib.use("Agg")
    from tinyconv.model.build import model_info

    infos = {name: model_info(name) for name in ("seed", "convmixer")}
    row = analysis.preset_summary("seed", infos["seed"])
    assert row["params"] == 2_644_712 and row["depths"] == "2/3/5"
    table = analysis.format_table([row, analysis.preset_summary("convmixer", infos["convmixer"])])
    assert "2,644,712" in table and table.count("\n") == 3
    figures = {
        "costs": tinyfigures.plot_stage_costs(infos),
        "rf": tinyfigures.plot_receptive_fields(infos),
        "stem": tinyfigures.plot_stem_filters(analysis.stem_kernel(tiny_model)),
        "energy": tinyfigures.plot_energy_profiles({"a": np.array([0.2, 0.3, 0.5])}),
    }
    assert len(figures["costs"].axes) == 4  # a params and a MACs chart per preset
    assert "seed" in figures["costs"].axes[0].get_title()
    assert "(total 2.64 M)" in figures["costs"].axes[0].get_title()
    small = tinyfigures.plot_stage_costs({"tiny": model_info("tiny", num_classes=4)}).axes[0]
    assert "k)" in small.get_title() and small.get_ylabel() == "parameters (k)"  # not 0.00 M per stage
    for name, fig in figures.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path)
        assert path.stat().st_size > 5000, name
    np.testing.assert_allclose(inference.softmax([[0.0, 0.0], [2.0, 0.0]]).sum(axis=1), 1.0)


def test_box_areas_and_examples_per_class():
    annotations = {"a.JPEG": ("n1", (0, 0, 63, 63)), "b.JPEG": ("n2", (0, 0, 31, 31)), "c.JPEG": ("n3", None)}
    np.testing.assert_allclose(analysis.box_areas(annotations), [1.0, 0.25])  # inclusive corners; no box skipped
    mask = np.array([True, True, False, True, True, True])
    labels = np.array([3, 3, 1, 1, 0, 2])
    np.testing.assert_array_equal(analysis.examples_per_class(mask, labels, count=3), [0, 3, 4])
    assert len(analysis.examples_per_class(mask, labels, count=10)) == 4  # one per class at most


def test_confusion_pairs_top_predictions_and_errors():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 2, 1, 1, 0, 2])
    confusion = analysis.confusion_matrix(labels, predictions, 3)
    assert confusion.tolist() == [[1, 2, 1], [0, 2, 0], [1, 0, 1]]
    pairs = analysis.most_confused_pairs(confusion, ["a", "b", "c"], count=5)
    assert [(p["true"], p["predicted"], p["images"]) for p in pairs] == [("a", "b", 2), ("a", "c", 1), ("c", "a", 1)]
    assert pairs[0]["share"] == 0.5
    classes, probabilities = analysis.top_predictions(np.log([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]), k=2)
    assert classes.tolist() == [[1, 2], [0, 2]]
    np.testing.assert_allclose(probabilities, [[0.6, 0.3], [0.5, 0.3]])
    np.testing.assert_allclose(measures.standard_error([0.5, 0.0], [50, 50]), [np.sqrt(0.25 / 50), 0.0])
    logits = np.array([[0.0, 3.0], [2.0, 0.0], [0.0, 1.0]])
    wrong, confidence = analysis.confident_mistakes(np.array([0, 0, 0]), logits, count=5)
    assert wrong.tolist() == [0, 2] and confidence[0] > confidence[1] > 0.5
    assert analysis.misclassified(np.array([0, 0, 0]), logits, count=1).tolist() == [0]


def test_untrained_twin_is_the_runs_initialisation(tmp_path):
    from tinyconv.model.build import build_model
    from tinyconv.model.config import get_config

    config = get_config("tiny", num_classes=10, depths=(1, 1, 1))
    keras.utils.set_random_seed(7)
    initial = build_model(config)
    trained = build_model(config)
    trained.set_weights([w + 0.5 for w in initial.get_weights()])  # "training" moved every weight
    loaded = analysis.TrainedModel(model=trained, path=tmp_path / "m.keras", run={"model": config.to_dict(), "train": {"seed": 7}}, val=None)
    twin = analysis.untrained_twin(loaded)
    for a, b in zip(twin.get_weights(), initial.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = build_model(get_config("tiny", num_classes=10))
    with pytest.raises(TinyconvError, match="cannot rebuild it untrained"):
        analysis.untrained_twin(analysis.TrainedModel(model=other, path="x.keras", run={"model": config.to_dict()}, val=None))


def test_untrained_twin_takes_its_batchnorm_statistics_from_val_images(tmp_path):
    """Keras' initial BatchNorm statistics (mean 0, variance 1) match no input: in inference mode an untrained
    model's activations then collapse, and notebook 05 read its receptive fields and gates from that collapse. The
    twin's statistics come from val images: in inference mode it computes what training mode computes on them."""
    from tinyconv.data.augment import normalize
    from tinyconv.model.build import build_model
    from tinyconv.model.config import get_config

    class Val:  # the part of a Split untrained_twin reads
        images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)

        def __len__(self):
            return len(self.images)

    config = get_config("tiny", num_classes=10, depths=(1, 1, 1))
    keras.utils.set_random_seed(7)
    initial = build_model(config)
    loaded = analysis.TrainedModel(model=initial, path=tmp_path / "m.keras",
                                   run={"model": config.to_dict(), "train": {"seed": 7}}, val=Val())
    x = np.asarray(normalize(Val.images))
    raw = analysis.untrained_twin(loaded, calibration_images=0)
    twin = analysis.untrained_twin(loaded, calibration_images=16)
    for a, b in zip(twin.trainable_weights, raw.trainable_weights):  # the weights are the initialisation's
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    batch_mode = np.asarray(raw(x, training=True))
    np.testing.assert_allclose(np.asarray(twin(x, training=False)), batch_mode, rtol=0.02, atol=0.02 * np.abs(batch_mode).max())
    assert not np.allclose(np.asarray(raw(x, training=False)), batch_mode, rtol=0.1, atol=0.1 * np.abs(batch_mode).max())
    norms = [layer for layer in twin._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.momentum == config.bn_momentum for layer in norms)  # restored after calibrating


def test_profile_model_config_and_seed():
    quick = analysis.profile_model_config("quick")
    assert (quick.name, quick.num_classes) == ("tiny", 10)
    ci = analysis.profile_model_config("ci")
    assert ci.widths == (16, 32, 64) and ci.num_classes == 4
    assert analysis.profile_model_config("reference").name == "seed"
    assert analysis.profile_model_config("full").num_classes == 200
    assert analysis.profile_seed("quick") == 0 and analysis.profile_seed(None) == 42


def test_default_model_prefers_the_most_trained_seed(tmp_path):
    run_model = tmp_path / "run" / "best.keras"
    assert analysis.default_model(run_model, tmp_path) == (run_model, "the model notebook 04 trained (its best checkpoint)")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "seed-reference-e15.keras").write_bytes(b"x")
    path, what = analysis.default_model(run_model, tmp_path)
    assert path.name == "seed-reference-e15.keras" and "15 of the reference profile's 100 epochs" in what
    (tmp_path / "models" / "seed-full.keras").write_bytes(b"x")
    assert analysis.default_model(run_model, tmp_path)[0].name == "seed-full.keras"


def test_block_source_and_labels(tiny_model):
    source = analysis.block_forward_source()
    assert source.startswith("def spatial_mix(") and "def call(self, inputs, training=None):" in source
    assert "self.layer_scale(y)" in source
    labels = {analysis.describe_block(b.layer) for b in analysis.find_blocks(tiny_model)}
    assert labels == {"depthwise 9x9", "mixed 1x7+7x1, 3x3", "axial 1x5+5x1"}


def test_training_summary_states_chance_error_and_the_selection_caveat():
    metrics = dict(best_epoch=11, epochs=12, top1=0.664, train_top1=0.805, wall_s=246.0, device="CPU (2 cores)",
                   images_per_s=268.0, params=385_942)
    evaluation = dict(classes=10, images=500, top1=0.676, top5=0.972, tta=dict(top1=0.70, top5=0.966))
    text = analysis.training_summary(metrics, evaluation)
    assert "val top-1 67.6% ± 2.1%" in text  # sqrt(0.676 * 0.324 / 500)
    assert "chance 10.0%" in text and "top-5 97.2% (chance 50%)" in text
    assert "flip test-time augmentation: top-1 70.0%" in text
    assert "epoch 11 of 12" in text and "optimistic" in text and "4.1 min" in text and "385,942" in text
    text = analysis.training_summary({**metrics, "params": None}, {**evaluation, "classes": 4, "tta": None})
    assert "top-4" in text and "test-time" not in text


def _reference_folder(root, name, epochs, best=0.3, planned=100, config=True):
    """results/<name>/ with a history.csv of `epochs` rows whose val top-1 peaks at `best`, and a config.json."""
    import json

    folder = root / "results" / name
    folder.mkdir(parents=True)
    rows = ["epoch,loss,top1,val_loss,val_top1,lr,epoch_s,train_s,images_per_s"]
    rows += [f"{e},{4 - 0.1 * e},{0.02 * e},{4 - 0.1 * e},{best * (e + 1) / epochs},0.001,24,22,4500"
             for e in range(epochs)]
    (folder / "history.csv").write_text("\n".join(rows) + "\n")
    if config:
        (folder / "config.json").write_text(json.dumps({
            "profile": "reference", "preset": "seed", "device": "1x GPU",
            "train": {"epochs": planned, "classes": None}, "model": {"num_classes": 200}}))
    return folder


def test_reference_run_picks_the_most_advanced_gpu_run(tmp_path):
    import json
    import shutil

    assert analysis.reference_run(tmp_path) is None
    _reference_folder(tmp_path, "seed-reference-h200", 15, best=0.488)
    _reference_folder(tmp_path, "seed-reference-h100", 15, best=0.4925)
    (tmp_path / "results" / "seed-reference-empty").mkdir()  # no history.csv: not a candidate
    run = analysis.reference_run(tmp_path)
    assert run["path"].name == "seed-reference-h100"  # a tie on epochs: the better val top-1
    assert (run["epochs"], run["planned"], run["classes"], run["best_epoch"]) == (15, 100, 200, 15)
    assert run["best_top1"] == pytest.approx(0.4925) and len(run["history"]) == 15
    sentence = analysis.reference_run_sentence(run, "results/seed-reference-h100")
    assert "`results/seed-reference-h100` (trained on 1x GPU), reached **15 of its 100 epochs**" in sentence
    assert "val top-1 49.2% at epoch 15 (the reference's log: 47.7% at that epoch)" in sentence
    # the run that resumes across leases: first on a tie, and preferred once it has more epochs
    _reference_folder(tmp_path, "seed-reference", 15, best=0.40)
    assert analysis.reference_run(tmp_path)["path"].name == "seed-reference"
    shutil.rmtree(tmp_path / "results" / "seed-reference")
    _reference_folder(tmp_path, "seed-reference", 100, best=0.63, config=False)  # no config: the reference's 100
    run = analysis.reference_run(tmp_path)
    assert run["path"].name == "seed-reference" and (run["epochs"], run["planned"], run["classes"]) == (100, 100, 200)
    assert "reached **100 of its 100 epochs**" in analysis.reference_run_sentence(run)
    # a run continued from lease to lease: where its epochs ran comes from sessions.jsonl, not the first config
    sessions = [{"from_epoch": 0, "device": "CPU (2 cores)"}, {"from_epoch": 2, "device": "CPU (2 cores)"},
                {"from_epoch": 15, "device": "1x NVIDIA H100"}, {"from_epoch": 40, "device": "1x NVIDIA H100"},
                {"from_epoch": 100, "device": "CPU (2 cores)"}]  # the last: stopped before it completed an epoch
    (tmp_path / "results" / "seed-reference" / "sessions.jsonl").write_text(
        "\n".join(json.dumps(entry) for entry in sessions) + "\n")
    run = analysis.reference_run(tmp_path)
    assert run["device"] == "CPU (2 cores), 15 epochs in 2 sessions; 1x NVIDIA H100, 85 epochs in 2 sessions"
    sentence = analysis.reference_run_sentence(run)
    assert "(trained on CPU (2 cores), 15 epochs in 2 sessions; 1x NVIDIA H100, 85 epochs in 2 sessions)" in sentence
    (tmp_path / "results" / "seed-reference" / "sessions.jsonl").write_text("{not json\n")
    assert analysis.reference_run(tmp_path)["device"] is None  # unreadable, and no config.json to fall back on
    (tmp_path / "results" / "seed-reference" / "sessions.jsonl").write_text('{"device": "CPU (2 cores)"}\n')
    assert analysis.reference_run(tmp_path)["device"] is None  # a line without its first epoch: damaged, the same


def test_the_committed_gpu_runs_are_found():
    from tinyconv.study.params import REPO_ROOT

    run = analysis.reference_run(REPO_ROOT)
    assert run is not None and run["path"].name.startswith("seed-reference") and run["planned"] == 100
    assert 1 <= run["epochs"] <= 100 and run["classes"] == 200


# ------------------------------------------------------------------- sweep results (notebook 06)


def _sweep(tmp_path, trial_folders=True):
    """A two-variant, two-seed sweep: results.csv and, optionally, each trial's run folder (metrics, config)."""
    import json

    from tinyconv.experiments import results as sweep_results

    rows = []
    for variant, top1 in (("base", (0.14, 0.16)), ("fast", (0.34, 0.36))):
        for seed, value in enumerate(top1):
            trial = f"{variant}-s{seed}"
            rows.append(dict(trial=trial, variant=variant, preset="tiny", overrides="" if variant == "base" else
                             "preset=fast", seed=seed, params=1000, macs=2000, top1=value, top5=0.6, best_top1=value,
                             train_img_s=30.0, wall_s=40.0, epochs=1, device="CPU", run_dir=trial, status="done"))
            if trial_folders:
                (tmp_path / trial).mkdir(parents=True)
                (tmp_path / trial / "metrics.json").write_text(json.dumps(
                    {"epochs": 1, "classes": 10, "train_images": 1200, "val_images": 500}))
                (tmp_path / trial / "config.json").write_text(json.dumps({"train": {"max_train_per_class": 120}}))
    sweep_results.write_results(rows, tmp_path)
    return tmp_path / "results.csv", sweep_results.read_results(tmp_path / "results.csv")


def test_sweep_setup_is_read_from_the_trials_run_folders(tmp_path):
    from tinyconv.experiments import results as sweep_results

    path, rows = _sweep(tmp_path)
    setup = sweep_results.sweep_setup(path, rows)
    assert {k: setup[k] for k in ("epochs", "classes", "train_images", "val_images", "train_per_class")} == dict(
        epochs=1, classes=10, train_images=1200, val_images=500, train_per_class=120)
    assert setup["chance"] == pytest.approx(0.1) and setup["trials_read"] == 4
    summary = sweep_results.variant_summary(rows)
    text = sweep_results.format_setup_md(setup, summary, "base")
    assert "Each trial trained for 1 epoch on 1,200 train images of 10 classes (120 per class)" in text
    assert "scored on 500 val images" in text and "how fast a variant learns in its first epoch" in text
    assert "not the accuracy it would reach after a full schedule" in text
    assert "Chance is **10.0%**; the baseline `base` reaches **15.0%**" in text and "all 4 trials" in text
    report = sweep_results.format_noise_report(rows, "base", setup=setup)
    assert "`fast`: +20.00 points" in report  # beyond the noise...
    assert "**Scope.** Each trial trained for 1 epoch" in report  # ... in this set-up only
    assert "So `fast` +20.0 points beyond the noise says that it learns faster in this set-up, not that it " \
           "would end higher after a full schedule." in report
    assert "Scope" not in sweep_results.format_noise_report(rows, "base")  # results.md stays as it was
    table = sweep_results.format_variants_md(rows, "base", setup)
    assert table.startswith("Each trial trained for 1 epoch") and "verdict on this set-up only" in table
    assert not sweep_results.format_variants_md(rows, "base").startswith("Each trial")


def test_sweep_setup_without_run_folders_says_what_is_unknown(tmp_path):
    from tinyconv.experiments import results as sweep_results

    path, rows = _sweep(tmp_path, trial_folders=False)
    setup = sweep_results.sweep_setup(path, rows)
    assert setup["epochs"] == 1 and setup["classes"] is None and setup["chance"] is None and setup["trials_read"] == 0
    text = sweep_results.format_setup_md(setup, sweep_results.variant_summary(rows), "base")
    assert "an unrecorded number of train images" in text and "no chance level is drawn" in text
    assert "results.csv's epochs column" in text


def test_the_committed_sweep_is_one_epoch_on_1200_images():
    from tinyconv.experiments import results as sweep_results

    path, _ = sweep_results.resolve_results(None, "unused")
    rows = sweep_results.read_results(path)
    setup = sweep_results.sweep_setup(path, rows)
    assert (setup["epochs"], setup["train_images"], setup["classes"]) == (1, 1200, 10)
    assert setup["trials_read"] == setup["trials"] == len(rows)
