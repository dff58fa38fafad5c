/**
 * The `xtree` wire format (transports/tree_protocol.ts): path rules, request,
 * trailer and answer lines round-trip, malformed lines are refused; and the
 * slave's server loop (commands/xtree.ts `serveTree`) fed from memory: framing,
 * pipelining without answers, aborted bodies, refusals that keep the stream in
 * step, and input cut inside a frame.
 */

import assert from "node:assert/strict";
import { serveTree, TreeFrames } from "../../commands/xtree.ts";
import {
  formatAnswer,
  formatRequest,
  formatTrailer,
  parseAnswer,
  parseRequest,
  parseTrailer,
  requestProblem,
  TREE_GREETING,
  treePathProblem,
} from "../../transports/tree_protocol.ts";
import type { TreeAnswer, TreeRequest } from "../../transports/tree_protocol.ts";
import { makeTempDir, removeTree } from "../helpers/tmp.ts";

const enc = new TextEncoder();

Deno.test("tree paths: relative, no dot or empty components, no NUL", () => {
  for (const ok of ["a", "base/1/16384", "pg_tblspc/16400", ".hidden", "a..b", "sp ace", "é/ü"]) {
    assert.equal(treePathProblem(ok), undefined, ok);
  }
  for (const bad of ["", "/etc", "../x", "a/../../b", "a/..", ".", "./a", "a//b", "a/", "a\0b"]) {
    assert.ok(treePathProblem(bad), JSON.stringify(bad));
  }
  assert.ok(treePathProblem("a".repeat(5000)));
});

Deno.test("requests round-trip; names with newlines and quotes survive", () => {
  const reqs: TreeRequest[] = [
    { op: "list" },
    { op: "finish" },
    { op: "mkdir", path: "base/1" },
    { op: "remove", path: 'odd "name"\nwith newline' },
    { op: "symlink", path: "pg_tblspc/16400", target: '/srv/ts 1/"x"' },
    { op: "file", path: "base/1/16384", size: 1073741824, mode: 0o600, mtimeSec: 1700000000 },
    { op: "file", path: "f", size: 0, mode: 0o4755, mtimeSec: -5 },
  ];
  for (const r of reqs) {
    const line = formatRequest(r);
    assert.ok(line.endsWith("\n") && line.indexOf("\n") === line.length - 1, line);
    assert.deepEqual(parseRequest(line.slice(0, -1)), r);
  }
  assert.throws(() => formatRequest({ op: "file", path: "f", size: -1, mode: 0, mtimeSec: 0 }));
  assert.throws(() =>
    formatRequest({ op: "file", path: "f", size: 1, mode: 0o10000, mtimeSec: 0 })
  );
});

Deno.test("malformed requests are refused; bad paths parse but are refused", () => {
  for (
    const bad of [
      "",
      "list ",
      "mkdir",
      "mkdir base",
      'mkdir "a" "b"',
      'file 1 644 0 "a" x',
      'file x 644 0 "a"',
      'file 1 999 0 "a"',
      "file 1 644 0 a",
      'symlink "a"',
      'symlink "a""b"',
      'rename "a" "b"',
      'mkdir "unterminated',
    ]
  ) {
    assert.equal(typeof parseRequest(bad), "string", JSON.stringify(bad));
  }
  const evil = parseRequest('file 4 644 0 "../x"');
  assert.equal(typeof evil, "object");
  assert.match(requestProblem(evil as TreeRequest) ?? "", /refused path "\.\.\/x"/);
  assert.match(
    requestProblem({ op: "symlink", path: "l", target: "" }) ?? "",
    /refused symlink "l"/,
  );
  assert.equal(requestProblem({ op: "mkdir", path: "ok/dir" }), undefined);
});

Deno.test("trailers and answers round-trip; messages are one line", () => {
  assert.deepEqual(parseTrailer(formatTrailer({ kind: "end" }).trimEnd()), { kind: "end" });
  assert.deepEqual(
    parseTrailer(formatTrailer({ kind: "abort", reason: "source\nvanished" }).trimEnd()),
    { kind: "abort", reason: "source vanished" },
  );
  assert.equal(parseTrailer("done"), null);
  const answers: TreeAnswer[] = [
    { kind: "finished" },
    { kind: "listed", count: 3 },
    { kind: "entry", entry: { path: 'a "b"\nc', type: "symlink", size: 0, mtimeSec: 7 } },
    { kind: "entry", entry: { path: "base/1/2", type: "file", size: 8192, mtimeSec: 1 } },
  ];
  for (const a of answers) assert.deepEqual(parseAnswer(formatAnswer(a).trimEnd()), a);
  const err = formatAnswer({ kind: "error", message: "cannot write x:\n  disk full\n" });
  assert.equal(err, "error cannot write x: disk full\n");
  assert.deepEqual(parseAnswer(err.trimEnd()), {
    kind: "error",
    message: "cannot write x: disk full",
  });
  for (const bad of ["", "entry file 1 2 x", 'entry blob 1 2 "x"', "listed x", "ok"]) {
    assert.equal(parseAnswer(bad), null, bad);
  }
});

