"""Tests of helpers.losses: Gram matrices, the VGG16 loading paths, the VGG-free loss, overflow."""
import time

import numpy as np
import pytest
import torch

from helpers import data, losses

# ------------------------------------------------------------------------------ Gram / style

def test_gram_matrix_equals_a_direct_computation():
    features = torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(0))
    gram = losses.gram_matrix(features)
    direct = np.zeros((2, 5, 5))
    values = features.numpy()
    for b in range(2):
        for c in range(5):
            for d in range(5):
                direct[b, c, d] = sum(values[b, c, y, x] * values[b, d, y, x] for y in range(4) for x in range(3)) / 12
    assert np.allclose(gram.numpy(), direct, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[batch, channels, height, width\]"):
        losses.gram_matrix(torch.zeros(5, 4, 3))


def test_style_distance_is_the_summed_mean_squared_gram_difference():
    a = [torch.ones(2, 3, 3), torch.zeros(2, 4, 4)]
    b = [torch.zeros(2, 3, 3), torch.full((2, 4, 4), 2.0)]
    assert torch.allclose(losses.style_distance(a, b), torch.tensor([5.0, 5.0]))
    assert torch.equal(losses.style_distance(a, a), torch.zeros(2))


@pytest.fixture(scope="module")
def random_vgg_file(tmp_path_factory):
    """A VGG16 state_dict in torchvision's format, with random (untrained) weights, saved locally."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.pth"
    torch.save({f"features.{key}": value for key, value in features.state_dict().items()}, path)
    return path, features


def test_vgg_loads_from_a_local_file_frozen_in_eval_mode(random_vgg_file):
    path, original = random_vgg_file
    features = losses.load_vgg16_features(path)
    assert len(features) == losses.STYLE_LAYERS["relu5_1"] + 1
    assert isinstance(features[-1], torch.nn.ReLU) and isinstance(features[-2], torch.nn.Conv2d)
    assert not features.training and not any(p.requires_grad for p in features.parameters())
    assert torch.equal(features[0].weight, original[0].weight)
    assert torch.equal(features[24].weight, original[24].weight)


def test_vgg_file_from_the_environment_variable(random_vgg_file, monkeypatch):
    path, original = random_vgg_file
    monkeypatch.setenv(losses.VGG_WEIGHTS_ENV, str(path))
    features = losses.load_vgg16_features()
    assert torch.equal(features[10].weight, original[10].weight)


def test_vgg_style_loss_is_zero_for_the_target_and_positive_otherwise(random_vgg_file):
    path, _ = random_vgg_file
    target = data.load_texture("polka_dots", 32)
    style = losses.VGGStyleLoss(target, weights_path=path)
    same = style(target[None])
    other = style(data.load_texture("stripes", 32)[None])
    assert same.shape == (1,) and same.item() < 1e-8 * max(1.0, other.item())
    assert other.item() > 0


def test_vgg_style_loss_matches_gram_matrices_of_normalized_layers(random_vgg_file):
    path, original = random_vgg_file
    target = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    style = losses.VGGStyleLoss(target, weights_path=path)
    mean = torch.tensor(losses.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(losses.IMAGENET_STD).view(1, 3, 1, 1)

    def grams(x):
        x, found = (x - mean) / std, []
        for index, layer in enumerate(original[:26]):
            x = layer(x)
            if index in (1, 6, 11, 18, 25):
                flat = x.flatten(2)
                found.append(flat @ flat.transpose(1, 2) / flat.shape[2])
        return found

    with torch.no_grad():
        expected = sum(((a - b) ** 2).mean(dim=(1, 2)) for a, b in zip(grams(images), grams(target[None])))
        assert torch.allclose(style(images), expected, rtol=1e-4)


def test_vgg_loss_gradients_reach_the_images_not_the_network(random_vgg_file):
    path, _ = random_vgg_file
    style = losses.VGGStyleLoss(torch.rand(3, 32, 32), weights_path=path)
    images = torch.rand(1, 3, 32, 32, requires_grad=True)
    style(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in style.features.parameters())


def test_missing_or_bad_vgg_file_raises_vgg_unavailable(tmp_path):
    with pytest.raises(losses.VGGUnavailable, match="does not exist"):
        losses.load_vgg16_features(tmp_path / "nothing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not weights")
    with pytest.raises(losses.VGGUnavailable, match="could not read"):
        losses.load_vgg16_features(garbage)
    foreign = tmp_path / "foreign.pth"
    torch.save({"features.0.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(losses.VGGUnavailable, match="not a VGG16 state_dict"):
        losses.load_vgg16_features(foreign)


def test_offline_without_a_cached_copy_fails_fast_with_instructions(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    monkeypatch.delenv(losses.VGG_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(losses, "_can_reach", lambda url, timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(losses.VGGUnavailable) as error:
        losses.VGGStyleLoss(torch.rand(3, 16, 16))
    assert time.perf_counter() - start < 30  # no long download attempt (generous on a busy machine)
    message = str(error.value)
    assert "cannot be reached" in message and losses.VGG_WEIGHTS_ENV in message and "VGG-free" in message
    assert isinstance(error.value, RuntimeError)
    with pytest.raises(losses.VGGUnavailable, match="downloading is switched off"):
        losses.load_vgg16_features(download=False)


def test_cached_weights_are_used_before_any_download(tmp_path, monkeypatch, random_vgg_file):
    path, original = random_vgg_file
    monkeypatch.delenv(losses.VGG_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = losses.cached_weights_path()
    assert str(cached).startswith(str(tmp_path)) and cached.name.startswith("vgg16")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())

    def no_network(url, timeout=3.0):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(losses, "_can_reach", no_network)
    features = losses.load_vgg16_features()
    assert torch.equal(features[5].weight, original[5].weight)


def test_can_reach_reports_a_closed_port_as_unreachable():
    assert losses._can_reach("https://127.0.0.1:9/", timeout=2.0) is False


# ---------------------------------------------------------------------- VGG-free texture loss

def test_patches_are_every_wrapped_neighbourhood():
    image = torch.arange(3 * 4 * 5, dtype=torch.float32).view(1, 3, 4, 5)
    found = losses.patches(image, 3)
    assert found.shape == (1, 27, 20)
    # the patch of cell (0, 0) holds, for channel 0, the wrapped 3x3 neighbourhood
    rows, cols = [3, 0, 1], [4, 0, 1]
    expected = image[0, 0][rows][:, cols].flatten()
    assert torch.equal(found[0, :9, 0], expected)


def test_sliced_wasserstein_equals_sorted_matching_on_each_direction():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(2, 3, 50, generator=generator)
    target = torch.randn(1, 3, 50, generator=generator) + 1.0
    directions = torch.eye(3)
    result = losses.sliced_wasserstein(points, target, directions)
    for b in range(2):
        per_axis = [np.mean((np.sort(points[b, d].numpy()) - np.sort(target[0, d].numpy())) ** 2) for d in range(3)]
        assert np.isclose(result[b].item(), np.mean(per_axis), rtol=1e-5)


def test_sliced_wasserstein_compares_clouds_of_different_sizes():
    generator = torch.Generator().manual_seed(0)
    direction = torch.tensor([[1.0]])
    big = torch.linspace(0, 1, 1001).view(1, 1, -1)
    small = torch.linspace(0, 1, 11).view(1, 1, -1)
    assert losses.sliced_wasserstein(small, big, direction).item() < 1e-10
    shifted = losses.sliced_wasserstein(small + 0.5, big, direction).item()
    assert np.isclose(shifted, 0.25, rtol=1e-4)  # moving every point by 0.5 costs 0.5 ** 2
    assert losses.random_directions(5, 4, generator).norm(dim=1).allclose(torch.ones(5))


def test_vgg_free_loss_is_zero_for_identical_and_shifted_inputs():
    target = data.load_texture("polka_dots", 48)
    loss = losses.SlicedWassersteinLoss(target)
    same = loss(target[None], generator=torch.Generator().manual_seed(0))
    shifted = loss(torch.roll(target, (8, 16), (1, 2))[None], generator=torch.Generator().manual_seed(0))
    assert same.shape == (1,) and same.item() < 1e-10
    # a texture does not care where it starts (shift by multiples of 8, the coarsest scale)
    assert shifted.item() < 1e-8


def test_vgg_free_loss_is_larger_for_another_texture_or_grey():
    target = data.load_texture("polka_dots", 48)
    loss = losses.SlicedWassersteinLoss(target)
    others = torch.stack([data.load_texture(name, 48) for name in ("stripes", "checkerboard")] +
                         [torch.full((3, 48, 48), 0.5)])
    values = loss(others, generator=torch.Generator().manual_seed(0))
    assert values.shape == (3,) and torch.all(values > 0.05)
    # a slightly noisy copy of the target is much closer than any other texture
    noisy = (target + 0.02 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1)))[None]
    assert loss(noisy, generator=torch.Generator().manual_seed(0)).item() < values.min().item() / 10


def test_vgg_free_loss_has_gradients_and_rejects_bad_images():
    loss = losses.SlicedWassersteinLoss(torch.rand(3, 16, 16))
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    loss(images).sum().backward()
    assert images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[batch, 3, height, width\]"):
        loss(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="RGB image"):
        losses.SlicedWassersteinLoss(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="odd patch size"):
        losses.SlicedWassersteinLoss(torch.rand(3, 16, 16), patch=4)
    with pytest.raises(TypeError, match="torch tensor"):
        loss(np.zeros((1, 3, 16, 16)))


def test_image_pyramid_halves_until_small():
    levels = losses.image_pyramid(torch.rand(1, 3, 32, 32), 10)
    assert [level.shape[-1] for level in levels] == [32, 16, 8, 4]
    assert torch.allclose(levels[1][0, 0, 0, 0], levels[0][0, 0, :2, :2].mean())


# -------------------------------------------------------------------------------- overflow

def test_overflow_loss_counts_only_the_excess():
    state = torch.zeros(2, 12, 4, 4)
    assert torch.equal(losses.overflow_loss(state), torch.zeros(2))
    state[0, 0, 0, 0] = 1.5
    state[0, 3, 1, 1] = -3.0
    state[1, 5, 2, 2] = 0.99
    assert torch.allclose(losses.overflow_loss(state), torch.tensor([2.5, 0.0]))
    with pytest.raises(ValueError, match="batch dimension"):
        losses.overflow_loss(torch.zeros(3))


def test_sliced_wasserstein_colour_term_sees_blended_colours():
    """The single-pixel colour term is zero for the target itself and grows when two colours are
    blended into their mean (which 3x3 patch statistics can let through)."""
    target = torch.zeros(3, 16, 16)
    target[0, :, :8] = 1.0                         # left half red
    target[2, :, 8:] = 1.0                         # right half blue
    blended = torch.zeros(1, 3, 16, 16)
    blended[:, 0], blended[:, 2] = 0.5, 0.5        # all purple: the mean colour
    plain = losses.SlicedWassersteinLoss(target)
    with_colour = losses.SlicedWassersteinLoss(target, colour_weight=2.0)

    def value(loss, images):
        return loss(images, generator=torch.Generator().manual_seed(0)).item()

    assert value(with_colour, target[None]) < 1e-6
    colour_term = value(with_colour, blended) - value(plain, blended)
    assert colour_term > 0.1                       # each channel is off by 0.5 for every pixel
    with pytest.raises(ValueError, match="colour_weight"):
        losses.SlicedWassersteinLoss(target, colour_weight=-1.0)
