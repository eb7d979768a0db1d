"""hwlib.models.style: AdaIN and StyleGAN2's modulated weights."""
from __future__ import annotations

import torch


def test_adain_gives_each_channel_the_style_statistics():
    from hwlib.models.style import adain, channel_stats, modulated_conv_weight

    content = torch.randn(2, 3, 8, 8) * 5 + 1
    scale, bias = torch.rand(2, 3) + 0.5, torch.randn(2, 3)
    mean, std = channel_stats(adain(content, scale, bias))
    torch.testing.assert_close(mean[..., 0, 0], bias, atol=1e-5, rtol=0)
    torch.testing.assert_close(std[..., 0, 0], scale, atol=1e-3, rtol=1e-3)
    w = modulated_conv_weight(torch.randn(4, 3, 3, 3), torch.rand(2, 3) + 0.1)
    torch.testing.assert_close(w.pow(2).sum(dim=(2, 3, 4)), torch.ones(2, 4), atol=1e-4, rtol=0)
