"""The texture check (helpers.tasks.texture_quality) agrees with a person on a labelled set.

tests/fixtures/textures/labels.json lists 64x64 images, each judged against one course texture and
labelled right or wrong by a person who looked at it (the reason is recorded beside it); every other
course texture is a wrong case for each target too. The check must pass every right case and fail
every wrong one: the test prints the confusion table (per target texture) and names each disagreement.
"""
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import data, losses, models
from helpers.tasks import texture, texture_quality

LABELLED = Path(__file__).resolve().parent / "fixtures" / "textures"
SIZE = 64


def labelled_cases() -> list[dict]:
    """The labelled images, then every other course texture as a wrong case for each target."""
    cases = json.loads((LABELLED / "labels.json").read_text())["cases"]
    names = data.list_textures()
    return cases + [{"image": f"course texture {other}", "target": target, "label": "wrong",
                     "why": "another course texture"} for target in names for other in names if other != target]


def load_case(case: dict) -> torch.Tensor:
    if case["image"].startswith("course texture "):
        return data.load_texture(case["image"].removeprefix("course texture "), SIZE)
    return data.load_image(LABELLED / case["image"])


@pytest.fixture(scope="module")
def judged() -> list[tuple[dict, dict]]:
    return [(case, texture_quality.check_shipped(load_case(case)[None], case["target"], SIZE))
            for case in labelled_cases()]


def confusion_table(judged) -> str:
    counts = Counter()
    for case, result in judged:
        kind = ("true " if result["passed"] == (case["label"] == "right") else "false ") + \
               ("positive" if result["passed"] else "negative")
        counts[case["target"], kind] += 1
    kinds = ("true positive", "false negative", "true negative", "false positive")
    targets = sorted({case["target"] for case, _ in judged})
    lines = [f"{'target':14}" + "".join(f"{kind:>16}" for kind in kinds)]
    for target in targets:
        lines.append(f"{target:14}" + "".join(f"{counts[target, kind]:>16}" for kind in kinds))
    lines.append(f"{'all':14}" + "".join(f"{sum(counts[target, kind] for target in targets):>16}" for kind in kinds))
    return "\n".join(lines)


def test_the_check_agrees_with_every_labelled_case(judged):
    print("\n" + confusion_table(judged))
    disagreements = [f"{case['image']} as {case['target']}: labelled {case['label']} ({case['why']}), "
                     f"the check says {texture_quality.summary(result)}"
                     for case, result in judged if result["passed"] != (case["label"] == "right")]
    assert not disagreements, "\n".join(disagreements)


def test_the_labelled_set_holds_todays_failures_and_both_labels_for_every_texture():
    cases = labelled_cases()
    for target in data.list_textures():
        labels = {case["label"] for case in cases if case["target"] == target}
        assert labels == {"right", "wrong"}, target
    grown_wrong = {case["target"] for case in cases if case["image"].startswith("grown_") and case["label"] == "wrong"}
    assert {"polka_dots", "checkerboard", "weave", "voronoi", "bubbles", "zigzag"} <= grown_wrong
    assert all(case["why"] for case in cases)
    assert all((LABELLED / case["image"]).is_file() for case in cases if not case["image"].startswith("course"))


def test_histogram_bins_are_soft_a_period_across_a_bin_edge_moves_little():
    """Stripes whose period lies just either side of a scale-bin edge: hard bins put their energy in
    different bins (distance 1); soft bins share it, so the histograms stay close."""
    low, high = torch.log(torch.tensor(1 / 64)), torch.log(torch.tensor(0.5 * 2 ** 0.5))
    edge = torch.exp(low + (high - low) * 4 / texture_quality.SCALE_BINS).item()        # cycles per pixel
    x = torch.arange(256.0)
    scales = []
    for frequency in (edge * 0.97, edge * 1.03):
        image = (0.5 + 0.5 * torch.sin(2 * torch.pi * frequency * x)).expand(3, 256, 256)[None]
        scales.append(texture_quality.spectrum_histograms(image)[1])
    assert 0.5 * (scales[0] - scales[1]).abs().sum() < 0.15
    # and the orientation histogram of a diagonal grating (45 degrees: a bin edge) is the same turned
    target = data.load_texture("stripes", 64)
    upright = texture_quality.spectrum_histograms(target[None])[0]
    turned = texture_quality.spectrum_histograms(losses.rotated(target, 90)[None])[0]
    assert 0.5 * (upright - turned.roll(-texture_quality.ORIENTATION_BINS // 2)).abs().sum() < 0.05


def test_your_own_image_is_judged_against_its_own_shuffled_and_blurred_copies(tmp_path):
    """An image that is no course texture: its shuffled and blurred copies fail, a shifted copy passes,
    and the check's references include the image shuffled (the layout part) and blurred (the neighbours)."""
    instance = data.load_texture("voronoi", 128)
    own = tmp_path / "tiles.png"
    own_image = torch.roll(instance, (40, 70), (1, 2))
    Image.fromarray((own_image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(own)
    target = data.load_target(str(own), SIZE)
    shifted = texture_quality.check_shipped(torch.roll(target, (9, 23), (1, 2))[None], str(own), SIZE)
    assert shifted["passed"], shifted["reasons"]
    assert shifted["layout"]["shuffled_target_distance"] > shifted["layout"]["distance"]
    assert shifted["neighbours"]["blurred_target_distance"] > shifted["neighbours"]["distance"]
    for wrong in (texture_quality.shuffled(target, seed=3), texture_quality.blurred(target)):
        assert not texture_quality.check_shipped(wrong[None], str(own), SIZE)["passed"]


def test_evaluate_texture_prints_a_verdict_per_part_and_writes_only_when_asked(tmp_path, capsys):
    """``python -m helpers evaluate texture MODEL`` on the stripes fixture: a verdict per part, the JSON
    untouched; ``--write`` stores the check atomically; ``--target`` judges against another texture and
    refuses ``--write``."""
    import shutil

    from helpers import cli
    fixtures = Path(__file__).resolve().parent / "fixtures"
    for suffix in (".pt", ".json"):
        shutil.copy(fixtures / f"texture_stripes_good{suffix}", tmp_path / f"model{suffix}")
    model, record = tmp_path / "model.pt", tmp_path / "model.json"
    before = record.read_text()
    cli.main(["evaluate", "texture", str(model)])
    printed = capsys.readouterr().out
    assert printed.startswith("against stripes: ") and "PASS" in printed
    for part in texture_quality.PARTS:
        assert f"  {part}" in printed, part
    assert record.read_text() == before
    cli.main(["evaluate", "texture", str(model), "--target", "checkerboard"])
    printed = capsys.readouterr().out
    assert printed.startswith("against checkerboard: ") and "FAIL" in printed and record.read_text() == before
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "texture", str(model), "--target", "checkerboard", "--write"])
    assert "--write stores the check against the model's own target" in capsys.readouterr().err
    cli.main(["evaluate", "texture", str(model), "--write"])
    stored = json.loads(record.read_text())["eval"]
    assert stored["passed"] and set(texture_quality.PARTS) == set(stored["quality"])


def test_the_check_rejects_streaks_grown_for_bubbles():
    """Once a false positive: bubbles trained with per-cell updates grow orange and white zigzag streaks
    on navy, no discs, and passed every part until the shapes part measured how elongated blobs are."""
    model = models.load(LABELLED.parent / "texture_bubbles_streaks_per_cell.pt")
    for seed in (1, 2):
        assert not texture.judge(model, "bubbles", SIZE, SIZE, steps=2000, seed=seed, batch=2)["passed"]
