/**
 * Splitting config values into argument words (`ssh_options`, `remote_walmgr`,
 * plugin commands) like a POSIX shell: single and double quotes, backslash
 * escapes, no expansion.
 *
 * @module
 */

import { ConfigError } from "./errors.ts";

/**
 * Splits `value` into words. `what` names the setting in the error for an
 * unbalanced quote.
 */
export function splitShellWords(value: string, what = "value"): string[] {
  const words: string[] = [];
  let cur = "";
  let inWord = false;
  let quote: string | undefined;
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === "\\" && quote === '"' && /["\\$`]/.test(value[i + 1] ?? "")) cur += value[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\" && i + 1 < value.length) {
      cur += value[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw new ConfigError(`${what}: unbalanced ${quote} in ${JSON.stringify(value)}`);
  if (inWord) words.push(cur);
  return words;
}
