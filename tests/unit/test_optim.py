import math

import numpy as np
import pytest

from ocr_service.nn.optim import (
    SGD,
    Adam,
    ConstantLR,
    CosineLR,
    StepLR,
    clip_grad_norm,
    make_optimizer,
    make_schedule,
)


def _pair(p, g):
    return np.array(p, dtype=np.float64), np.array(g, dtype=np.float64)


def test_plain_sgd_step_is_p_minus_lr_g():
    p, g = _pair([1.0, -2.0], [0.5, 0.25])
    SGD([(p, g)], lr=0.1, momentum=0.0).step()
    assert p.tolist() == pytest.approx([0.95, -2.025])


def test_sgd_momentum_and_weight_decay_by_hand():
    p, g = _pair([1.0], [0.5])
    opt = SGD([(p, g)], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()  # d = 0.5 + 0.1*1 = 0.6; v = 0.6; p = 1 - 0.06 = 0.94
    assert p[0] == pytest.approx(0.94)
    g[...] = 0.5
    opt.step()  # d = 0.5 + 0.094 = 0.594; v = 0.54 + 0.594 = 1.134; p = 0.94 - 0.1134
    assert p[0] == pytest.approx(0.8266)


def test_nesterov_step_by_hand():
    p, g = _pair([1.0], [1.0])
    opt = SGD([(p, g)], lr=0.1, momentum=0.5, nesterov=True)
    opt.step()  # v = 1; update = g + mu v = 1.5; p = 0.85
    assert p[0] == pytest.approx(0.85)
    g[...] = 1.0
    opt.step()  # v = 0.5 + 1 = 1.5; update = 1 + 0.75 = 1.75; p = 0.675
    assert p[0] == pytest.approx(0.675)


def test_adam_first_steps_by_hand():
    p, g = _pair([1.0, 1.0], [0.1, -2.0])
    opt = Adam([(p, g)], lr=0.01)
    opt.step()
    # first bias-corrected step is lr * g / (|g| + eps') = lr * sign(g)
    assert p.tolist() == pytest.approx([0.99, 1.01], abs=1e-9)
    g[...] = [0.3, -2.0]
    opt.step()
    m = 0.9 * 0.1 * 0.1 + 0.1 * 0.3  # m1 = 0.01, m2 = 0.9*0.01 + 0.03
    v = 0.999 * 0.001 * 0.01 + 0.001 * 0.09
    m_hat, v_hat = m / (1 - 0.81), v / (1 - 0.999**2)
    p1 = 1.0 - 0.01 * 0.1 / (0.1 + 1e-8)
    assert p[0] == pytest.approx(p1 - 0.01 * m_hat / (math.sqrt(v_hat) + 1e-8), abs=1e-12)


def test_adamw_decays_weights_independently_of_the_gradient():
    p, g = _pair([2.0], [0.0])
    Adam([(p, g)], lr=0.1, weight_decay=0.5).step()
    assert p[0] == pytest.approx(2.0 * (1 - 0.05))


def test_optimizer_updates_in_place_without_replacing_arrays():
    p, g = _pair(np.ones(4), np.ones(4))
    before = p
    make_optimizer("adam", [(p, g)], lr=0.1).step()
    assert before is p and np.all(p < 1)


@pytest.mark.parametrize("bad", [dict(lr=0), dict(lr=-1), dict(lr=0.1, weight_decay=-1)])
def test_invalid_optimizer_settings_raise(bad):
    p, g = _pair([1.0], [1.0])
    with pytest.raises(ValueError):
        SGD([(p, g)], **bad)


def test_unknown_optimizer_name():
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop", [], lr=0.1)


def test_clip_grad_norm_scales_jointly():
    a, b = np.array([3.0]), np.array([4.0])
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    assert [a[0], b[0]] == pytest.approx([0.6, 0.8])
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(1.0)
    assert [a[0], b[0]] == pytest.approx([0.6, 0.8])


def test_schedules():
    assert ConstantLR(0.1)(1000) == 0.1
    step = StepLR(1.0, step_size=10, gamma=0.5)
    assert [step(0), step(9), step(10), step(25)] == [1.0, 1.0, 0.5, 0.25]
    cos = CosineLR(1.0, total=110, warmup=10)
    assert cos(0) == pytest.approx(0.1)
    assert cos(9) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.5)
    assert cos(110) == pytest.approx(0.0, abs=1e-12)
    assert isinstance(make_schedule("cosine", 0.1, 100, 5), CosineLR)
    with pytest.raises(ValueError):
        make_schedule("exp", 0.1, 100)


def test_adam_moments_of_idle_parameters_never_become_denormal():
    # denormal floats make every multiply several times slower; a parameter whose gradient
    # has become zero must see its moments flushed to zero before they get there
    p, g = np.ones(8, np.float32), np.full(8, 1e-3, np.float32)
    opt = Adam([(p, g)], lr=1e-3)
    opt.step()
    g[...] = 0.0
    tiny = np.finfo(np.float32).tiny
    for _ in range(1500):
        opt.step()
        for moment in (opt.m[0], opt.v[0]):
            assert not np.any((moment != 0) & (np.abs(moment) < tiny))
    assert np.all(opt.m[0] == 0)


def test_adam_over_several_cache_blocks_matches_the_textbook_update():
    # a buffer spanning several blocks (the last one partial) is updated like one array
    from ocr_service.nn.optim import BLOCK

    rng = np.random.default_rng(3)
    size = 2 * BLOCK + 123
    p = rng.standard_normal(size).astype(np.float32)
    g = np.empty(size, np.float32)
    start = p.astype(np.float64)
    opt = Adam([(p, g)], lr=1e-2)
    m = v = np.zeros(size)
    ref = start.copy()
    for t in range(1, 4):
        g[...] = rng.standard_normal(size)
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g.astype(np.float64) ** 2
        ref -= 1e-2 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    # the steps (up to 3e-2) dwarf the tolerance, so a block left alone would fail
    np.testing.assert_allclose(p, ref, rtol=0, atol=1e-5)
