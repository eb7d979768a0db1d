"""hwlib.metrics feature networks: the shipped MNIST classifier and the pytorch-fid Inception path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwlib.metrics import conditional_accuracy, evaluate, feature_net, mnist_classifier, per_class_accuracy
from hwlib.metrics import inception as inception_module
from hwlib.metrics.inception import WEIGHTS_FILE, InceptionFeatures, InceptionWeightsMissing, inception_weights_path
from hwlib.metrics.mnist_net import WEIGHTS


@pytest.fixture(scope="module")
def mnist_test():
    from hwlib.data import load_mnist

    x, y = load_mnist("test", verbose=False)
    return x[:1500], y[:1500]


def test_shipped_weights_small_and_loadable():
    assert WEIGHTS.is_file() and WEIGHTS.stat().st_size < 2 * 2**20
    net = mnist_classifier("cpu")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert mnist_classifier("cpu") is net  # cached
    x = torch.zeros(3, 1, 28, 28)
    assert net(x).shape == (3, 10) and net.features(x).shape == (3, 128)
    assert net.tag.startswith("mnist-")


def test_building_the_feature_nets_leaves_the_callers_rng_alone():
    """A notebook's first score builds the cached networks; their initialisation must not shift its later draws."""
    from hwlib.metrics import features, mnist_net

    features._feature_net.cache_clear()
    mnist_net._load.cache_clear()
    real = torch.rand(50, 1, 28, 28) * 2 - 1
    torch.manual_seed(0)
    before = torch.get_rng_state()
    assert feature_net("mnist", "cpu") is mnist_classifier("cpu")
    assert torch.equal(torch.get_rng_state(), before)
    features._feature_net.cache_clear()
    mnist_net._load.cache_clear()
    evaluate(lambda m: torch.zeros(m, 1, 28, 28), real=real, n=50, device="cpu")
    assert torch.equal(torch.get_rng_state(), before)


def test_classifier_accuracy_and_conditional_accuracy(mnist_test):
    x, y = mnist_test
    acc = conditional_accuracy(x, y, batch_size=500, device="cpu")
    assert acc > 0.99  # the full test set gives >= 99.3 % (python -m hwlib.metrics.mnist_net)
    per_class = per_class_accuracy(x, y, device="cpu")
    assert per_class.shape == (10,) and per_class.min() > 0.95
    assert conditional_accuracy(x, (y + 1) % 10, device="cpu") < 0.02  # wrong labels are caught
    absent = per_class_accuracy(x[y != 3], y[y != 3], device="cpu")
    assert np.isnan(absent[3]) and np.isfinite(np.delete(absent, 3)).all()


def test_evaluate_real_digits_with_labels(mnist_test):
    x, y = mnist_test
    pool_x, pool_y, real = x[:1000], y[:1000], x[1000:]

    def sampler(m: int):  # "generates" real digits with their labels
        idx = torch.randint(0, len(pool_x), (m,))
        return pool_x[idx], pool_y[idx]

    def noisy(m: int):
        idx = torch.randint(0, len(pool_x), (m,))
        return (pool_x[idx] + 0.8 * torch.randn(m, 1, 28, 28)).clamp(-1, 1), pool_y[idx]

    good = evaluate(sampler, real=real, n=500, features="mnist", batch_size=500, device="cpu")
    bad = evaluate(noisy, real=real, n=500, features="mnist", batch_size=500, device="cpu")
    assert good["accuracy"] > 0.98 and good["per_class_accuracy"].shape == (10,)
    assert good["precision"] > 0.6 and good["recall"] > 0.6
    assert bad["fid"] > 10 * good["fid"] and bad["accuracy"] < good["accuracy"]
    assert 0.25 < good["spread"] < 0.4  # real digits: ~0.31 within a class


def test_missing_inception_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HWLIB_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("HWLIB_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(InceptionWeightsMissing) as err:
        inception_weights_path(download=False)
    message = str(err.value)
    assert WEIGHTS_FILE in message and "HWLIB_INCEPTION_WEIGHTS" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_FILE) in message
    monkeypatch.setenv("HWLIB_INCEPTION_WEIGHTS", str(tmp_path / "nowhere" / WEIGHTS_FILE))
    with pytest.raises(InceptionWeightsMissing, match="nowhere"):
        inception_weights_path()  # an explicit location is reported, not silently downloaded around
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / WEIGHTS_FILE).write_bytes(b"stub")
    monkeypatch.setenv("HWLIB_INCEPTION_WEIGHTS", str(tmp_path / "w"))  # a folder holding the file
    assert inception_weights_path() == tmp_path / "w" / WEIGHTS_FILE


def test_inception_tag_hashes_the_whole_weights_file(tmp_path):
    """Two weights files that agree on their first MiB but not after it get different cache tags."""
    head = np.random.default_rng(0).bytes(3 << 20)
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(head + b"\x00")
    b.write_bytes(head + b"\x01")
    tag = inception_module.weights_tag(a)
    assert tag.startswith("inception-") and len(tag) == len("inception-") + 8
    assert tag != inception_module.weights_tag(b) and tag == inception_module.weights_tag(a)


@pytest.mark.slow
def test_inception_random_weights_path(tmp_path, monkeypatch):
    """The pytorch-fid network end to end with random weights, loaded from a weights file as the real ones are."""
    torch.manual_seed(0)
    model, net = inception_module.build_pytorch_fid_inception(None)
    model.eval()
    inception_module.he_init_(net)
    path = tmp_path / WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    monkeypatch.setenv("HWLIB_INCEPTION_WEIGHTS", str(path))
    before = torch.get_rng_state()
    feats_net = InceptionFeatures()  # finds the file through the environment variable
    assert torch.equal(torch.get_rng_state(), before)  # the initialisation its weights replace leaves the RNG alone
    assert feats_net.tag.startswith("inception-")
    grey = torch.rand(2, 1, 28, 28) * 2 - 1
    with torch.inference_mode():
        ours = feats_net.features(grey)
        # pytorch-fid's own convention: RGB in [0, 1] (grey repeated); its model resizes to 299 (bilinear)
        theirs = model(grey.repeat(1, 3, 1, 1).add(1).div(2))[0].flatten(1)
        probs = feats_net.probs(grey)
    assert feats_net.model.resize_input and feats_net.model.normalize_input
    assert ours.shape == (2, 2048) and torch.isfinite(ours).all() and ours.abs().mean() > 1e-2
    torch.testing.assert_close(ours, theirs)
    assert probs.shape == (2, 1008)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, dtype=probs.dtype))


def test_is_mnist_rewards_recognisable_balanced_digits():
    from hwlib.data import load_mnist
    from hwlib.metrics import evaluate, is_mnist

    x, y = load_mnist("test")
    real = is_mnist(x[:2000])
    assert 9.5 < real <= 10.0  # ten classes, recognised with confidence: near the maximum
    assert is_mnist(x[y == 3][:500]) < 1.1  # one class only: no better than 1
    assert is_mnist(torch.zeros(500, 1, 28, 28) - 1) < 1.1  # one (blank) image repeated
    chunks = iter(x[:500].split(250))
    r = evaluate(lambda m: next(chunks), n=500, batch_size=250, seed=None)
    assert abs(r["is_mnist"] - is_mnist(x[:500])) < 1e-4
