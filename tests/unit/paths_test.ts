import { assertEquals } from "../helpers/assert.ts";
import { basename, dirname, isAbsolute, join, normalize, resolve } from "../../core/paths.ts";

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
  assertEquals(resolve("/data", "pg_wal/x"), "/data/pg_wal/x");
  assertEquals(resolve("/data", "/abs/./y"), "/abs/y");
  assertEquals(resolve("/a", "b", "../c/"), "/a/c");
  assertEquals(resolve("rel"), `${Deno.cwd()}/rel`);
  assertEquals(resolve(), Deno.cwd());
  assertEquals(isAbsolute("/x"), true);
  assertEquals(isAbsolute("x"), false);
});
