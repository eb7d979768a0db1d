"""hwlib.models.dcgan: the builder notebook 04 uses."""
import torch

import hwlib
from hwlib.models import dcgan


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
