/**
 * `synchronous_standby_names`, parsed the way PostgreSQL's own scanner and
 * grammar (syncrep_scanner.l, syncrep_gram.y) do:
 *
 * ```
 * standby_name [, ...]                       -- priority, 1 synchronous standby
 * num_sync ( standby_name [, ...] )          -- priority (the pre-10 form)
 * FIRST num_sync ( standby_name [, ...] )    -- priority
 * ANY num_sync ( standby_name [, ...] )      -- quorum
 * ```
 *
 * A name is an identifier (`[A-Za-z_\x80-]` then also digits and `$`), a number,
 * `*` (any standby), or a double-quoted name (`""` for a quote inside). `FIRST` and
 * `ANY` are keywords in any letter case, so standbys called that must be quoted.
 * Names are compared with `application_name` case-insensitively, as the
 * walsender does.
 *
 * @module
 */

/** A syntax error in a synchronous_standby_names value (PostgreSQL's wording). */
export class SynchNamesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SynchNamesError";
  }
}

/** A parsed, non-empty synchronous_standby_names value. */
export interface SynchStandbyConfig {
  /** `priority` (plain list, `n (...)`, `FIRST n (...)`) or `quorum` (`ANY n (...)`). */
  method: "priority" | "quorum";
  /** How many synchronous standbys commits wait for. */
  numSync: number;
  /** The listed names, unquoted, in order (`*` means any standby). */
  names: string[];
  /** Which form was written. */
  form: "list" | "num" | "first" | "any";
}

type Token =
  | { t: "NAME"; v: string; text: string }
  | { t: "NUM"; v: string; text: string }
  | { t: "ANY" | "FIRST" | "," | "(" | ")" | "JUNK"; text: string };

const SPACE = /[ \t\n\r\f\v]/;
const IDENT_START = /[A-Za-z_\u0080-\uffff]/;
const IDENT_CONT = /[A-Za-z_0-9$\u0080-\uffff]/;

function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (SPACE.test(c)) {
      i++;
      continue;
    }
    if (c === '"') {
      let v = "";
      let j = i + 1;
      for (;;) {
        if (j >= text.length) throw new SynchNamesError("unterminated quoted identifier");
        const d = text[j] as string;
        if (d === '"') {
          if (text[j + 1] === '"') {
            v += '"';
            j += 2;
            continue;
          }
          j++;
          break;
        }
        v += d;
        j++;
      }
      out.push({ t: "NAME", v, text: text.slice(i, j) });
      i = j;
      continue;
    }
    if (IDENT_START.test(c)) {
      let j = i + 1;
      while (j < text.length && IDENT_CONT.test(text[j] as string)) j++;
      const word = text.slice(i, j);
      const lower = word.toLowerCase();
      if (lower === "any") out.push({ t: "ANY", text: word });
      else if (lower === "first") out.push({ t: "FIRST", text: word });
      else out.push({ t: "NAME", v: word, text: word });
      i = j;
      continue;
    }
    if (c >= "0" && c <= "9") {
      let j = i + 1;
      while (j < text.length && (text[j] as string) >= "0" && (text[j] as string) <= "9") j++;
      const num = text.slice(i, j);
      out.push({ t: "NUM", v: num, text: num });
      i = j;
      continue;
    }
    if (c === "*") out.push({ t: "NAME", v: "*", text: "*" });
    else if (c === "," || c === "(" || c === ")") out.push({ t: c, text: c });
    else out.push({ t: "JUNK", text: c });
    i++;
  }
  return out;
}

/**
 * Parses a synchronous_standby_names value. Returns `null` for an empty or blank
 * value (synchronous replication off). Throws {@link SynchNamesError} with
 * PostgreSQL's message (`syntax error at or near "x"`) otherwise.
 */
export function parseSynchStandbyNames(text: string): SynchStandbyConfig | null {
  if (text.trim() === "") return null;
  const toks = tokenize(text);
  let pos = 0;
  const syntax = (): never => {
    const tok = toks[pos];
    throw new SynchNamesError(
      tok ? `syntax error at or near "${tok.text}"` : "syntax error at end of input",
    );
  };
  const expect = (t: Token["t"]): Token => {
    const tok = toks[pos];
    if (!tok || tok.t !== t) return syntax();
    pos++;
    return tok;
  };
  const list = (): string[] => {
    const names: string[] = [];
    for (;;) {
      const tok = toks[pos];
      if (!tok || (tok.t !== "NAME" && tok.t !== "NUM")) return syntax();
      names.push(tok.v);
      pos++;
      if (toks[pos]?.t !== ",") return names;
      pos++;
    }
  };
  const counted = (form: SynchStandbyConfig["form"]): SynchStandbyConfig => {
    const num = expect("NUM") as { v: string };
    expect("(");
    const names = list();
    expect(")");
    const numSync = parseInt(num.v, 10);
    if (!(numSync > 0)) {
      throw new SynchNamesError(
        `number of synchronous standbys (${numSync}) must be greater than zero`,
      );
    }
    return { method: form === "any" ? "quorum" : "priority", numSync, names, form };
  };

  let result: SynchStandbyConfig;
  const first = toks[0];
  if (first?.t === "ANY" || first?.t === "FIRST") {
    pos++;
    result = counted(first.t === "ANY" ? "any" : "first");
  } else if (first?.t === "NUM" && toks[1]?.t === "(") {
    result = counted("num");
  } else {
    result = { method: "priority", numSync: 1, names: list(), form: "list" };
  }
  if (pos < toks.length) syntax();
  return result;
}

/** True when `name` (a listed standby name, or `*`) matches `applicationName`. */
export function standbyNameMatches(name: string, applicationName: string): boolean {
  return name === "*" || name.toLowerCase() === applicationName.toLowerCase();
}

/** How many of `connected` (application_names, one per walsender) the config counts. */
export function countMatching(config: SynchStandbyConfig, connected: readonly string[]): number {
  return connected.filter((app) => config.names.some((n) => standbyNameMatches(n, app))).length;
}

/** A name as it must be written in the setting (double-quoted when needed). */
export function formatStandbyName(name: string): string {
  if (name === "*") return name;
  if (/^[A-Za-z_\u0080-\uffff][A-Za-z_0-9$\u0080-\uffff]*$/.test(name)) {
    const lower = name.toLowerCase();
    if (lower !== "any" && lower !== "first") return name;
  } else if (/^[0-9]+$/.test(name)) {
    return name;
  }
  return `"${name.replaceAll('"', '""')}"`;
}

/** A human description: `1 of (a, b) by priority`, `any 2 of (a, b, c)`. */
export function describeSynchConfig(config: SynchStandbyConfig): string {
  const names = config.names.map(formatStandbyName).join(", ");
  return config.method === "quorum"
    ? `any ${config.numSync} of (${names})`
    : `${config.numSync} of (${names}) by priority`;
}
