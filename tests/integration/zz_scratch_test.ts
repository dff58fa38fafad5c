import { startCluster } from "../helpers/cluster.ts";
import { projectRoot, run, tempDir } from "../helpers/tmp.ts";
Deno.test("scratch", async () => {
  await using tmp = await tempDir("scratch");
  const root = tmp.path;
  const w = `${root}/walshipping`;
  await Deno.mkdir(`${w}/logs.complete`, { recursive: true });
  await using pg = await startCluster({ name: "scr", conf: { archive_mode: "on", archive_command: `cp %p ${w}/logs.complete/%f` } });
  await Deno.writeTextFile(`${root}/s.ini`, `[walmgr]\ncompleted_wals=${w}/logs.complete\npartial_wals=${w}/logs.partial\nfull_backup=${w}/data.master\nkeep_backups=2\narchive_command=echo $BACKUPDIR\n`);
  await Deno.writeTextFile(`${root}/m.ini`, `[walmgr]\nmaster_db=${pg.conninfo}\nmaster_data=${pg.dataDir}\nmaster_config=${pg.dataDir}/postgresql.conf\nslave_config=${root}/s.ini\ncompleted_wals=${w}/logs.complete\nfull_backup=${w}/data.master\nconfig_backup=${w}/config.backup\n`);
  for (const args of [["backup"], ["backup"], ["backup"], ["listbackups"], ["backup", "-n"]]) {
    const r = await run([`${projectRoot}/bin/walmgr3`, `${root}/m.ini`, ...args]);
    console.log(`== ${args.join(" ")} -> ${r.code}\n${r.stderr}${r.stdout}`);
  }
});
