/**
 * The restore state (commands/restore_state.ts): parsing what state.json holds,
 * and the lines of a re-run that may not finish it (other arguments) or of a
 * failed step.
 */

import { assert, assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import {
  checkSameArgs,
  newRestoreState,
  parseRestoreState,
  type RestoreState,
  RestoreStepRefusal,
  stepFailure,
} from "../../commands/restore_state.ts";
import { WalmgrError } from "../../core/errors.ts";

function state(over: Partial<RestoreState> = {}): RestoreState {
  return {
    ...newRestoreState({
      args: [null, null],
      source: "/w/data.master",
      target: "/pg/data",
      method: "rename",
      consumeSource: false,
      version: 15,
      walLink: null,
      oldWalLink: null,
      keepOld: true,
    }),
    ...over,
  };
}

Deno.test("parseRestoreState accepts what is written and nothing else", () => {
  const s = state({
    phase: "swap",
    aside: "/pg/data.0",
    conf: [{ name: "pg_hba.conf", from: "/x" }],
  });
  assertEquals(parseRestoreState(JSON.parse(JSON.stringify(s))), s);
  assertEquals(parseRestoreState(null), null);
  assertEquals(parseRestoreState({ ...s, format: 2 }), null);
  assertEquals(parseRestoreState({ ...s, phase: "later" }), null);
  assertEquals(parseRestoreState({ ...s, method: "link" }), null);
  assertEquals(parseRestoreState({ ...s, args: ["a"] }), null);
  assertEquals(parseRestoreState({ ...s, conf: [{ name: "../x", from: "/x" }] }), null);
  assertEquals(parseRestoreState({ ...s, aside: 3 }), null);
});

Deno.test("checkSameArgs: the same arguments finish, others are refused with what to do", () => {
  checkSameArgs(state(), []);
  checkSameArgs(state({ args: ["data.master.1", null] }), ["data.master.1"]);
  // moved backup, before the swap: move it back or finish
  const moved = assertThrows(() => checkSameArgs(state({ phase: "prepare" }), ["data.master.1"]));
  assertMatch(
    moved.message,
    /^an interrupted restore of \/w\/data\.master into \/pg\/data is unfinished \(step prepare, in \/pg\/data\.walmgr3-restore\): run restore without arguments to finish it, or move \/pg\/data\.walmgr3-restore\/data back to \/w\/data\.master and remove/,
  );
  // copied, before the swap: removing the work directory abandons it
  const copied = assertThrows(() =>
    checkSameArgs(state({ method: "copy", args: ["data.master.1", null] }), [])
  );
  assertMatch(
    copied.message,
    /run restore data\.master\.1 to finish it, or remove \/pg\/data\.walmgr3-restore to abandon it \(\/pg\/data is untouched\)$/,
  );
  // after the swap: only finishing
  const swapped = assertThrows(() => checkSameArgs(state({ phase: "finish" }), ["x", "/y"]));
  assertMatch(swapped.message, /run restore without arguments to finish it$/);
  assert(copied instanceof WalmgrError);
});

Deno.test("stepFailure says where the data is and that a re-run finishes", () => {
  const before = stepFailure(new Error("rsync failed (exit code 23)"), state({ phase: "fill" }));
  assertEquals(
    before.message,
    "rsync failed (exit code 23); restore stopped at step fill (/pg/data is untouched): fix " +
      "this and run restore without arguments again to finish it",
  );
  const after = stepFailure(new Error("disk full"), state({ phase: "finish" }));
  assertMatch(after.message, /\(the new data is in place in \/pg\/data\)/);
  const guided = new RestoreStepRefusal("move it yourself");
  assertEquals(stepFailure(guided, state()), guided);
});

Deno.test("a point-in-time restore's state records its target; a re-run must repeat it", () => {
  const pitr = {
    settings: [["recovery_target_name", "rp"], ["recovery_target_action", "pause"]] as Array<
      [string, string]
    >,
    words: ["--target-name=rp"],
  };
  const s = state({ method: "copy", phase: "prepare", pitr });
  assertEquals(parseRestoreState(JSON.parse(JSON.stringify(s))), s);
  assertEquals(parseRestoreState({ ...s, pitr: null }), { ...s, pitr: null });
  assertEquals(parseRestoreState({ ...s, pitr: { settings: [["a"]], words: [] } }), null);
  assertEquals(parseRestoreState({ ...s, pitr: { settings: [], words: [1] } }), null);
  const older = state();
  delete older.pitr;
  assertEquals(parseRestoreState(JSON.parse(JSON.stringify(older))), older, "state of before");

  checkSameArgs(s, [], pitr);
  const noTarget = assertThrows(() => checkSameArgs(s, []), WalmgrError);
  assertMatch(noTarget.message, /run restore --target-name=rp to finish it, or remove/);
  const other = {
    settings: [["recovery_target_name", "rp2"]] as Array<[string, string]>,
    words: [],
  };
  assertThrows(() => checkSameArgs(s, [], other), WalmgrError, "restore --target-name=rp");
  assertThrows(
    () => checkSameArgs(state(), [], pitr),
    WalmgrError,
    "run restore without arguments",
  );
  const failed = stepFailure(new Error("disk full"), s);
  assertMatch(failed.message, /run restore --target-name=rp again to finish it$/);
});
