/**
 * Plugin modules compiled into the binary. `deno task compile` rewrites this
 * file from `WALMGR3_EMBED_PLUGINS` (see plugins/embed.ts) for the build and puts
 * this empty version back afterwards: keep it empty in the repository.
 *
 * @module
 */

/** A plugin module embedded at compile time. */
export interface EmbeddedPlugin {
  /** File name, e.g. `mirror_transport.ts` (what `plugins = ...` entries match). */
  file: string;
  /** Absolute path at compile time. */
  path: string;
  /** The module's namespace (its `default` export is the plugin). */
  module: Record<string, unknown>;
}

/** The embedded plugin modules. */
export const EMBEDDED_PLUGINS: readonly EmbeddedPlugin[] = [];
