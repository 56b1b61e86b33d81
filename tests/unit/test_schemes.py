"""The input schemes: one table, importable without the image stack."""

import subprocess
import sys

from ocr_service import datasets, model_store, preprocess
from ocr_service.schemes import SCHEMES


def test_every_module_reads_the_one_table():
    assert SCHEMES == {"mnist": (28, 28), "optdigits": (8, 8)}
    assert preprocess.SCHEMES is SCHEMES
    assert datasets.SCHEMES is SCHEMES and model_store.SCHEMES is SCHEMES


def test_naming_the_schemes_loads_no_numpy():
    script = "import sys, ocr_service.schemes; print('numpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
