import { assertEquals } from "../helpers/assert.ts";
import { basename, dirname, join, normalize, resolve } from "../../core/paths.ts";

Deno.test("paths helpers follow POSIX semantics", () => {
  assertEquals(normalize("/a//b/./c/../d/"), "/a/b/d");
  assertEquals(normalize("a/../../b"), "../b");
  assertEquals(normalize("/../a"), "/a");
  assertEquals(join("/a/", "b", "../c"), "/a/c");
  assertEquals(dirname("/a/b/"), "/a");
  assertEquals(dirname("b"), ".");
  assertEquals(dirname("/b"), "/");
  assertEquals(dirname("/"), "/");
  assertEquals(basename("/a/b/"), "b");
  assertEquals(basename("pg_wal/RECOVERYXLOG"), "RECOVERYXLOG");
  assertEquals(resolve("pg_wal/x", "/data"), "/data/pg_wal/x");
  assertEquals(resolve("/abs/./y", "/data"), "/abs/y");
});
