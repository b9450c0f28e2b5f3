"""The `tinyconv` command's argument handling: recipe fields as flags, one-line errors."""

from __future__ import annotations

import json

import pytest

from tinyconv import cli


@pytest.mark.slow  # trains an epoch
def test_recipe_fields_work_as_flags(synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main([
        "train", "--profile", "ci", "--epochs", "1", "--data-dir", str(synthetic_data_dir), "--out", str(out),
        "--lr", "0.002", "--mix-prob=0.5", "--set", "label_smoothing=0.1",
    ])
    assert rc == 0
    recipe = json.loads((out / "config.json").read_text())["train"]
    assert (recipe["lr"], recipe["mix_prob"], recipe["label_smoothing"], recipe["epochs"]) == (0.002, 0.5, 0.1, 1)


def test_unknown_recipe_flag_is_a_one_line_error(synthetic_data_dir, tmp_path, capsys):
    rc = cli.main(["train", "--profile", "ci", "--data-dir", str(synthetic_data_dir), "--out", str(tmp_path / "r"),
                   "--learning-speed", "3"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "unknown recipe field 'learning_speed'" in err
    assert not (tmp_path / "r").exists()


def test_extra_arguments_outside_train_are_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["info", "seed", "--lr", "1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --lr 1" in capsys.readouterr().err
