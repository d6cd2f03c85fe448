"""Regenerate what the edge Worker (edge/) derives from the origin's query normalisation.

The Worker must turn a raw `q` into the same cache-key material as `f1backfill serve`
(`f1backfill.querytext.normalize_query`, then sha256). JavaScript has NFKC
(`String.prototype.normalize`) but neither Python's `str.casefold` nor its notion of
whitespace (`\\s` in `re`, `str.isspace`, `str.strip`), so both come from Python here:

- edge/src/unicode.generated.ts: the code points `str.isspace` calls whitespace, and every
  code point that `str.casefold` changes, with what it becomes;
- tests/vectors/search_keys.json: raw queries, their normalised form (or null where the
  origin refuses the query) and its sha256, and full cache keys. The Python tests and the
  Worker's tests both check every vector, so a change on either side that makes them
  disagree fails a test.

    python scripts/sync_edge.py           # write
    python scripts/sync_edge.py --check   # exit 1 and list what differs (what the tests do)
"""

# The raw queries below are confusable characters on purpose (fullwidth, mathematical
# bold, long s): they are what the vectors test.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "edge" / "src" / "unicode.generated.ts"
VECTORS = ROOT / "tests" / "vectors" / "search_keys.json"

sys.path.insert(0, str(ROOT / "operator"))
from f1backfill.errors import InvalidQuery  # noqa: E402
from f1backfill.frontdoor.cache import query_digest, search_key  # noqa: E402
from f1backfill.querytext import search_query  # noqa: E402

MAX_QUERY_CHARS = 200  # FEEDBACK_MAX_QUERY_CHARS' default, the Worker's too

# Raw queries, each chosen for a way the two runtimes could part.
RAW_QUERIES: list[tuple[str, str]] = [
    ("plain", "oil filter"),
    ("case", "MTU Oil FILTER"),
    ("outer and inner whitespace", "  work \t\n order  "),
    ("empty", ""),
    ("whitespace only", " \t\r\n "),
    ("a separator control that Python calls whitespace, alone: the empty query", "\x1c"),
    ("a separator control inside a query: refused", "oil\x1cfilter"),
    ("NUL: refused", "oil\x00filter"),
    ("DEL: refused", "oil\x7f"),
    ("NEL (U+0085), whitespace to Python but a C1 control: refused", "oil\x85filter"),
    ("C1 control: refused", "\x9b31m"),
    ("accents, precomposed", "Ölfilter Hauptmaschine Überprüfung"),
    ("accents, combining marks composed by NFKC", "Cafe\u0301 Re\u0301sume\u0301"),
    ("sharp s folds to ss", "Straße"),
    ("capital sharp s folds to ss", "STRAẞE"),
    ("long s and final sigma fold", "ſhip ΟΔΥΣΣΕΥΣ ὀδυσσεύς"),
    ("dotted capital I", "İstanbul"),
    ("ligature and fullwidth (NFKC)", "ﬁlter ＭＴＵ１６Ｖ２０００"),
    ("roman numeral and superscript (NFKC)", "Ⅻ m² x³"),
    ("Cherokee small letters fold to capitals", "ꭰꭱꭲ"),
    ("Greek with iota subscript", "ᾳ ΐ"),
    ("no-break and ideographic spaces collapse", "oil\u00a0filter\u3000pump\u2009seal"),
    ("line and paragraph separators collapse", "oil\u2028filter\u2029pump"),
    ("zero-width space and BOM are not whitespace to Python", "oil\u200bfilter \ufeffpump"),
    ("Mongolian vowel separator is not whitespace", "a\u180eb"),
    ("pattern characters are plain text", "100% _oil_ \\filter* [a-z]? ' OR 1=1 --"),
    ("punctuation and quotes", "«Öl-Filter» — „MTU“ (16V2000)!?"),
    ("markup is text", "<script>alert(1)</script>"),
    ("non-BMP: mathematical bold folds to ASCII (NFKC)", "𝐎𝐈𝐋 𝐅𝐈𝐋𝐓𝐄𝐑"),
    ("non-BMP: Deseret capitals fold", "𐐀𐐁𐐂"),
    ("non-BMP: emoji kept", "🛥️ engine 🔧"),
    ("CJK and Arabic", "船舶 エンジン فلتر الزيت"),
    ("long: cut to 200 characters", "filter " * 40),
    ("long: cut lands on a space, trailing space dropped", "a" * 199 + " " + "b" * 50),
    ("long: non-BMP characters count as one character each", "𝐀" * 150 + "🚢" * 100),
    ("long: surrogate pair at the cut", "x" * 199 + "🚢🚢"),
    ("long: NFKC expansion then the cut", "ﷺ" * 20),
]

