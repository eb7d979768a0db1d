"""The networks of the course, one concept per module; import from the submodules, e.g.
``from hwlib.models.cgan import MLPGenerator`` or ``from hwlib.models.dcgan import DCGANGenerator``.

Every generator maps noise (and a condition) to images (B, C, H, W) in [-1, 1]; every GAN
discriminator returns logits of shape (B,) (use the losses in :mod:`hwlib.gan`).
"""
