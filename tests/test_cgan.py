"""hwlib.models.cgan: notebook 03's MLP CGAN, its builder, and a tiny resumable CGAN run through fit."""
import pytest
import torch

import hwlib
from hwlib.data import ResidentLoader
from hwlib.gan import make_gan_step
from hwlib.models.cgan import MLPDiscriminator, MLPGenerator
from hwlib.models.dcgan import DCGANDiscriminator, DCGANGenerator
from hwlib.train import count_parameters, fit


def test_seed_mlp_shapes_ranges_and_parameter_count():
    G, D = MLPGenerator(), MLPDiscriminator()
    z, y = torch.randn(5, 100), torch.arange(5)
    x = G(z, y)
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    assert D(x, y).shape == (5,)
    # Linear layers 110-256-512-1024-784 plus a 10x10 embedding; 794-1024-512-256-1 plus the embedding
    g = 100 + (110 * 256 + 256) + (256 * 512 + 512) + (512 * 1024 + 1024) + (1024 * 784 + 784)
    d = 100 + (794 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 256 + 256) + (256 + 1)
    assert (count_parameters(G), count_parameters(D)) == (g, d)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in G.modules())  # the seed's G has no batch norm


def test_mlp_generator_batchnorm_option():
    G = MLPGenerator(hidden=(32, 64), batchnorm=True)
    norms = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert [n.num_features for n in norms] == [32, 64]  # one after every hidden linear layer
    assert count_parameters(G) == count_parameters(MLPGenerator(hidden=(32, 64))) + 2 * (32 + 64)
    x = G.eval()(torch.randn(3, 100), torch.arange(3))
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1


def test_conditional_networks_use_the_label():
    torch.manual_seed(0)
    z = torch.randn(4, 100)
    a, b = torch.zeros(4, dtype=torch.long), torch.full((4,), 7)
    for G in (MLPGenerator(), DCGANGenerator(num_classes=10, ch=8).eval()):
        assert not torch.allclose(G(z, a), G(z, b))
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    for D in (MLPDiscriminator().eval(), DCGANDiscriminator(10, ch=8).eval(),
              DCGANDiscriminator(10, ch=8, label_mode="projection").eval()):
        assert not torch.allclose(D(x, a), D(x, b))
    with pytest.raises(ValueError):
        DCGANGenerator(num_classes=10)(z)


def test_tiny_cgan_run_resumes_exactly(tmp_path):
    def run(epochs):
        torch.manual_seed(0)
        G, D = DCGANGenerator(z_dim=8, num_classes=10, ch=4), DCGANDiscriminator(10, ch=4)
        opt_g, opt_d = torch.optim.Adam(G.parameters(), 2e-4), torch.optim.Adam(D.parameters(), 2e-4)
        x, y = torch.rand(64, 1, 28, 28) * 2 - 1, torch.arange(64) % 10
        zf, yf = torch.randn(10, 8), torch.arange(10)
        hist = fit(make_gan_step(G, D, opt_g, opt_d, z_dim=8, n_critic=2), ResidentLoader(x, y, batch_size=16),
                   epochs=epochs, run_dir=tmp_path / "run", modules={"G": G, "D": D},
                   optimizers={"G": opt_g, "D": opt_d}, config={"t": 1}, progress=False,
                   sample_fn=lambda: G.eval()(zf, yf), grid_dir=tmp_path / "grids")
        return hist, G

    run(1)
    hist, G = run(2)  # resumes after epoch 1
    assert len(hist) == 8 and {"loss_d", "loss_g", "d_real", "d_fake"} <= set(hist.keys())
    assert (tmp_path / "grids" / "epoch_002.png").exists() and (tmp_path / "grids" / "progress.gif").exists()
    import shutil
    shutil.rmtree(tmp_path / "run")
    hist2, G2 = run(2)  # straight through
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))
    assert (hist["loss_g"] == hist2["loss_g"]).all()


def test_build_gives_the_profiles_networks_in_the_notebooks_rng_order():
    import hwlib
    from hwlib.models.cgan import build, build_mlp
    from hwlib.models.dcgan import DCGANDiscriminator, DCGANGenerator
    from hwlib.train import count_parameters

    cfg = hwlib.get_profile("03_cgan_mnist", "full", verbose=False)
    nets = build(cfg)
    assert [count_parameters(n) for n in nets["mlp"]] == [1_489_012, 1_470_565]  # the seed's MLPs
    assert [count_parameters(n) for n in nets["conv"]] == [1_073_781, 147_553]
    torch.manual_seed(0)
    a = build(cfg)
    torch.manual_seed(0)  # by hand, in the same order: conv first, then the MLPs
    conv = (DCGANGenerator(cfg.z_dim, 10, cfg.conv.ch, cfg.conv.embed_dim),
            DCGANDiscriminator(10, cfg.conv.ch, cfg.conv.label_mode))
    mlp = build_mlp(cfg.mlp, cfg.z_dim)
    for x, y in zip([*a["conv"], *a["mlp"]], [*conv, *mlp]):
        assert all(torch.equal(p, q) for p, q in zip(x.parameters(), y.parameters()))


def test_training_takes_the_models_settings_and_the_profiles_ema():
    from hwlib.models.cgan import build, training

    cfg = hwlib.get_profile("03_cgan_mnist", "smoke", verbose=False)
    torch.manual_seed(0)
    G, D = build(cfg)["mlp"]
    settings = cfg.mlp | {"lr": 1e-3, "betas": [0.6, 0.9]}
    step, optimizers, ema = training(G, D, settings, cfg, "cpu")
    assert set(optimizers) == {"G", "D"}
    for name, net in (("G", G), ("D", D)):
        group = optimizers[name].param_groups[0]
        assert group["lr"] == 1e-3 and group["betas"] == (0.6, 0.9) and group["fused"]
        assert {id(p) for p in group["params"]} == {id(p) for p in net.parameters()}
    assert ema.decay == cfg.ema_decay
    before = [p.clone() for p in ema.module.parameters()]
    x, y = torch.rand(cfg.batch_size, 1, 28, 28) * 2 - 1, torch.arange(cfg.batch_size) % 10
    logs = step((x, y), 0)
    assert {"loss_d", "loss_g"} <= set(logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, ema.module.parameters()))  # the step updates the EMA
    _, _, no_ema = training(G, D, settings, cfg | {"ema_decay": None}, "cpu")
    assert no_ema is None  # the full profile samples from G itself


def test_sampler_draws_balanced_labels_and_the_generators_digits():
    from hwlib.models.cgan import MLPGenerator, sampler

    torch.manual_seed(0)
    G = MLPGenerator(z_dim=8, hidden=(16,)).eval()
    images, labels = sampler(G, 8, "cpu")(23)
    assert labels.tolist() == [i % 10 for i in range(23)]
    assert images.shape == (23, 1, 28, 28) and images.abs().max() <= 1
    torch.manual_seed(1)
    z = torch.randn(23, 8)  # the noise comes from torch's RNG, in that order
    torch.manual_seed(1)
    assert torch.equal(sampler(G, 8, "cpu")(23)[0], G(z, labels))
