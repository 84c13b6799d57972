"""The T5-style encoder-decoder: the decoder's causal mask, the bidirectional encoder, padding
that changes nothing, the shared embedding."""

from __future__ import annotations

import pytest
import torch

from models.t5 import T5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return T5(layers=2, decoder_layers=2, width=32, heads=4, context=16).build(50).eval()


def test_decoder_is_causal_and_reads_the_whole_input(model):
    inputs = torch.randint(0, 50, (2, 10))
    targets = torch.randint(0, 50, (2, 8))
    with torch.no_grad():
        base = model(inputs, targets)
        changed_target = targets.clone()
        changed_target[:, 5] = (changed_target[:, 5] + 1) % 50
        after = model(inputs, changed_target)
        changed_input = inputs.clone()
        changed_input[:, -1] = (changed_input[:, -1] + 1) % 50
        other_input = model(changed_input, targets)
    assert base.shape == (2, 8, 50)
    torch.testing.assert_close(after[:, :5], base[:, :5], rtol=0, atol=0)  # positions before 5
    assert not torch.allclose(after[:, 5:], base[:, 5:])
    assert not torch.allclose(other_input[:, 0], base[:, 0])  # every position sees all inputs


def test_encoder_is_bidirectional(model):
    inputs = torch.randint(0, 50, (1, 10))
    changed = inputs.clone()
    changed[0, 9] = (changed[0, 9] + 1) % 50
    with torch.no_grad():
        assert not torch.allclose(model.encode(inputs)[0, 0], model.encode(changed)[0, 0])


def test_padding_is_ignored(model):
    inputs = torch.randint(0, 50, (1, 10))
    padding = torch.zeros(1, 10, dtype=torch.bool)
    padding[0, 7:] = True
    other = inputs.clone()
    other[0, 7:] = (other[0, 7:] + 3) % 50
    targets = torch.randint(0, 50, (1, 4))
    with torch.no_grad():
        torch.testing.assert_close(model(inputs, targets, padding), model(other, targets, padding))


def test_shared_embedding_and_context(model):
    assert model.embed.weight.data_ptr() == next(model.parameters()).data_ptr()
    with pytest.raises(ValueError, match="exceed the model's 16"):
        model(torch.zeros(1, 17, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="heads: must divide"):
        T5(width=30, heads=4)


@pytest.mark.parametrize("shape", [(1, 1, 32, 2, 30, 7), (2, 3, 64, 4, 40, 12)])
def test_forward_flops_count_what_torch_counts(shape):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    layers, decoder_layers, width, heads, inputs, targets = shape
    spec = T5(layers, decoder_layers, width, heads, context=64)
    model = spec.build(300)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randint(0, 300, (1, inputs)), torch.randint(0, 300, (1, targets)))
    assert spec.forward_flops(300, inputs, targets) == counter.get_total_flops()
