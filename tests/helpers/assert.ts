/**
 * Small assertion helpers on top of `node:assert/strict` (`@std/assert` lives on
 * JSR, which these machines cannot reach).
 *
 * @module
 */

import assert from "node:assert/strict";

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.deepStrictEqual(actual, expected, msg);
}

export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.notDeepStrictEqual(actual, expected, msg);
}

export function assert_(cond: unknown, msg?: string): asserts cond {
  assert.ok(cond, msg);
}
export { assert_ as assert };

export function assertMatch(actual: string, re: RegExp, msg?: string): void {
  assert.match(actual, re, msg);
}

export function assertStringIncludes(actual: string, expected: string, msg?: string): void {
  if (!actual.includes(expected)) {
    assert.fail(msg ?? `expected ${JSON.stringify(actual)} to include ${JSON.stringify(expected)}`);
  }
}

// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = new (...args: any[]) => E;

/** Asserts `fn` throws (an instance of `cls`, with `includes` in its message). */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  cls?: ErrorClass<E>,
  includes?: string,
): E {
  try {
    fn();
  } catch (err) {
    if (cls && !(err instanceof cls)) {
      assert.fail(
        `expected ${cls.name}, got ${err instanceof Error ? err.name : typeof err}: ${err}`,
      );
    }
    if (includes && !(err instanceof Error && err.message.includes(includes))) {
      assert.fail(
        `expected message to include ${JSON.stringify(includes)}, got ${
          JSON.stringify((err as Error).message)
        }`,
      );
    }
    return err as E;
  }
  assert.fail("expected function to throw");
}

/** Asserts the promise rejects (an instance of `cls`, with `includes` in its message). */
export async function assertRejects<E extends Error = Error>(
  fn: () => Promise<unknown>,
  cls?: ErrorClass<E>,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (err) {
    if (cls && !(err instanceof cls)) {
      assert.fail(
        `expected ${cls.name}, got ${err instanceof Error ? err.name : typeof err}: ${err}`,
      );
    }
    if (includes && !(err instanceof Error && err.message.includes(includes))) {
      assert.fail(
        `expected message to include ${JSON.stringify(includes)}, got ${
          JSON.stringify((err as Error).message)
        }`,
      );
    }
    return err as E;
  }
  assert.fail("expected promise to reject");
}