/** A blocking reader over `data`, handing out at most `step` bytes per read. */
function memoryReader(data: Uint8Array, step = 7): (buf: Uint8Array) => number | null {
  let off = 0;
  return (buf) => {
    if (off >= data.length) return null;
    const n = Math.min(buf.length, step, data.length - off);
    buf.set(data.subarray(off, off + n));
    off += n;
    return n;
  };
}

function bytes(...parts: (string | Uint8Array)[]): Uint8Array {
  const arrays = parts.map((p) => typeof p === "string" ? enc.encode(p) : p);
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let off = 0;
  for (const a of arrays) {
    out.set(a, off);
    off += a.length;
  }
  return out;
}

async function serve(
  root: string,
  input: Uint8Array,
  readOnly = false,
): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await serveTree({
    root,
    readOnly,
    frames: new TreeFrames(memoryReader(input)),
    answer: (line) => lines.push(line.replace(/\n$/, "")),
  });
  return { code, lines };
}

Deno.test("serveTree applies pipelined requests and answers only what it must", async () => {
  const dir = await makeTempDir("tree-serve");
  try {
    const root = `${dir}/t`;
    const big = new Uint8Array(3 * 1024 * 1024 + 5).map((_, i) => i % 251);
    const res = await serve(
      root,
      bytes(
        formatRequest({ op: "mkdir", path: "base/1" }),
        formatRequest({ op: "file", path: "base/1/2", size: big.length, mode: 0o640, mtimeSec: 9 }),
        big,
        formatTrailer({ kind: "end" }),
        formatRequest({ op: "file", path: "gone", size: 4, mode: 0o600, mtimeSec: 1 }),
        "\0\0\0\0",
        formatTrailer({ kind: "abort", reason: "source vanished" }),
        formatRequest({ op: "file", path: "../escape", size: 3, mode: 0o600, mtimeSec: 1 }),
        "abc",
        formatTrailer({ kind: "end" }),
        formatRequest({ op: "symlink", path: "l", target: "/x" }),
        formatRequest({ op: "list" }),
        formatRequest({ op: "finish" }),
      ),
    );
    assert.equal(res.code, 1, "an error was answered");
    assert.equal(res.lines[0], TREE_GREETING);
    assert.match(res.lines[1] ?? "", /^error cannot write in .*refused path "\.\.\/escape"/);
    // directories and links get the time they were made
    const rest = res.lines.slice(2).map((l) => l.replace(/^(entry (dir|symlink) 0) \d+/, "$1 T"));
    assert.deepEqual(rest, [
      'entry dir 0 T "base"',
      'entry dir 0 T "base/1"',
      `entry file ${big.length} 9 "base/1/2"`,
      'entry symlink 0 T "l"',
      "listed 4",
      "finished",
    ]);
    assert.deepEqual(Deno.readFileSync(`${root}/base/1/2`).length, big.length);
    assert.ok(Deno.readFileSync(`${root}/base/1/2`).every((b, i) => b === i % 251));
    assert.equal((Deno.statSync(`${root}/base/1/2`).mode ?? 0) & 0o777, 0o640);
    assert.throws(() => Deno.lstatSync(`${root}/gone`));
    assert.throws(() => Deno.lstatSync(`${dir}/escape`));
  } finally {
    await removeTree(dir);
  }
});

Deno.test("serveTree: clean end exits 0; input cut inside a body removes the file", async () => {
  const dir = await makeTempDir("tree-serve");
  try {
    const root = `${dir}/t`;
    const ok = await serve(root, bytes(formatRequest({ op: "mkdir", path: "a" })));
    assert.deepEqual(ok, { code: 0, lines: [TREE_GREETING] });
    const cut = await serve(
      root,
      bytes(formatRequest({ op: "file", path: "a/f", size: 100, mode: 0o600, mtimeSec: 1 }), "x"),
    );
    assert.equal(cut.code, 1);
    assert.match(cut.lines.at(-1) ?? "", /^error xtree: input ended inside .*a\/f/);
    assert.throws(() => Deno.lstatSync(`${root}/a/f`));
    const noTrailer = await serve(
      root,
      bytes(formatRequest({ op: "file", path: "a/g", size: 1, mode: 0o600, mtimeSec: 1 }), "x"),
    );
    assert.equal(noTrailer.code, 1);
    assert.throws(() => Deno.lstatSync(`${root}/a/g`));
    const badTrailer = await serve(
      root,
      bytes(
        formatRequest({ op: "file", path: "a/h", size: 1, mode: 0o600, mtimeSec: 1 }),
        "xEND\n",
      ),
    );
    assert.equal(badTrailer.code, 1);
    assert.match(badTrailer.lines.at(-1) ?? "", /malformed trailer/);
    assert.throws(() => Deno.lstatSync(`${root}/a/h`));
    const partialHeader = await serve(root, bytes('mkdir "b'));
    assert.equal(partialHeader.code, 1);
    assert.match(partialHeader.lines.at(-1) ?? "", /input ended inside a request/);
  } finally {
    await removeTree(dir);
  }
});
