import subprocess
import sys

import pytest

from dklscope.cli import main

BASE = """
instrument: {simulator: {shape: [24, 24]}}
scalarizer: {window: [1.05, 1.35]}
model: {first_fit_iterations: 5, refit_iterations: 2}
"""
GOOD = BASE + "budget: {seed_points: 3, steps: 2}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + "budget: {stesp: 2}", "budget.stesp: unknown key (did you mean 'steps'?)"),
        (BASE + "budget: {steps: -4}", "budget.steps: must be >= 0, got -4"),
    ],
)
def test_a_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, capsys, text, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_the_installed_command_reports_without_a_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(GOOD.replace("steps: 2", "steps: -1"))
    result = subprocess.run(
        [sys.executable, "-m", "dklscope", "run", str(config), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {config}: budget.steps: must be >= 0, got -1"
    ]


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_help_explains_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--out" in out and "journal" in out


def test_an_output_folder_with_a_journal_is_not_overwritten(tmp_path, capsys):
    config = tmp_path / "good.yaml"
    config.write_text(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.sqlite").write_bytes(b"precious")
    assert main(["run", str(config), "--out", str(out)]) == 2
    assert "already holds a campaign journal" in capsys.readouterr().err
    assert (out / "journal.sqlite").read_bytes() == b"precious"


def test_what_the_instrument_cannot_do_exits_2_before_any_journal_is_made(tmp_path, capsys):
    config = tmp_path / "window.yaml"
    config.write_text(GOOD.replace("window: [1.05, 1.35]", "window: [40.0, 50.0]"))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "scalarizer.window: [40.0, 50.0] holds no channel of the spectral axis" in err
    assert not (out / "journal.sqlite").exists()
