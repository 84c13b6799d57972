import numpy as np
import pytest

from sim.training.optim import adam, make_optimizer, sgd


def test_sgd_without_momentum_is_lr_times_gradient():
    opt = sgd(0.5)
    state = opt.init(np.zeros(3))
    step, state = opt.update(np.array([1.0, -2.0, 4.0]), state)
    np.testing.assert_allclose(step, [0.5, -1.0, 2.0])
    assert state == {}


def test_sgd_momentum_accumulates_like_pytorch():
    opt = sgd(0.1, momentum=0.9)
    state = opt.init(np.zeros(1))
    g = np.array([1.0])
    step1, state = opt.update(g, state)
    step2, state = opt.update(g, state)
    np.testing.assert_allclose(step1, [0.1])
    np.testing.assert_allclose(step2, [0.1 * (0.9 + 1.0)])


def test_adam_first_step_is_lr_times_sign():
    opt = adam(0.01)
    state = opt.init(np.zeros(2))
    step, state = opt.update(np.array([3.0, -0.5]), state)
    # With bias correction, m_hat = g and v_hat = g^2 on the first step.
    np.testing.assert_allclose(step, [0.01, -0.01], rtol=1e-6)
    assert int(state["count"]) == 1


def test_unknown_optimizer_names_the_field():
    with pytest.raises(ValueError, match="server_optimizer"):
        make_optimizer("rmsprop", 0.1)
