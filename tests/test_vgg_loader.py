"""The VGG16 loader builds and loads only the layers the style loss uses (helpers.losses)."""
import subprocess
import sys

import pytest
import torch

from helpers import losses

torchvision = pytest.importorskip("torchvision")

# conv1_1 ... conv5_1 of VGG16: (in, out) channels of the eleven 3x3 convolutions the loss uses
USED_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
              (256, 512), (512, 512), (512, 512), (512, 512)]
USED_PARAMETERS = sum(cin * cout * 9 + cout for cin, cout in USED_CONVS)          # 9,995,072


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    """A torchvision vgg16 state_dict with random weights: all 13 convolutions of ``features`` and
    entries for the classifier (shrunk to keep the test fast; the loader must drop them whatever
    their size), saved as torchvision's file is; plus torchvision's whole ``features`` (31 layers)."""
    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features.eval()
    state = {f"features.{key}": value for key, value in features.state_dict().items()}
    for index, shape in ((0, (64, 32)), (3, (64, 64)), (6, (10, 64))):
        state[f"classifier.{index}.weight"] = torch.randn(shape)
        state[f"classifier.{index}.bias"] = torch.randn(shape[0])
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.pth"
    torch.save(state, path)
    return path, state, features


def test_the_used_keys_are_exactly_the_eleven_convolutions_up_to_relu5_1(full_checkpoint):
    assert USED_PARAMETERS == 9_995_072
    assert len(losses.VGG16_USED_KEYS) == 22
    assert losses.VGG16_USED_KEYS[:4] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert losses.VGG16_USED_KEYS[-2:] == ["24.weight", "24.bias"]
    reference = full_checkpoint[2][: losses.STYLE_LAYERS["relu5_1"] + 1]
    assert list(reference.state_dict()) == losses.VGG16_USED_KEYS
    built = losses.build_vgg16_features()
    assert [repr(layer) for layer in built] == [repr(layer) for layer in reference]


def test_the_url_is_torchvisions_imagenet_file():
    assert losses.VGG16_URL == torchvision.models.VGG16_Weights.IMAGENET1K_V1.url


def test_only_the_used_layers_are_built_and_loaded(full_checkpoint, monkeypatch):
    path, state, _ = full_checkpoint
    built = []
    original_init = torch.nn.Conv2d.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        original_init(self, *args, **kwargs)

    def no_full_network(*args, **kwargs):
        raise AssertionError("the loader built torchvision's whole vgg16")

    monkeypatch.setattr(torch.nn.Conv2d, "__init__", counting_init)
    monkeypatch.setattr(torchvision.models, "vgg16", no_full_network)
    monkeypatch.setattr(torch.nn.Linear, "__init__", no_full_network)      # the classifier is never built
    features = losses.load_vgg16_features(path)
    assert len(built) == len(USED_CONVS)
    assert sum(parameter.numel() for parameter in features.parameters()) == USED_PARAMETERS
    for key, value in features.state_dict().items():
        assert torch.equal(value, state["features." + key]), key


def test_the_loss_equals_the_one_from_the_whole_network(full_checkpoint):
    path, _, whole_features = full_checkpoint
    generator = torch.Generator().manual_seed(3)
    target, images = torch.rand(3, 40, 40, generator=generator), torch.rand(2, 3, 40, 40, generator=generator)
    ours = losses.VGGStyleLoss(target, weights_path=path)
    whole = losses.VGGStyleLoss(target, features=whole_features)     # all 31 layers; the style layers are the same
    assert sum(p.numel() for p in whole_features.parameters()) == 14_714_688 > USED_PARAMETERS
    expected = whole(images)
    assert torch.allclose(ours(images), expected, rtol=1e-5, atol=0) and (expected > 0).all()


def test_the_legacy_file_format_loads_too(full_checkpoint, tmp_path):
    path, state, _ = full_checkpoint
    legacy = tmp_path / "legacy.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    features = losses.load_vgg16_features(legacy)
    assert torch.equal(features[24].weight, state["features.24.weight"])


def test_a_download_goes_through_torch_hub_with_a_progress_bar_into_the_cache(tmp_path, monkeypatch, full_checkpoint):
    path, state, _ = full_checkpoint
    monkeypatch.delenv(losses.VGG_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(losses, "_can_reach", lambda url, timeout=3.0: True)
    calls = []

    def fake_download(url, destination, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix, progress))
        with open(destination, "wb") as out:
            out.write(path.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    features = losses.load_vgg16_features()
    assert calls == [(losses.VGG16_URL, "397923af", True)]
    assert losses.cached_weights_path().is_file()
    assert torch.equal(features[0].weight, state["features.0.weight"])
    losses.load_vgg16_features()                                    # cached now: no second download
    assert len(calls) == 1


def test_a_failed_download_is_vgg_unavailable_with_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv(losses.VGG_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(losses, "_can_reach", lambda url, timeout=3.0: True)

    def broken(url, destination, hash_prefix=None, progress=True):
        raise RuntimeError('invalid hash value (expected "397923af", got "deadbeef")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", broken)
    with pytest.raises(losses.VGGUnavailable, match="downloading the VGG16 weights .* failed: invalid hash"):
        losses.load_vgg16_features()
    assert not losses.cached_weights_path().exists()


def test_a_mapped_checkpoint_leaves_its_unused_entries_on_disk(tmp_path):
    """Memory, measured: a zip-format checkpoint with 256 MiB of entries the loss does not use
    (a stand-in for the classifier) adds far less than that to the peak memory of loading it."""
    torch.manual_seed(0)
    state = {f"features.{key}": value for key, value in losses.build_vgg16_features().state_dict().items()}
    state["classifier.0.weight"] = torch.ones(2**26)                 # 256 MiB, never needed
    path = tmp_path / "big.pth"
    torch.save(state, path)
    del state
    code = ("import resource, sys, torch; from helpers import losses\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "losses.load_vgg16_features(sys.argv[1])\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    if sys.platform != "linux":
        pytest.skip("ru_maxrss is read in KiB on Linux")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grown_mib = float(done.stdout.strip().splitlines()[-1])
    assert grown_mib < 192, f"loading grew the peak memory by {grown_mib:.0f} MiB: the unused entries were read"
