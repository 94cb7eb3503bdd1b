"""The Nion extra stays optional: without it the core imports and says how to install it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter in which every import of Nion's packages fails, as where the
# extra is not installed (here it may be).
WITHOUT_NION = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoNion(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("nion", "nionswift_plugin"):
                raise ImportError(f"No module named {name!r} (blocked)")
            return None

    sys.meta_path.insert(0, NoNion())
    """
)


def run_without_nion(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_NION + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def nion_modules(modules) -> list[str]:
    return [m for m in modules if m.split(".")[0] in ("nion", "nionswift_plugin")]


def test_the_drivers_and_the_nion_backend_modules_import_without_nion_or_torch():
    result = run_without_nion(
        """
        import dklscope.drivers, dklscope.drivers.conformance
        import dklscope.drivers.nion_swift.backend, dklscope.drivers.nion_swift.usim
        loaded = [m for m in sys.modules if m.split(".")[0] in ("nion", "torch")]
        assert not loaded, loaded
        """
    )
    assert result.returncode == 0, result.stderr


def test_the_controller_imports_and_reads_the_nion_config_without_nion():
    result = run_without_nion(
        """
        import dklscope.campaign.loop, dklscope.cli, dklscope.campaign.instruments
        from dklscope.config import load_config
        config = load_config("configs/nion_usim.yaml")
        assert config.instrument.nion_usim.sample == "flake"
        assert not [m for m in sys.modules if m.split(".")[0] == "nion"]
        """
    )
    assert result.returncode == 0, result.stderr


def test_serve_and_run_of_a_nion_config_without_nion_say_how_to_install_it(tmp_path):
    for args in (
        ["serve", "configs/nion_usim.yaml", "--bind", "tcp://127.0.0.1:0"],
        ["run", "configs/nion_usim.yaml", "--out", str(tmp_path / "run")],
    ):
        result = run_without_nion(f"from dklscope.cli import main; sys.exit(main({args!r}))")
        assert result.returncode == 2, result.stderr
        assert "instrument.nion_usim" in result.stderr
        assert "pip install 'dklscope[nion]'" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "run" / "journal.sqlite").exists()