# Full keys: the origin's (Redis) and the edge's (KV) for one query, both from the same
# material.
KEY_CASES = [
    {"yacht_id": "3f2a9c1e-7b4d-4e8a-9f10-2c3d4e5f6a7b", "role": "engineer", "generation": 0,
     "limit": 20, "q": "  MTU  Oil Filter "},
    {"yacht_id": "3f2a9c1e-7b4d-4e8a-9f10-2c3d4e5f6a7b", "role": "captain", "generation": 17,
     "limit": 5, "q": "Straße"},
    {"yacht_id": "0b6f5d1c-2a3b-4c5d-8e9f-0a1b2c3d4e5f", "role": "crew", "generation": 3,
     "limit": 100, "q": ""},
]
EDGE_KEY = "cf:{yacht_id}:{role}:{generation}:{digest}:{limit}"


def vectors() -> dict:
    queries = []
    for why, raw in RAW_QUERIES:
        try:
            normalized: str | None = search_query(raw, MAX_QUERY_CHARS)
        except InvalidQuery:
            normalized = None
        queries.append({"why": why, "raw": raw, "normalized": normalized,
                        "sha256": None if normalized is None else query_digest(normalized)})
    keys = []
    for case in KEY_CASES:
        normalized = search_query(case["q"], MAX_QUERY_CHARS)
        fields = {name: case[name] for name in ("yacht_id", "role", "generation", "limit")}
        keys.append({**case,
                     "origin_key": search_key(normalized_query=normalized, **fields),
                     "edge_key": EDGE_KEY.format(digest=query_digest(normalized), **fields)})
    return {
        "comment": "GENERATED by scripts/sync_edge.py from f1backfill.querytext: edit that "
                   "script and run it, never this file. Read by tests/unit/test_edge_vectors.py "
                   "and edge/test/normalize.test.ts.",
        "unicode_version": unicodedata.unidata_version,
        "max_query_chars": MAX_QUERY_CHARS,
        "queries": queries,
        "keys": keys,
    }


def vectors_text() -> str:
    return json.dumps(vectors(), indent=1, ensure_ascii=True) + "\n"


def whitespace() -> list[int]:
    spaces = [cp for cp in range(sys.maxunicode + 1) if chr(cp).isspace()]
    # normalize_query collapses with re's \s and the origin strips with str.strip: one set.
    pattern = re.compile(r"\s")
    assert spaces == [cp for cp in range(sys.maxunicode + 1) if pattern.fullmatch(chr(cp))]
    return spaces


def casefold_map() -> dict[int, str]:
    folds = {}
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        folded = chr(cp).casefold()
        if folded != chr(cp):
            folds[cp] = folded
    return folds


def _js_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def tables_text() -> str:
    lines = [
        "// GENERATED by scripts/sync_edge.py from Python's unicodedata "
        f"{unicodedata.unidata_version}: never edit;",
        "// run `python scripts/sync_edge.py` (tests fail when this file is stale).",
        "",
        "/** Python's str.isspace (re's \\s, str.strip): what the origin collapses and trims. */",
        "export const WHITESPACE: ReadonlySet<number> = new Set([",
    ]
    spaces = whitespace()
    for start in range(0, len(spaces), 8):
        lines.append("  " + ", ".join(f"0x{cp:04x}" for cp in spaces[start:start + 8]) + ",")
    lines += [
        "]);",
        "",
        "/** Python's str.casefold, per code point: only the code points it changes. */",
        "export const CASEFOLD: ReadonlyMap<number, string> = new Map([",
    ]
    for cp, folded in casefold_map().items():
        lines.append(f"  [0x{cp:04x}, {_js_string(folded)}],")
    lines += ["]);", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in ((TABLES, tables_text()), (VECTORS, vectors_text())):
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(ROOT).as_posix())
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("stale (run python scripts/sync_edge.py):", *stale, sep="\n  ")
        return 1
    for name in stale:
        print("wrote", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
