// The fuzz tests' common part: a fuzz child (lsmt-fuzz-child, zfile-fuzz-child) runs in a process of
// its own, so that a crash of the code under test (signal, abort) fails the test instead of the runner.
import assert from 'node:assert/strict';
import path from 'node:path';
import { runNodeChild } from '../helpers/child';

/** Runs `<child>.js iterations seed`, asserts it neither crashed nor reported a violation and ran
 *  every iteration, and returns its stats line (the last line of its output). */
export async function runFuzzChild(child: string, iterations: number, seed: number): Promise<Record<string, number>> {
  const r = await runNodeChild(path.join(__dirname, `${child}.js`), [String(iterations), String(seed)], 240_000);
  assert.equal(r.signal, null, `fuzz child crashed with ${r.signal}\n${r.err}`);
  assert.equal(r.code, 0, `fuzz child reported a violation:\n${r.out}\n${r.err}`);
  const stats = JSON.parse(r.out.trim().split('\n').pop()!);
  assert.equal(stats.iterations, iterations);
  return stats;
}
