/**
 * "Did you mean ...?" for a mistyped command or configuration key: the known
 * word closest to what was typed (Damerau-Levenshtein distance, at most 2, or 3
 * for long words), or none.
 *
 * @module
 */

/** Edit distance with adjacent transpositions (optimal string alignment). */
export function editDistance(a: string, b: string): number {
  const m = a.length;
  const n = b.length;
  const d: number[][] = Array.from({ length: m + 1 }, (_, i) => {
    const row = new Array<number>(n + 1).fill(0);
    row[0] = i;
    return row;
  });
  for (let j = 0; j <= n; j++) (d[0] as number[])[j] = j;
  for (let i = 1; i <= m; i++) {
    const row = d[i] as number[];
    const prev = d[i - 1] as number[];
    for (let j = 1; j <= n; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(
        (prev[j] as number) + 1,
        (row[j - 1] as number) + 1,
        (prev[j - 1] as number) + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, ((d[i - 2] as number[])[j - 2] as number) + 1);
      }
      row[j] = v;
    }
  }
  return (d[m] as number[])[n] as number;
}

/** The known word closest to `word`, when it is close enough to be a typo. */
export function closestWord(word: string, known: Iterable<string>): string | undefined {
  const w = word.toLowerCase();
  const limit = w.length >= 12 ? 3 : w.length >= 4 ? 2 : 1;
  let best: string | undefined;
  let bestDist = Infinity;
  for (const k of known) {
    const dist = editDistance(w, k.toLowerCase());
    if (dist < bestDist) {
      best = k;
      bestDist = dist;
    }
  }
  return best !== undefined && bestDist > 0 && bestDist <= limit ? best : undefined;
}

/** `; did you mean X?` or an empty string. */
export function didYouMean(word: string, known: Iterable<string>): string {
  const c = closestWord(word, known);
  return c ? `; did you mean ${c}?` : "";
}
