import { assertEquals, assertThrows } from "../helpers/assert.ts";
import {
  countMatching,
  describeSynchConfig,
  formatStandbyName,
  parseSynchStandbyNames,
  standbyNameMatches,
  SynchNamesError,
} from "../../core/synch_names.ts";

Deno.test("parseSynchStandbyNames(): the forms PostgreSQL accepts", async (t) => {
  await t.step("empty and blank mean off", () => {
    assertEquals(parseSynchStandbyNames(""), null);
    assertEquals(parseSynchStandbyNames("  \t"), null);
  });
  await t.step("plain lists: priority, one synchronous standby", () => {
    assertEquals(parseSynchStandbyNames("s1"), {
      method: "priority",
      numSync: 1,
      names: ["s1"],
      form: "list",
    });
    assertEquals(parseSynchStandbyNames("s1, s2,s3")?.names, ["s1", "s2", "s3"]);
    assertEquals(parseSynchStandbyNames("*")?.names, ["*"]);
    assertEquals(parseSynchStandbyNames("a, *")?.names, ["a", "*"]);
    // a lone number is a name
    assertEquals(parseSynchStandbyNames("42")?.names, ["42"]);
    assertEquals(parseSynchStandbyNames("walreceiver$1, _x")?.names, ["walreceiver$1", "_x"]);
  });
  await t.step("FIRST n (...), n (...), ANY n (...)", () => {
    assertEquals(parseSynchStandbyNames("FIRST 2 (s1, s2, s3)"), {
      method: "priority",
      numSync: 2,
      names: ["s1", "s2", "s3"],
      form: "first",
    });
    assertEquals(parseSynchStandbyNames("first 1(a)")?.form, "first");
    assertEquals(parseSynchStandbyNames("2 (a, b)"), {
      method: "priority",
      numSync: 2,
      names: ["a", "b"],
      form: "num",
    });
    assertEquals(parseSynchStandbyNames("ANY 2 (a, b, *)"), {
      method: "quorum",
      numSync: 2,
      names: ["a", "b", "*"],
      form: "any",
    });
    assertEquals(parseSynchStandbyNames("Any 1 (x)")?.method, "quorum");
  });
  await t.step("double-quoted names: spaces, commas, doubled quotes, keywords, case kept", () => {
    assertEquals(parseSynchStandbyNames('"my standby", "a,b"')?.names, ["my standby", "a,b"]);
    assertEquals(parseSynchStandbyNames('"say ""hi"""')?.names, ['say "hi"']);
    assertEquals(parseSynchStandbyNames('"first", "any"')?.names, ["first", "any"]);
    assertEquals(parseSynchStandbyNames('ANY 1 ("Node-1", node2)')?.names, ["Node-1", "node2"]);
  });
  await t.step("identifiers may contain non-ASCII letters", () => {
    assertEquals(parseSynchStandbyNames("réplica")?.names, ["réplica"]);
  });
});

Deno.test("parseSynchStandbyNames(): errors as PostgreSQL reports them", () => {
  const bad: Array<[string, string]> = [
    ["a b", 'syntax error at or near "b"'],
    ["a,", "syntax error at end of input"],
    ["FIRST (a)", 'syntax error at or near "("'],
    ["FIRST 2 a, b", 'syntax error at or near "a"'],
    ["ANY 2 (a, b", "syntax error at end of input"],
    ["2 (a) b", 'syntax error at or near "b"'],
    ["first", "syntax error at end of input"],
    ["any, b", 'syntax error at or near ","'],
    ["my-standby", 'syntax error at or near "-"'],
    ["1abc", 'syntax error at or near "abc"'],
    ['"open', "unterminated quoted identifier"],
    ["ANY 0 (a)", "number of synchronous standbys (0) must be greater than zero"],
    ["0 (a)", "number of synchronous standbys (0) must be greater than zero"],
  ];
  for (const [text, msg] of bad) {
    const err = assertThrows(() => parseSynchStandbyNames(text), SynchNamesError);
    assertEquals(err.message, msg, text);
  }
});

Deno.test("matching connected standbys", () => {
  assertEquals(standbyNameMatches("s1", "S1"), true);
  assertEquals(standbyNameMatches("*", "anything"), true);
  assertEquals(standbyNameMatches("s1", "s2"), false);
  const cfg = parseSynchStandbyNames("ANY 2 (s1, s2, s3)")!;
  assertEquals(countMatching(cfg, ["s1", "other", "S3"]), 2);
  assertEquals(countMatching(parseSynchStandbyNames("*")!, ["a", "b"]), 2);
  // two walsenders with one name count twice, as PostgreSQL counts walsenders
  assertEquals(countMatching(parseSynchStandbyNames("s1")!, ["s1", "s1"]), 2);
});

Deno.test("formatStandbyName() and describeSynchConfig()", () => {
  assertEquals(formatStandbyName("s1"), "s1");
  assertEquals(formatStandbyName("*"), "*");
  assertEquals(formatStandbyName("12"), "12");
  assertEquals(formatStandbyName("my standby"), '"my standby"');
  assertEquals(formatStandbyName("First"), '"First"');
  assertEquals(formatStandbyName('a"b'), '"a""b"');
  for (const n of ["s1", "my standby", "First", 'a"b', "a-b", "ANY"]) {
    assertEquals(parseSynchStandbyNames(formatStandbyName(n))?.names, [n]);
  }
  assertEquals(describeSynchConfig(parseSynchStandbyNames("a, b")!), "1 of (a, b) by priority");
  assertEquals(
    describeSynchConfig(parseSynchStandbyNames('ANY 2 (a, "b c")')!),
    'any 2 of (a, "b c")',
  );
});
