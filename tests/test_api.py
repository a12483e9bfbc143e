"""The public API in mitigate/__init__.py: every name resolves, lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys

import mitigate


def test_every_public_name_resolves():
    for name in mitigate.__all__:
        assert getattr(mitigate, name) is not None, name
    assert set(mitigate.__all__) <= set(dir(mitigate))
    assert mitigate.__version__ == "0.1.0"
    assert mitigate.functional.__name__ == "mitigate.functional"


def test_functions_keep_their_names_when_their_modules_load():
    scan_module = importlib.import_module("mitigate.scanning")
    evaluate_module = importlib.import_module("mitigate.runs.evaluate")
    assert mitigate.scan is scan_module.scan
    assert mitigate.evaluate is evaluate_module.evaluate
    from mitigate.scanning import Predictions

    assert mitigate.Predictions is Predictions


def test_import_mitigate_does_not_import_torch():
    code = "import sys, mitigate; print('torch' in sys.modules, mitigate.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "0.1.0"]
