/**
 * `psql -X -A -t -q -c <query>` without psql: runs the query through postgres.js
 * (simple protocol, so several statements are allowed) and formats the rows of
 * the last statement as psql's unaligned, tuples-only output does: columns joined
 * by `|`, one line per row, NULL as an empty string, values in PostgreSQL's text
 * form (`t`/`f`, timestamps as the server prints them).
 *
 * Used where a server has no psql beside it (the embedded PostgreSQL packages
 * ship only initdb, pg_ctl and postgres) and no compatible psql is installed.
 *
 * @module
 */

import postgres from "postgres";

/** Where to connect: the unix socket directory and port of a server. */
export interface SocketTarget {
  socketDir: string;
  port: number;
  user: string;
  database?: string;
}

const decoder = new TextDecoder();

function formatRows(rows: readonly unknown[]): string {
  let out = "";
  for (const row of rows) {
    const cells = (row as readonly (Uint8Array | null)[]).map((v) =>
      v === null ? "" : decoder.decode(v)
    );
    out += cells.join("|") + "\n";
  }
  return out;
}

/** Runs `query` and returns psql-style unaligned output; throws with the server's message. */
export async function psqlText(target: SocketTarget, query: string): Promise<string> {
  const sql = postgres({
    path: `${target.socketDir}/.s.PGSQL.${target.port}`,
    port: target.port,
    user: target.user,
    database: target.database ?? "postgres",
    max: 1,
    onnotice: () => {},
    connect_timeout: 10,
  });
  try {
    const result = await sql.unsafe(query).simple().raw() as unknown as unknown[];
    // several statements give one result per statement; psql prints the last one
    const many = result.length > 0 && result.every((r) => Array.isArray(r) && "command" in r);
    const last = many ? result[result.length - 1] as unknown[] : result;
    return formatRows(last);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new Error(`query ${JSON.stringify(query)} failed: ${msg}`);
  } finally {
    await sql.end({ timeout: 5 }).catch(() => {});
  }
}
