"""The training recipe, run folders (artifacts, resume after a real kill, refusal to overwrite), evaluate, predict.

The `ci` profile trains in seconds; one run on the synthetic dataset is shared by the artifact, evaluate
and predict tests. The resume test kills a real `python -m tinyconv train` process with SIGKILL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from killing import kill_after_first_backup  # tests/ (conftest puts it on sys.path)
from tinyconv.errors import TinyconvError

REPO = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"top1", "top5", "val_loss", "params", "wall_s", "images_per_s", "device", "epochs"}


def _cli(*args, env_extra=None, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "tinyconv", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _tensorboard_tags(folder: Path) -> set[str]:
    import tensorflow as tf

    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


# ------------------------------------------------------------------------------------- config


def test_warmup_cosine_values_at_known_steps():
    import keras

    from tinyconv.training.schedule import WarmupCosine

    schedule = WarmupCosine(peak_lr=3e-3, warmup_steps=100, total_steps=1100, min_lr=1e-5)
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == pytest.approx(3e-3 / 100, rel=1e-5)  # the first update already moves
    assert lr(49) == pytest.approx(3e-3 * 50 / 100, rel=1e-5)
    assert lr(99) == pytest.approx(3e-3, rel=1e-5)  # end of warm-up: the peak
    assert lr(100) == pytest.approx(3e-3, rel=1e-5)  # start of the cosine: still the peak
    assert lr(600) == pytest.approx((3e-3 + 1e-5) / 2, rel=1e-5)  # cosine midpoint
    assert lr(1100) == pytest.approx(1e-5, rel=1e-5)  # final
    assert lr(5000) == pytest.approx(1e-5, rel=1e-5)  # past the end it stays there
    warmup = [lr(s) for s in range(0, 100, 7)]
    decay = [lr(s) for s in range(100, 1101, 50)]
    assert warmup == sorted(warmup) and decay == sorted(decay, reverse=True)

    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, WarmupCosine) and restored.get_config() == schedule.get_config()


def test_parse_overrides_types_by_field():
    from tinyconv.training.overrides import parse_overrides

    parsed = parse_overrides(
        ["lr=1e-3", "epochs=7", "flip=false", "classes=10", "max_train_per_class=none", "mixed_precision=off",
         "model.depths=1,1,2", "model.drop_path=0.1"]
    )
    assert parsed == {
        "lr": 1e-3,
        "epochs": 7,
        "flip": False,
        "classes": 10,
        "max_train_per_class": None,
        "mixed_precision": "off",
        "model_overrides": {"depths": [1, 1, 2], "drop_path": 0.1},
    }
    assert isinstance(parsed["epochs"], int) and isinstance(parsed["lr"], float)
    assert parse_overrides(["classes=n02124075,n04067472"]) == {"classes": ["n02124075", "n04067472"]}
    assert parse_overrides(["warmup_epochs=2"])["warmup_epochs"] == 2.0


@pytest.mark.parametrize(
    "item, fragment",
    [("learning_rate=1e-3", "learning_rate"), ("epochs=ten", "epochs"), ("flip=maybe", "flip"),
     ("model.depthz=2", "depthz"), ("lr", "FIELD=VALUE")],
)
def test_parse_overrides_rejects_unknown_fields_and_bad_values(item, fragment):
    from tinyconv.training.overrides import parse_overrides

    with pytest.raises(TinyconvError, match=fragment):
        parse_overrides([item])


def test_profiles_and_make_config():
    from tinyconv.training.recipe import TrainConfig, make_config

    reference = make_config("reference")
    assert reference == TrainConfig()
    assert (reference.preset, reference.epochs, reference.batch_size, reference.lr, reference.weight_decay) == (
        "seed", 100, 128, 3e-3, 1e-5)
    assert (reference.warmup_epochs, reference.min_lr, reference.mix_prob, reference.cutout_prob,
            reference.jitter_prob) == (5, 1e-5, 1.0, 0.7, 0.8)
    assert (reference.lr_update, reference.weight_decay_mode, reference.seed) == ("epoch", "per_step", 42)
    assert (reference.crop_offset, reference.jitter_factors, reference.cutout_fill) == ("batch", "batch", "zero")
    full = make_config("full")  # the reference with per-example crop offsets and jitter factors
    assert (full.crop_offset, full.jitter_factors) == ("example", "example")
    assert full.to_dict() == {**reference.to_dict(), "crop_offset": "example", "jitter_factors": "example"}
    quick = make_config("quick")
    assert quick.preset == "tiny" and quick.classes == 10
    ci = make_config("ci", preset="seed", epochs="3", model_overrides={"depths": [1, 1, 2]})
    assert ci.preset == "seed" and ci.epochs == 3
    assert ci.model_overrides["depths"] == [1, 1, 2] and "widths" in ci.model_overrides  # merged, not replaced
    with pytest.raises(TinyconvError, match="unknown profile"):
        make_config("huge")
    with pytest.raises(TinyconvError, match="bogus"):
        make_config("ci", bogus=1)
    with pytest.raises(TinyconvError, match="mix_prob"):
        make_config("ci", mix_prob=1.5)


def _garbage_cases() -> list[tuple[str, str]]:
    """(`--set` key, value) for every recipe field (the augmentation's flat) and every model field, generated from
    the dataclasses so that a new field is covered: a word for every field, a negative number (out of every
    field's range), NaN and infinity for the float fields. None of them is a valid setting."""
    import dataclasses
    import typing

    from tinyconv.model.config import ModelConfig
    from tinyconv.training.recipe import field_types

    fields = dict(field_types())
    fields.update({f"model.{f.name}": typing.get_type_hints(ModelConfig)[f.name] for f in dataclasses.fields(ModelConfig)})
    cases = []
    for key, hint in fields.items():
        values = ["abc", "-1"]
        if hint is float or float in typing.get_args(hint):
            values += ["nan", "inf"]
        cases += [(key, value) for value in values]
    return cases


@pytest.mark.parametrize("key, value", _garbage_cases(), ids=[f"{k}={v}" for k, v in _garbage_cases()])
def test_every_field_with_a_garbage_value_is_one_line_before_the_run_folder(key, value, synthetic_data_dir, tmp_path,
                                                                            capsys):
    """`train --set KEY=VALUE` with a value of the wrong type or range: one line naming the field, exit 1, no
    traceback, and no run folder, so that the corrected command is not refused as "a different run"."""
    from tinyconv import cli

    out = tmp_path / "run"
    rc = cli.main(["train", "--profile", "ci", "--data-dir", str(synthetic_data_dir), "--out", str(out),
                   "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("tinyconv: error: ") and err.count("\n") == 1, err
    assert key.removeprefix("model.") in err or (key == "classes" and value in err), err  # classes: the wnid named
    assert not out.exists()


def test_every_config_field_refuses_a_value_of_the_wrong_type_in_the_library():
    """make_config (train, notebooks, sweeps) and get_config (info, the model) check each field's type, not only the
    text of an override: a dict is of no field's type."""
    import dataclasses

    from tinyconv.model.config import ModelConfig, get_config
    from tinyconv.training.recipe import field_types, make_config

    for name in field_types():
        with pytest.raises(TinyconvError, match="model_overrides|bad" if name == "model_overrides" else name):
            make_config("ci", **{name: {"bad": 1}})
    for field in dataclasses.fields(ModelConfig):
        with pytest.raises(TinyconvError, match=field.name):
            get_config("tiny", **{field.name: {"bad": 1}})
        with pytest.raises(TinyconvError, match=field.name):  # through the recipe as well
            make_config("ci", model_overrides={field.name: {"bad": 1}})


def test_every_config_field_has_a_range_rule():
    """The rules are per field: a new field must say its range (None where its type says it all)."""
    import dataclasses

    from tinyconv.data.augment_config import AUGMENT_RULES, AugmentConfig
    from tinyconv.model.config import MODEL_RULES, ModelConfig
    from tinyconv.training.recipe import RECIPE_RULES, TrainConfig

    for cls, rules in ((TrainConfig, RECIPE_RULES), (AugmentConfig, AUGMENT_RULES), (ModelConfig, MODEL_RULES)):
        assert sorted(rules) == sorted(f.name for f in dataclasses.fields(cls)), cls.__name__


@pytest.mark.parametrize("item, fragment", [
    ("model.depths=[0,0,0]", "'depths' must be a list of integers >= 1"),
    ("model.widths=0", "'widths' must be a list of integers >= 1"),
    ("model.image_size=0", "'image_size' must be an integer >= 1"),
    ("model.kernel_sizes=[3.0,3,3]", "model.kernel_sizes='[3.0,3,3]': expected an integer"),
    ("model.bn_epsilon=-1", "'bn_epsilon' must be a number > 0"),
    ("model.gelu_approximate=abc", "model.gelu_approximate='abc': expected true or false"),
    ("model.gelu_approximate=yes", "expected true or false"),
    ("flip=yes", "flip='yes': expected true or false"),
    ("lr=inf", "'lr' must be a number > 0, got inf"),
    ("seed=-1", "'seed' must be an integer in [0, 4294967295]"),
    ("min_lr=1", "'min_lr' (1.0) exceeds lr"),
    ("model.num_classes=10", "use classes=K"),
    ("model.name=big", "use preset=NAME"),
])
def test_hostile_overrides_are_refused_with_their_reason(item, fragment):
    from tinyconv.training.overrides import parse_overrides
    from tinyconv.training.recipe import make_config

    with pytest.raises(TinyconvError) as caught:
        make_config("ci", **parse_overrides([item]))
    assert fragment in str(caught.value)


def test_strict_booleans_and_typed_model_overrides():
    from tinyconv.training.overrides import parse_overrides

    assert parse_overrides(["flip=1", "model.gelu_approximate=0"]) == {
        "flip": True, "model_overrides": {"gelu_approximate": False}}
    assert parse_overrides(["model.gelu_approximate=TRUE"])["model_overrides"] == {"gelu_approximate": True}
    assert parse_overrides(["model.widths=[16, 32, 64]", "model.kernel_sizes=5", "model.layer_scale_init=none",
                            "model.modes=depthwise,axial,mixed"])["model_overrides"] == {
        "widths": [16, 32, 64], "kernel_sizes": 5, "layer_scale_init": None, "modes": ["depthwise", "axial", "mixed"]}


def test_set_preset_switches_the_preset_and_two_presets_are_refused(synthetic_data_dir, tmp_path, capsys):
    """`--set preset=NAME` was a TypeError for every value (make_config got the preset twice)."""
    from tinyconv import cli
    from tinyconv.training.recipe import make_config
    from tinyconv.training.train import plan_run

    assert make_config("ci", preset=None).preset == "tiny"  # the keyword None keeps the profile's (notebook 04)
    assert make_config("ci", "seed", preset="seed").preset == "seed"  # the same preset twice is one preset
    plan = plan_run(None, "ci", synthetic_data_dir, tmp_path / "run", {"preset": "seed"})
    assert plan.config.preset == "seed" and plan.model_config.name == "seed" and plan.state == "new"
    assert not (tmp_path / "run").exists()  # planning writes nothing
    rc = cli.main(["train", "--profile", "ci", "--data-dir", str(synthetic_data_dir), "--out", str(tmp_path / "r"),
                   "--preset", "tiny", "--set", "preset=seed"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "two presets, 'tiny'" in err and "'seed'" in err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------- a ci run


# ci_run (tests/conftest.py): one 2-epoch ci run on the synthetic dataset, shared by the session


def test_ci_run_writes_every_artifact(ci_run):
    from tinyconv.training.history import HISTORY_COLUMNS, read_history

    run_dir, metrics = ci_run
    for name in ("config.json", "history.csv", "model.keras", "best.keras", "metrics.json", "figures/curves.png"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "backup").exists()  # resume state is removed once the run is complete
    assert not list(run_dir.rglob(".*.tmp*")), "temp files left behind"

    config = json.loads((run_dir / "config.json").read_text())
    assert config["profile"] == "ci" and config["preset"] == "tiny"
    assert config["train"]["epochs"] == 2 and config["model"]["num_classes"] == 4
    assert config["wnids"] == ["n02124075", "n04067472", "n04540053", "n04099969"]
    assert config["names"][0] == "Egyptian cat"

    rows = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in rows] == [0, 1]
    assert (run_dir / "history.csv").read_text().splitlines()[0] == ",".join(HISTORY_COLUMNS)
    assert all(np.isfinite(row["loss"]) and 0.0 <= row["val_top1"] <= 1.0 for row in rows)

    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_KEYS <= set(on_disk) and on_disk == json.loads(json.dumps(metrics))
    assert metrics["epochs"] == 2 and metrics["top1"] == rows[-1]["val_top1"]
    assert metrics["params"] > 0 and metrics["wall_s"] > 0 and metrics["images_per_s"] > 0
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    assert metrics["device"].startswith("CPU") or "x " in metrics["device"]

    assert {"epoch_loss", "epoch_top1", "epoch_learning_rate"} <= _tensorboard_tags(run_dir / "tb" / "train")
    assert {"epoch_loss", "epoch_top1"} <= _tensorboard_tags(run_dir / "tb" / "validation")
    assert (run_dir / "figures" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_model_loads_with_optimizer_state(ci_run):
    import keras

    import tinyconv.deploy.inference  # noqa: F401  (registers WarmupCosine and the layers)

    run_dir, _ = ci_run
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    steps_per_epoch = json.loads((run_dir / "config.json").read_text())["steps_per_epoch"]
    assert int(model.optimizer.iterations.numpy()) == 2 * steps_per_epoch
    assert model.output_shape == (None, 4)


def test_complete_run_is_returned_without_training(ci_run, synthetic_data_dir, capsys):
    from tinyconv.training.train import train

    run_dir, metrics = ci_run
    stamp = (run_dir / "history.csv").stat().st_mtime_ns
    again = train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 2})
    assert again == json.loads(json.dumps(metrics))
    assert "already holds this run" in capsys.readouterr().out
    assert (run_dir / "history.csv").stat().st_mtime_ns == stamp


def test_a_different_config_in_the_same_folder_is_refused(ci_run, synthetic_data_dir, tmp_path):
    from tinyconv.training.train import train

    run_dir, _ = ci_run
    before = (run_dir / "config.json").read_text()
    with pytest.raises(TinyconvError, match=r"config\.json holds a different run.*train\.lr"):
        train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 2, "lr": 1e-2})
    assert (run_dir / "config.json").read_text() == before

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    with pytest.raises(TinyconvError, match="holds no config.json"):
        train(profile="ci", data_dir=synthetic_data_dir, out=foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.txt"]


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_state(synthetic_data_dir, tmp_path):
    import keras

    from tinyconv.training.history import read_history
    from tinyconv.training.train import train

    class PoisonWeights(keras.callbacks.Callback):
        """Turn the stem's weights to NaN when epoch 2 begins: epoch 1 is good, epoch 2 diverges."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                kernel = self.model.get_layer("stem_conv").kernel
                kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))

    run_dir = tmp_path / "nan"
    with pytest.raises(TinyconvError, match=r"training diverged.*loss became nan at epoch 2.*last good state"):
        train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 2},
              callbacks=[PoisonWeights()])
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0]
    meta = json.loads((run_dir / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] == 1 and (run_dir / "backup" / meta["weights"]).is_file()
    assert (run_dir / "best.keras").is_file()
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.keras").exists()




@pytest.mark.kill
def test_resume_after_sigkill_ends_with_each_epoch_once(ci_run, synthetic_data_dir, tmp_path):
    """A ci run SIGKILLed after its first backed-up epoch and resumed by the same command ends with each epoch once,
    and as the same run uninterrupted (the session's ci_run, 2 epochs): the same history and weights, bit for bit,
    now that the input pipeline keeps its order (a random state lost on resume would show here)."""
    from tinyconv.training.history import read_history

    epochs = 2
    run_dir = tmp_path / "killed"
    command = ["train", "--profile", "ci", "--epochs", epochs, "--data-dir", synthetic_data_dir, "--out", run_dir]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    argv = [sys.executable, REPO / "tests" / "sleepy_cli.py", *command]
    killed_at = kill_after_first_backup(argv, run_dir, cwd=REPO, env=env, timeout=180)
    assert 1 <= killed_at < epochs
    history = run_dir / "history.csv"

    second = _cli(*command)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming {run_dir} from epoch {killed_at + 1} of {epochs}" in second.stdout
    assert "Epoch 1/2" not in second.stdout  # the completed epochs were not trained again

    assert [row["epoch"] for row in read_history(history)] == list(range(epochs))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == epochs
    import keras

    import tinyconv.deploy.inference  # noqa: F401

    model = keras.saving.load_model(run_dir / "model.keras")
    steps = json.loads((run_dir / "config.json").read_text())["steps_per_epoch"]
    assert int(model.optimizer.iterations.numpy()) == epochs * steps  # schedule position carried over
    timing = {"epoch_s", "train_s", "images_per_s"}
    uninterrupted = ci_run[0]
    assert [{k: v for k, v in row.items() if k not in timing} for row in read_history(history)] == \
        [{k: v for k, v in row.items() if k not in timing} for row in read_history(uninterrupted / "history.csv")]
    whole = keras.saving.load_model(uninterrupted / "model.keras")
    for got, want in zip(model.variables + model.optimizer.variables, whole.variables + whole.optimizer.variables,
                         strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=got.path)


# ------------------------------------------------------------------------------- evaluate, predict


def test_evaluate_matches_the_last_validation_and_names_classes(ci_run, synthetic_data_dir):
    from tinyconv.deploy.inference import evaluate, format_evaluation

    run_dir, metrics = ci_run
    result = evaluate(run_dir, data_dir=synthetic_data_dir, tta=True)
    config = json.loads((run_dir / "config.json").read_text())
    assert result["classes"] == 4 and result["images"] == 24  # 6 val images for each of the 4 classes
    assert [c["wnid"] for c in result["per_class"]] == config["wnids"]
    assert [c["images"] for c in result["per_class"]] == [6, 6, 6, 6]
    assert result["top1"] == pytest.approx(metrics["top1"], abs=1e-6)  # same weights, same images
    assert result["top1"] == pytest.approx(np.mean([c["top1"] for c in result["per_class"]]))
    assert result["top5"] == 1.0  # 4 classes: the true one is always among the top 5
    assert 0.0 <= result["tta"]["top1"] <= 1.0 and len(result["tta"]["per_class"]) == 4
    text = format_evaluation(result)
    assert "top-1" in text and "flip TTA" in text and "Egyptian cat" in text

    without = evaluate(run_dir / "best.keras", data_dir=synthetic_data_dir, tta=False)
    assert without["tta"] is None and without["images"] == 24


def test_predict_any_size_jpeg_or_png_with_names(ci_run, tmp_path):
    from tinyconv.deploy.inference import format_predictions, predict

    run_dir, _ = ci_run
    rng = np.random.default_rng(0)
    big_png = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (300, 200, 4), dtype=np.uint8), mode="RGBA").save(big_png)
    small_gray = tmp_path / "small.jpg"
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8), mode="L").save(small_gray)

    result = predict(run_dir, [big_png, small_gray], data_dir=None, top=5)
    config = json.loads((run_dir / "config.json").read_text())
    assert [entry["image"] for entry in result] == [str(big_png), str(small_gray)]
    for entry in result:
        top = entry["top"]
        assert [guess["rank"] for guess in top] == [1, 2, 3, 4]  # 4 classes: top 5 shows all of them
        probabilities = [guess["probability"] for guess in top]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        for guess in top:
            index = config["wnids"].index(guess["wnid"])
            assert guess["name"] == config["names"][index] and guess["words"] == config["words"][index]
    assert len(predict(run_dir / "model.keras", big_png, top=2)[0]["top"]) == 2
    text = format_predictions(result)
    assert str(big_png) in text and "%" in text


def test_predict_errors_are_one_line(ci_run, tmp_path, capsys):
    from tinyconv.cli import main

    run_dir, _ = ci_run
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    completed = _cli("predict", run_dir, not_image)
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if "tinyconv: error:" in line]
    assert len(errors) == 1 and str(not_image) in errors[0] and "not a readable JPEG or PNG" in errors[0]

    assert main(["predict", str(run_dir), str(tmp_path / "missing.png")]) == 1
    image = tmp_path / "ok.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(tmp_path / "no-run"), str(image)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "missing.png: no such image file" in err[0] and "no-run" in err[1]


# ----------------------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_ci_profile_on_real_data_writes_every_artifact(real_data_dir, tmp_path):
    from tinyconv.training.history import read_history
    from tinyconv.training.train import train

    run_dir = tmp_path / "real-ci"
    metrics = train(profile="ci", data_dir=real_data_dir, out=run_dir)
    for name in ("config.json", "history.csv", "model.keras", "best.keras", "metrics.json", "figures/curves.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb" / "train").glob("events.out.tfevents.*"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["wnids"] == ["n02124075", "n04067472", "n04540053", "n04099969"]  # first 4 of wnids.txt
    assert config["names"] == ["Egyptian cat", "reel", "volleyball", "rocking chair"]
    assert METRIC_KEYS <= set(metrics) and metrics["epochs"] == 1
    assert metrics["train_images"] == 4 * 16 and metrics["val_images"] == 4 * 8
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0]


def test_live_curves_redraws_one_display_in_ipython_and_is_silent_elsewhere(monkeypatch, tmp_path):
    import IPython.display

    from tinyconv.training.callbacks import LiveCurves
    from tinyconv.training.history import write_history

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def fake_display(obj, display_id=None):
        shown.append(("display", obj))
        return Handle()

    history = tmp_path / "history.csv"
    curves = LiveCurves(history_path=history)
    logs = {"loss": 1.0, "top1": 0.3, "top5": 0.8, "val_loss": 1.1, "val_top1": 0.25, "val_top5": 0.7}
    curves.on_epoch_end(0, logs)  # plain Python: no IPython shell, nothing is displayed
    assert shown == []

    monkeypatch.setattr(LiveCurves, "_in_ipython", staticmethod(lambda: True))
    monkeypatch.setattr(IPython.display, "display", fake_display)
    for epoch in range(2):
        write_history(history, [{"epoch": e, **logs} for e in range(epoch + 1)])
        curves.on_epoch_end(epoch, logs)
    assert [kind for kind, _ in shown] == ["display", "update"]  # one figure, redrawn in place
    assert all(obj.data[:8] == b"\x89PNG\r\n\x1a\n" for _, obj in shown)


def test_epoch_progress_prints_a_line_every_interval_with_the_epochs_rate_and_end(capsys):
    from tinyconv.training.callbacks import EpochProgress

    now = [0.0]
    progress = EpochProgress(10, 3, every_s=60, clock=lambda: now[0], wall_clock=lambda: 3600.0)
    for epoch in range(2):
        now[0] = 1000.0 * epoch
        progress.on_epoch_begin(epoch)
        for batch in range(10):  # a step every 10 s (epoch 1) and every 20 s (epoch 2)
            now[0] += 10.0 * (epoch + 1)
            progress.on_train_batch_end(batch)
    assert capsys.readouterr().out.splitlines() == [
        # 6 steps in 60 s; 4 to go at 0.1 a second, from 01:00 UTC on the wall clock
        "epoch 1/3: step 6/10 (60 %), 6.0 steps/min; its steps end in ~40 s (01:00 UTC), validation after",
        "epoch 2/3: step 3/10 (30 %), 3.0 steps/min; its steps end in ~2.3 min (01:02 UTC), validation after",
        "epoch 2/3: step 6/10 (60 %), 3.0 steps/min; its steps end in ~80 s (01:01 UTC), validation after",
        "epoch 2/3: step 9/10 (90 %), 3.0 steps/min; its steps end in ~20 s (01:00 UTC), validation after",
    ]
    assert EpochProgress.async_safe  # on JAX the hooks stay in Keras' worker threads (test_jax_backend.py)


def test_a_run_printing_to_a_log_gets_progress_lines_and_a_notebook_does_not(ci_run, tmp_path):
    from types import SimpleNamespace

    from tinyconv.training.callbacks import EpochProgress, LiveCurves
    from tinyconv.training.recipe import make_config
    from tinyconv.training.train import run_callbacks

    plan = SimpleNamespace(config=make_config("ci"), run_dir=tmp_path, profile="ci",
                           model_config=SimpleNamespace(num_classes=4),
                           doc=json.loads((ci_run[0] / "config.json").read_text()))
    data = SimpleNamespace(steps_per_epoch=7)
    assert not sys.stdout.isatty()  # pytest captures it: a log, as under nohup or in CI
    logged = [c for c in run_callbacks(plan, data, object(), []) if isinstance(c, EpochProgress)]
    assert len(logged) == 1 and logged[0].steps_per_epoch == 7
    in_notebook = run_callbacks(plan, data, object(), [LiveCurves(history_path=tmp_path / "h.csv")])
    assert not any(isinstance(c, EpochProgress) for c in in_notebook)


@pytest.mark.slow  # one more ci run
def test_two_runs_of_one_recipe_and_seed_train_alike_bit_for_bit_on_tensorflow(ci_run, synthetic_data_dir, tmp_path):
    """The CPU path is reproducible: the same recipe and seed give the same history and the same weights, bit for
    bit (tf.data keeps the batch order; before, the parallel workers' finishing order changed it, and two ci runs
    differed from the first epoch's loss on)."""
    import keras

    from tinyconv.training.history import read_history
    from tinyconv.training.train import train

    run_dir, _ = ci_run
    train(profile="ci", data_dir=synthetic_data_dir, out=tmp_path / "again", overrides={"epochs": 2})
    timing = {"epoch_s", "train_s", "images_per_s"}
    first, again = read_history(run_dir / "history.csv"), read_history(tmp_path / "again" / "history.csv")
    assert [{k: v for k, v in row.items() if k not in timing} for row in first] == \
        [{k: v for k, v in row.items() if k not in timing} for row in again]
    models = [keras.saving.load_model(folder / "model.keras") for folder in (run_dir, tmp_path / "again")]
    for a, b in zip(models[0].weights, models[1].weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
