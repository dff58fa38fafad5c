/**
 * A small JSON Schema validator for the keywords walmgr3's documented schemas
 * use (docs/status.schema.json): `type` (a name or a list), `properties`,
 * `required`, `additionalProperties: false`, `items`, `enum`, `const`,
 * `oneOf`, `$ref` to `#/$defs/...`, `minimum`, `pattern`. Other keywords
 * (`format`, `description`, `title`, `$schema`) are ignored. An unknown
 * keyword that would constrain is an error, so that the schema cannot say
 * more than the test checks.
 *
 * ```ts
 * const errors = validateJson(schema, value); // [] when valid
 * ```
 *
 * @module
 */

type Schema = Record<string, unknown>;

const IGNORED = new Set(["$schema", "$id", "title", "description", "format", "$defs"]);
const KNOWN = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "enum",
  "const",
  "oneOf",
  "$ref",
  "minimum",
  "pattern",
]);

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function typeMatches(want: string, v: unknown): boolean {
  const got = typeOf(v);
  return want === got || (want === "number" && got === "integer");
}

/** Every way `value` breaks `schema` (`[]` when it is valid), each with its JSON path. */
export function validateJson(schema: Schema, value: unknown): string[] {
  const root = schema;
  const errors: string[] = [];
  const resolve = (ref: string): Schema => {
    const m = /^#\/\$defs\/(.+)$/.exec(ref);
    const defs = root.$defs as Record<string, Schema> | undefined;
    const s = m ? defs?.[m[1] as string] : undefined;
    if (!s) throw new Error(`schema: cannot resolve $ref ${ref}`);
    return s;
  };
  const check = (s: Schema, v: unknown, path: string, out: string[]): void => {
    for (const k of Object.keys(s)) {
      if (!IGNORED.has(k) && !KNOWN.has(k)) throw new Error(`schema: unsupported keyword ${k}`);
    }
    if (typeof s.$ref === "string") check(resolve(s.$ref), v, path, out);
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? s.type as string[] : [s.type as string];
      if (!types.some((t) => typeMatches(t, v))) {
        out.push(`${path}: ${JSON.stringify(v)} is not of type ${types.join(" or ")}`);
        return;
      }
    }
    if ("const" in s && v !== s.const) {
      out.push(`${path}: ${JSON.stringify(v)} is not ${JSON.stringify(s.const)}`);
    }
    if (Array.isArray(s.enum) && !s.enum.includes(v)) {
      out.push(`${path}: ${JSON.stringify(v)} is not one of ${JSON.stringify(s.enum)}`);
    }
    if (typeof s.minimum === "number" && typeof v === "number" && v < s.minimum) {
      out.push(`${path}: ${v} is below ${s.minimum}`);
    }
    if (typeof s.pattern === "string" && typeof v === "string" && !new RegExp(s.pattern).test(v)) {
      out.push(`${path}: ${JSON.stringify(v)} does not match ${s.pattern}`);
    }
    if (Array.isArray(s.oneOf)) {
      const fits = (s.oneOf as Schema[]).map((alt) => {
        const e: string[] = [];
        check(alt, v, path, e);
        return e;
      });
      const n = fits.filter((e) => e.length === 0).length;
      if (n !== 1) {
        out.push(
          `${path}: matches ${n} of the oneOf alternatives` +
            (n === 0 ? ` (${fits.map((e) => e[0]).join("; ")})` : ""),
        );
      }
    }
    if (typeOf(v) === "object") {
      const o = v as Record<string, unknown>;
      const props = (s.properties ?? {}) as Record<string, Schema>;
      for (const r of (s.required ?? []) as string[]) {
        if (!(r in o)) out.push(`${path}: required ${r} is missing`);
      }
      for (const [k, val] of Object.entries(o)) {
        const p = props[k];
        if (p) check(p, val, `${path}.${k}`, out);
        else if (s.additionalProperties === false) out.push(`${path}: ${k} is not in the schema`);
      }
    }
    if (Array.isArray(v) && s.items !== undefined) {
      v.forEach((item, i) => check(s.items as Schema, item, `${path}[${i}]`, out));
    }
  };
  check(schema, value, "$", errors);
  return errors;
}
