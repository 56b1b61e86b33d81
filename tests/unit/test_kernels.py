"""The compiled Adam kernel: bit-identical to the numpy update, and never loaded by serving."""

import subprocess
import sys

import numpy as np
import pytest

from ocr_service.nn import optim
from ocr_service.nn.optim import Adam
from ocr_testing.server_utils import REPO

pytest.importorskip("numba")


def _gradients(rng, n, dtype, steps):
    """Gradients over 30 decades, half of them zero: dead units' moments decay through the
    denormal flush, tiny and huge ones round differently if any operation differs."""
    for _ in range(steps):
        scale = 10.0 ** rng.integers(-30, 2, n)
        yield (rng.standard_normal(n) * scale * (rng.random(n) < 0.5)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("settings", [{}, {"weight_decay": 0.01},
                                      {"weight_decay": 0.01, "decoupled": False}],
                         ids=["adam", "adamw", "adam-l2"])
def test_compiled_adam_gives_the_numpy_path_weights_bit_for_bit(dtype, settings):
    rng = np.random.default_rng(0)
    n = 70_001  # more than one of the numpy path's cache blocks, and not a multiple of them
    start = rng.standard_normal(n).astype(dtype)
    runs = []
    for compiled in (False, True):
        p, g = start.copy(), np.empty_like(start)
        runs.append((p, g, Adam([(p, g)], lr=1e-3, compiled=compiled, **settings)))
    for grad in _gradients(rng, n, dtype, steps=150):  # past several flush intervals
        for _, g, opt in runs:
            g[...] = grad
            opt.step()
    (p0, g0, numpy_opt), (p1, g1, compiled_opt) = runs
    assert p0.tobytes() == p1.tobytes()
    assert numpy_opt.m[0].tobytes() == compiled_opt.m[0].tobytes()
    assert numpy_opt.v[0].tobytes() == compiled_opt.v[0].tobytes()
    assert g0.tobytes() == g1.tobytes()  # L2 is added to the gradient in place by both


def test_compiled_adam_updates_every_layer_of_a_network_that_is_not_packed():
    rng = np.random.default_rng(1)
    pairs = [(rng.standard_normal(s).astype(np.float32), rng.standard_normal(s).astype(np.float32))
             for s in [(5, 3), (3,), (3, 2)]]
    copies = [(p.copy(), g.copy()) for p, g in pairs]
    Adam(pairs, lr=0.1, compiled=True).step()
    Adam(copies, lr=0.1, compiled=False).step()
    for (p, _), (q, _) in zip(pairs, copies, strict=True):
        assert p.shape == q.shape and np.array_equal(p, q) and not np.array_equal(p, 0)


def test_without_numba_adam_falls_back_to_numpy_unless_compiled_is_demanded(monkeypatch):
    monkeypatch.setattr(optim, "adam_kernel", lambda: None)
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    Adam([(p, g)], lr=0.1).step()
    assert np.allclose(p, 0.9)
    with pytest.raises(RuntimeError, match="numba"):
        Adam([(p, g)], lr=0.1, compiled=True)


def test_serving_a_prediction_never_imports_numba():
    """numba and LLVM cost a worker tens of MB; only training needs them."""
    script = (
        "import sys\n"
        "from ocr_testing.server_utils import digit_png\n"
        "from ocr_service.app import create_app\n"
        "client = create_app().test_client()\n"
        "r = client.post('/v1/predict', data=digit_png(), content_type='image/png')\n"
        "assert r.status_code == 200, r.get_data(as_text=True)\n"
        "print('numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120, cwd=REPO)
    assert out.stdout.strip() == "False"
