"""Query text is data: one normalisation, plain-text comparison, hostile input refused."""

import pytest

from f1backfill.errors import InvalidQuery
from f1backfill.querytext import contains_term, normalize_query


@pytest.mark.parametrize("raw, normalized", [
    ("  MTU   Filtr ", "mtu filtr"),
    ("Watermaker\tpump\nseal", "watermaker pump seal"),
    ("100%", "100%"),
    ("a_c", "a_c"),
    ("back\\slash", "back\\slash"),
    ("it's \"quoted\"", "it's \"quoted\""),
    ("'; DROP TABLE search_index; --", "'; drop table search_index; --"),
    ("\uff2d\uff34\uff35\u3000\uff46\uff49\uff4c\uff54\uff45\uff52", "mtu filter"),  # NFKC
    ("Cafe\u0301", "café"),  # combining accent composed
    ("STRASSE", "strasse"),
    ("Straße", "strasse"),  # casefold, not just lower()
    ("🛥️ tender", "🛥️ tender"),
])
def test_normalisation_is_nfkc_casefolded_and_collapsed(raw, normalized):
    assert normalize_query(raw) == normalized


def test_long_queries_are_capped():
    assert len(normalize_query("x" * 100_000, max_chars=200)) == 200


@pytest.mark.parametrize("raw, reason", [
    ("oil\x00filter", "U+0000"),
    ("bell\x07", "U+0007"),
    ("esc\x1b[31m", "U+001B"),
    ("c1\x85", "U+0085"),
    ("   ", "empty"),
    ("", "empty"),
])
def test_control_characters_and_empty_queries_are_refused(raw, reason):
    with pytest.raises(InvalidQuery, match=reason.replace("+", r"\+")):
        normalize_query(raw)


@pytest.mark.parametrize("text, term, expected", [
    ("Racor 500 oil filter", "oil filter", True),
    ("Racor 500 OIL\n FILTER", "oil filter", True),
    ("rated 100 percent", "100%", False),  # ILIKE '%100%%' would have matched
    ("part abc", "a_c", False),  # ILIKE '%a_c%' would have matched
    ("path a\\b", "a\\b", True),
    ("Café menu", "café", True),
])
def test_containment_is_plain_text_not_a_pattern(text, term, expected):
    assert contains_term(text, term) is expected
