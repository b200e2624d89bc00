"""helpers.loss_speed: the style loss's speed variants compute the same loss (channels-last exactly up
to float noise, bfloat16 within its stated precision), and the table has every variant."""
from helpers import loss_speed


def test_variants_agree_with_the_plain_loss():
    rows = {row["variant"]: row for row in loss_speed.measure(batch=1, size=32, repeats=1, log=lambda _: None)}
    assert set(rows) == {"plain", "channels-last", "bf16", "channels-last + bf16"}
    assert rows["plain"]["speedup"] == 1.0 and rows["plain"]["value_difference"] == 0.0
    assert rows["channels-last"]["value_difference"] < 1e-5 and rows["channels-last"]["gradient_difference"] < 1e-4
    # bfloat16 keeps 8 bits of mantissa: the loss moves by about a percent, not by orders of magnitude
    assert 0 < rows["bf16"]["value_difference"] < 0.1
    assert all(row["seconds"] > 0 for row in rows.values())
