"""hwlib.models.dcgan: shapes, the transposed-convolution reference, and the builder notebook 04 uses."""
import pytest
import torch
import torch.nn.functional as F

import hwlib
from hwlib.models import dcgan, matmul_conv
from hwlib.models.dcgan import DCGANDiscriminator, DCGANGenerator, transposed_conv2d_reference


def test_build_from_the_profile_in_rng_order():
    cfg = hwlib.get_profile("04_vae_gan_ddpm", "smoke", verbose=False)
    torch.manual_seed(0)
    G, D = dcgan.build(cfg)
    torch.manual_seed(0)
    G_ref = dcgan.DCGANGenerator(z_dim=cfg.z_dim, ch=cfg.gan_ch)
    D_ref = dcgan.DCGANDiscriminator(ch=cfg.gan_ch)
    for a, b in ((G, G_ref), (D, D_ref)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert G(torch.randn(3, cfg.z_dim)).shape == (3, 1, 28, 28) and D(torch.zeros(3, 1, 28, 28)).shape == (3,)


@pytest.mark.parametrize("num_classes,label_mode", [(0, "channel"), (10, "channel"), (10, "projection")])
def test_dcgan_shapes_and_ranges(num_classes, label_mode):
    torch.manual_seed(0)
    G = DCGANGenerator(z_dim=16, num_classes=num_classes, ch=8)
    D = DCGANDiscriminator(num_classes=num_classes, ch=8, label_mode=label_mode)
    y = torch.arange(6) % 10 if num_classes else None
    x = G(torch.randn(6, 16), y)
    assert x.shape == (6, 1, 28, 28) and x.abs().max() <= 1
    assert D(x, y).shape == (6,)


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 0), (2, 1)])
def test_transposed_conv_reference_matches_pytorch(stride, padding):
    torch.manual_seed(0)
    x, w = torch.randn(3, 4, 5), torch.randn(3, 2, 4, 4)
    ref = transposed_conv2d_reference(x, w, stride, padding)
    torch.testing.assert_close(ref, F.conv_transpose2d(x[None], w, stride=stride, padding=padding)[0])
    assert ref.shape[1:] == ((4 - 1) * stride - 2 * padding + 4, (5 - 1) * stride - 2 * padding + 4)


def test_the_generators_first_layer_is_the_matrix_product_layer():
    assert isinstance(DCGANGenerator(z_dim=12).net[0], matmul_conv.ConvTranspose2d)  # tests/test_matmul_conv.py
