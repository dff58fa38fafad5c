/**
 * Built-in transports. Their modules are loaded when a command first uses them
 * (xarchive pays start-up once per WAL segment); the string-literal `import()`s
 * are still embedded by `deno compile`.
 *
 * @module
 */

import type { Registry } from "../plugins/registry.ts";

/** Registers `local`, `rsync`, `ssh` and `s3`. */
export function registerBuiltinTransports(registry: Registry): void {
  registry.registerTransport(
    "local",
    async (o) => (await import("./local.ts")).createLocalTransport(o),
  );
  registry.registerTransport(
    "rsync",
    async (o) => (await import("./rsync.ts")).createRsyncTransport(o),
  );
  registry.registerTransport("ssh", async (o) => (await import("./ssh.ts")).createSshTransport(o));
  registry.registerTransport("s3", async (o) => (await import("./s3.ts")).createS3Transport(o));
}
