"""Search query text is data: the one place it is checked and normalised.

Storing `query_normalized` as merely "lowercase, trimmed" and then matching it with
`search_text NOT ILIKE '%' || query || '%'` would let a `%`, `_` or `\\` typed by a user
change what matched. Here a query is normalised once (Unicode NFKC, case-folded, whitespace
collapsed, trimmed, length-capped) and compared as plain text, never as a pattern.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidQuery

# C0 and C1 control characters (NUL included) other than the whitespace we collapse.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


def normalize_query(text: str, max_chars: int = 200) -> str:
    """The stored, compared form of a search query.

    Refuses control characters and NUL bytes (they are never typed by a person and never
    stored); an empty result is refused too.
    """
    if not isinstance(text, str):
        raise InvalidQuery(f"query text must be a string, got {type(text).__name__}")
    bad = _CONTROL.search(text)
    if bad:
        raise InvalidQuery(
            f"query text contains a control character (U+{ord(bad.group()):04X}) "
            f"at position {bad.start()}")
    folded = unicodedata.normalize("NFKC", text).casefold()
    # NFKC can turn some characters into others that are controls; check again.
    if _CONTROL.search(folded):
        raise InvalidQuery("query text contains a control character after normalisation")
    collapsed = _SPACE.sub(" ", folded).strip()
    if not collapsed:
        raise InvalidQuery("query text is empty")
    return collapsed[:max_chars].rstrip()


def search_query(q: str, max_chars: int = 200) -> str:
    """A search's `q` as it is searched and cached: normalised, or "" (the empty query,
    which lists recent rows) when it is empty or only whitespace. Raises InvalidQuery as
    `normalize_query` does. The edge Worker (edge/) derives its cache keys the same way;
    tests/vectors/search_keys.json holds both to it."""
    return normalize_query(q, max_chars) if q.strip() else ""


def comparable(text: str) -> str:
    """search_text in the same form as a normalised query, to test for containment."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _CONTROL.sub(" ", folded))


def contains_term(search_text: str, term: str) -> bool:
    """Plain-text containment of a normalised query in a search text; no pattern syntax."""
    return term in comparable(search_text)
