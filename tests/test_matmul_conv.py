"""hwlib.models.matmul_conv: each layer equals PyTorch's (values and gradients) where it computes a matrix product,
is PyTorch's layer elsewhere, and prints and saves as PyTorch's."""
import pytest
import torch
from torch import nn

from hwlib.models import matmul_conv
from hwlib.models.stackgan import StageD


def _same_gradients(out, ref, params, rtol=1e-5, atol=1e-5):
    g = torch.randn_like(ref)
    for mine, theirs in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(mine, theirs, rtol=rtol, atol=atol)


@pytest.mark.parametrize("bias", [False, True])
def test_projection_is_the_first_transposed_convolution_as_a_matrix_product(bias):
    torch.manual_seed(0)
    layer = matmul_conv.ConvTranspose2d(12, 5, 7, 1, 0, bias=bias)
    assert repr(layer) == repr(nn.ConvTranspose2d(12, 5, 7, 1, 0, bias=bias))  # printed as the paper's layer
    z = torch.randn(4, 12, 1, 1, requires_grad=True)
    out, ref = layer(z), nn.ConvTranspose2d.forward(layer, z)
    assert out.shape == ref.shape == (4, 5, 7, 7)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    _same_gradients(out, ref, [z, layer.weight] + ([layer.bias] if bias else []))  # the bias: a sum over 196 values
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 runs keep PyTorch's layer, and their results
        assert torch.equal(layer(z), nn.ConvTranspose2d.forward(layer, z))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_a_kernel_over_the_whole_input_is_a_matrix_product(bias, channels_last):
    torch.manual_seed(0)
    layer = matmul_conv.Conv2d(24, 3, 4, 4, bias=bias)
    assert repr(layer) == repr(nn.Conv2d(24, 3, 4, 4, bias=bias))
    assert list(layer.state_dict()) == list(nn.Conv2d(24, 3, 4, 4, bias=bias).state_dict())
    x = torch.randn(5, 24, 4, 4)
    if channels_last:
        x, layer = x.contiguous(memory_format=torch.channels_last), layer.to(memory_format=torch.channels_last)
    x.requires_grad_()
    out, ref = layer(x), torch.nn.functional.conv2d(x, layer.weight, layer.bias)
    assert out.shape == ref.shape == (5, 3, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
    _same_gradients(out, ref, [x, layer.weight] + ([layer.bias] if bias else []))


def test_other_inputs_and_precisions_keep_pytorchs_convolution(monkeypatch):
    torch.manual_seed(0)
    layer = matmul_conv.Conv2d(8, 2, 4)  # stride 1
    bigger = torch.randn(3, 8, 6, 6)  # the kernel does not cover the input: a real convolution
    assert torch.equal(layer(bigger), nn.Conv2d.forward(layer, bigger)) and layer(bigger).shape == (3, 2, 3, 3)
    x = torch.randn(3, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(layer(x), nn.Conv2d.forward(layer, x))
    monkeypatch.setattr(matmul_conv, "enabled", False)
    assert torch.equal(layer(x), torch.nn.functional.conv2d(x, layer.weight, layer.bias))


def test_stackgans_heads_with_spectral_norm_match_the_convolution(monkeypatch):
    torch.manual_seed(0)
    D = StageD(64, c_dim=8, df=4, uncond=True, spectral_norm=True).to(memory_format=torch.channels_last)
    assert isinstance(D.logit.parametrizations.weight.original, torch.Tensor)  # spectral norm on the subclass
    assert all(isinstance(m, matmul_conv.Conv2d) for m in (D.logit, D.logit_uncond))
    D.eval()  # spectral norm's power iteration then leaves u alone: both sides see one weight
    h = torch.randn(6, 32, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = D.uncond_logit(h)
    monkeypatch.setattr(matmul_conv, "enabled", False)
    ref = D.uncond_logit(h)
    scale = ref.abs().max().item()  # logits up to ~100 here: sums of 512 products agree to float32 rounding of that
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6 * scale)
    _same_gradients(out, ref, [h, D.logit_uncond.parametrizations.weight.original], rtol=1e-5, atol=1e-6 * scale)
