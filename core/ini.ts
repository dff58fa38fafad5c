/**
 * INI parsing with Python ConfigParser (Python 2, as Skytools used) semantics:
 * sections, `key = value` or `key: value`, option names lower-cased, `#`/`;` comment
 * lines, `;` inline comments after whitespace, indented continuation lines, and a
 * `[DEFAULT]` section whose keys every section sees. Values are kept as raw strings;
 * `%(name)s` interpolation is done on read by `core/config.ts`.
 *
 * @module
 */

import { ConfigError } from "./errors.ts";

/** One raw value and where it came from. */
export interface RawValue {
  value: string;
  /** 1-based line number, or 0 for values that did not come from the file. */
  line: number;
}

/** A parsed INI file: section name -> key -> raw value. */
export type IniData = Map<string, Map<string, RawValue>>;

const SECTION_REGEXP = /^\[([^\]]+)\]/;
const OPTION_REGEXP = /^([^:=\s][^:=]*?)\s*[:=]\s*(.*)$/;
const INLINE_COMMENT_REGEXP = /\s;.*$/;

/**
 * Parses INI text. Throws {@link ConfigError} naming `file` and the line for lines
 * that are neither sections, options, comments nor continuations.
 */
export function parseIni(text: string, file: string): IniData {
  const data: IniData = new Map();
  let section: Map<string, RawValue> | undefined;
  let lastKey: string | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i] ?? "";
    if (line.trim() === "" || /^[#;]/.test(line) || /^rem(\s|$)/i.test(line)) {
      // Blank lines end nothing in Python 2 ConfigParser for continuations only if
      // followed by a non-indented line; comments are skipped.
      if (line.trim() === "") lastKey = undefined;
      continue;
    }
    if (/^\s/.test(line)) {
      if (section && lastKey !== undefined) {
        const prev = section.get(lastKey);
        if (prev) {
          const more = line.trim().replace(INLINE_COMMENT_REGEXP, "");
          prev.value = prev.value + "\n" + more;
          continue;
        }
      }
      // An indented line with nothing to continue: treat as a normal line below.
    }
    const trimmed = line.trim();
    const sec = SECTION_REGEXP.exec(trimmed);
    if (sec) {
      const name = sec[1] ?? "";
      section = data.get(name);
      if (!section) {
        section = new Map();
        data.set(name, section);
      }
      lastKey = undefined;
      continue;
    }
    if (!section) {
      throw new ConfigError(
        `${file}, line ${lineNo}: text before the first [section] header: ${
          JSON.stringify(trimmed)
        }`,
      );
    }
    const opt = OPTION_REGEXP.exec(trimmed);
    if (!opt) {
      throw new ConfigError(
        `${file}, line ${lineNo}: cannot parse ${JSON.stringify(trimmed)}; expected "key = value"`,
      );
    }
    const key = (opt[1] ?? "").trim().toLowerCase();
    let value = (opt[2] ?? "").replace(INLINE_COMMENT_REGEXP, "").trim();
    if (value === '""') value = "";
    section.set(key, { value, line: lineNo });
    lastKey = key;
  }
  return data;
}
