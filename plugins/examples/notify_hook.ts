/**
 * Example hook plugin: notifications and a maintenance hold.
 *
 * ```ini
 * plugins          = /etc/walmgr3/notify_hook.ts
 * notify_file      = /var/log/walmgr3/notify.jsonl
 * notify_hold_file = /etc/walmgr3/HOLD_BACKUPS   ; optional
 * ```
 *
 * - `command-error`: a walmgr3 command failed (an archive that could not be
 *   stored, a backup, ...): one JSON line is appended to `notify_file`. Replace
 *   `notify()` with a mail, a chat message or a pager call.
 * - `after-backup`: the result of every base backup, the same way.
 * - `before-backup`: while `notify_hold_file` exists, backups are vetoed (the
 *   backup fails with the reason, nothing is copied).
 * - the command `walmgr3 <ini> notify-test [message]` writes a test line.
 *
 * @module
 */

import type { WalmgrPlugin } from "../mod.ts";

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

const plugin: WalmgrPlugin = {
  name: "notify",
  apiVersion: 1,
  description: "appends failures and backup results to notify_file; holds backups on request",
  configKeys: {
    notify_file: "file the notify plugin appends JSON lines to (one per event)",
    notify_hold_file: "while this file exists, backups are vetoed (maintenance window)",
  },
  setup(api) {
    const file = api.config.getPath("notify_file");
    if (!file) {
      throw api.error("notify_file is not set; set it to the file that receives notifications");
    }
    const notify = async (event: string, data: Record<string, unknown>): Promise<void> => {
      const line = JSON.stringify({
        time: new Date().toISOString(),
        ini: api.config.file,
        event,
        ...data,
      });
      if (api.dryRun) {
        api.log.info(`DRY RUN: would append to ${file}: ${line}`);
        return;
      }
      await Deno.writeTextFile(file, `${line}\n`, { append: true, create: true });
    };

    api.on("command-error", (payload) => notify("command-error", payload));
    api.on("after-backup", (payload) => notify("after-backup", payload));
    api.on("before-backup", async () => {
      const hold = api.config.getPath("notify_hold_file");
      if (hold && await exists(hold)) {
        return { veto: `${hold} exists (maintenance hold); remove it to allow backups` };
      }
      return undefined;
    });
    api.registerCommand({
      name: "notify-test",
      summary: "append a test notification to notify_file",
      usage: "[message]",
      maxArgs: 1,
      async run(ctx, args) {
        await notify("test", { message: args[0] ?? "test notification" });
        ctx.log.info(`notification written to ${file}`);
        return 0;
      },
    });
  },
};

export default plugin;
