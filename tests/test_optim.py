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


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-2)])
def test_client_sgd_and_adamw_equal_torch_bit_for_bit(momentum, weight_decay):
    import torch
    import torch.nn.functional as F

    from sim.training.sgd import SGD, AdamW

    def trained(make_optimizer):
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
        optimizer = make_optimizer(module.parameters())
        generator = torch.Generator().manual_seed(1)
        for _ in range(6):
            x, y = (
                torch.randn(8, 5, generator=generator),
                torch.randint(3, (8,), generator=generator),
            )
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(module(x), y).backward()
            optimizer.step()
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    options = {"lr": 0.1, "momentum": momentum, "weight_decay": weight_decay}
    ours = trained(lambda params: SGD(params, **options))
    theirs = trained(lambda params: torch.optim.SGD(params, **options))
    assert torch.equal(ours, theirs)
    adamw = {"lr": 0.01, "weight_decay": weight_decay}
    ours = trained(lambda params: AdamW(params, **adamw))
    theirs = trained(lambda params: torch.optim.AdamW(params, **adamw))
    assert torch.equal(ours, theirs)


def test_written_out_optimizers_do_not_import_torch_compiler_stack():
    """torch.optim's constructor imports torch._dynamo (about 2 s); ours must not."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from sim.training.sgd import SGD, AdamW\n"
        "m = torch.nn.Linear(3, 2)\n"
        "for o in (SGD(m.parameters(), lr=0.1, momentum=0.9), AdamW(m.parameters(), lr=0.1)):\n"
        "    m(torch.ones(1, 3)).sum().backward(); o.step(); o.zero_grad()\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
