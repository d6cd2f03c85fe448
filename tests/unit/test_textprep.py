"""What is sent: cleaned, cut text and token estimates that learn from usage."""

from f1backfill.worker.textprep import TokenEstimator, clean


def test_clean_drops_control_characters_and_collapses_whitespace():
    assert clean("  oil\x00 filter\r\n\tracor\x07 ", 100) == "oil filter racor"


def test_clean_cuts_to_max_chars_and_handles_empty_input():
    assert clean("a" * 50, 10) == "a" * 10
    assert clean(None, 10) == ""
    assert clean("\x00\x01  \n", 10) == ""


def test_estimator_learns_chars_per_token_and_errs_high():
    estimator = TokenEstimator(chars_per_token=4.0)
    for _ in range(30):
        estimator.observe(chars=5000, tokens=1000)  # 5 chars per token
    assert abs(estimator.chars_per_token - 5.0) < 0.01
    assert 1000 < estimator.estimate("x" * 5000) <= 1060


def test_max_chars_for_keeps_the_estimate_within_the_cap():
    estimator = TokenEstimator(chars_per_token=3.3)
    chars = estimator.max_chars_for(8192)
    assert estimator.estimate("x" * chars) <= 8192
