/**
 * `plugins` (master and slave): lists what the registry holds for this ini:
 * transports, hooks and plugin commands, each with its origin (`built-in`, a
 * module, or an external program), and the plugins loaded from the `plugins`
 * key with the ini keys they read. `--json` prints one JSON object instead.
 *
 * @module
 */

import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

/** One row of the listing. */
interface Row {
  name: string;
  kind: "built-in" | "module" | "external";
  origin: string;
}

function kindOf(origin: string): Row["kind"] {
  if (origin.startsWith("built-in")) return "built-in";
  if (origin.startsWith("exec:")) return "external";
  return "module";
}

function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) =>
    "  " + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ")
  );
}

async function listPlugins(ctx: CommandContext): Promise<number> {
  const { loadedPlugins } = await import("../plugins/loader.ts");
  const reg = ctx.registry;
  const transports: Row[] = reg.transports().map((t) => ({
    name: t.name,
    kind: kindOf(t.origin),
    origin: t.origin,
  }));
  const hooks = reg.hooks.list().map((h) => ({ ...h, kind: kindOf(h.origin) }));
  const commands = reg.commands()
    .filter((c) => c.origin !== "built-in")
    .map((c) => ({
      name: c.spec.name,
      kind: kindOf(c.origin),
      origin: c.origin,
      summary: c.spec.summary,
    }));
  const plugins = loadedPlugins(reg);
  if (ctx.options.json) {
    ctx.log.out(JSON.stringify({ transports, hooks, commands, plugins }, null, 2));
    return 0;
  }
  const lines: string[] = ["Transports:"];
  lines.push(
    ...table(transports.map((t) => [t.name, t.kind, t.kind === "built-in" ? "" : t.origin])),
  );
  lines.push("Hooks:");
  if (hooks.length === 0) lines.push("  (none)");
  else lines.push(...table(hooks.map((h) => [h.event, h.name, h.kind, h.origin])));
  lines.push("Commands from plugins:");
  if (commands.length === 0) lines.push("  (none)");
  else lines.push(...table(commands.map((c) => [c.name, c.kind, c.origin, c.summary])));
  lines.push("Plugins:");
  if (plugins.length === 0) lines.push("  (none; see the plugins key)");
  else {
    lines.push(...table(plugins.map((p) => [
      p.name,
      p.kind,
      p.origin,
      [
        p.description ?? "",
        Object.keys(p.configKeys).length ? `keys: ${Object.keys(p.configKeys).join(", ")}` : "",
      ].filter(Boolean).join("; "),
    ])));
  }
  ctx.log.out(lines.map((l) => l.trimEnd()).join("\n"));
  return 0;
}

/** Commands this module registers. */
export const pluginsCommands: CommandSpec[] = [
  {
    name: "plugins",
    group: "common",
    role: "both",
    minArgs: 0,
    maxArgs: 0,
    summary: "list transports, hooks and plugin commands with their origin (--json)",
    run: listPlugins,
  },
];
