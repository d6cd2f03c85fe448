/**
 * A search's `q` as the origin searches and caches it (f1backfill.querytext.search_query):
 * Unicode NFKC, Python's case folding, whitespace collapsed and trimmed, cut to
 * `maxChars` code points; "" for an empty or whitespace-only `q`; null where the origin
 * refuses the query (a control character), which the edge then never caches.
 *
 * JavaScript's toLowerCase and \s are not Python's casefold and \s (ß, Cherokee, U+FEFF,
 * U+001C...), so both come from tables generated from Python (unicode.generated.ts), and
 * lengths count code points, not UTF-16 units. tests/vectors/search_keys.json holds this
 * and the origin to the same answers.
 */
import { CASEFOLD, WHITESPACE } from "./unicode.generated";

// C0 and C1 control characters (NUL included) other than the whitespace that is collapsed.
const CONTROL = /[\x00-\x08\x0e-\x1f\x7f-\x9f]/u;

const isSpace = (ch: string): boolean => WHITESPACE.has(ch.codePointAt(0)!);

function strip(chars: string[]): string[] {
  let start = 0;
  let end = chars.length;
  while (start < end && isSpace(chars[start]!)) start++;
  while (end > start && isSpace(chars[end - 1]!)) end--;
  return chars.slice(start, end);
}

function casefold(text: string): string {
  let out = "";
  for (const ch of text) out += CASEFOLD.get(ch.codePointAt(0)!) ?? ch;
  return out;
}

/** normalize_query: the normalised query, or null where the origin refuses it. */
export function normalizeQuery(text: string, maxChars: number): string | null {
  if (CONTROL.test(text)) return null;
  const folded = casefold(text.normalize("NFKC"));
  if (CONTROL.test(folded)) return null;
  const collapsed: string[] = [];
  let inSpace = false;
  for (const ch of folded) {
    if (isSpace(ch)) {
      if (!inSpace) collapsed.push(" ");
      inSpace = true;
    } else {
      collapsed.push(ch);
      inSpace = false;
    }
  }
  const stripped = strip(collapsed);
  if (stripped.length === 0) return null;
  return strip(stripped.slice(0, maxChars)).join("");
}

/** search_query: "" for an empty or whitespace-only q, else normalizeQuery. */
export function searchQuery(q: string, maxChars: number): string | null {
  if (strip(Array.from(q)).length === 0) return "";
  return normalizeQuery(q, maxChars);
}
