// Bounded fuzz loop over mutated LSMT fixtures, in a child process: a crash (signal, abort) or a
// mutant that silently yields wrong bytes fails the test; errors naming the file are the expected outcome.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runNodeChild } from '../helpers/child';

const runChild = (iterations: number, seed: number) =>
  runNodeChild(path.join(__dirname, 'lsmt-fuzz-child.js'), [String(iterations), String(seed)], 240_000);

describe('lsmt fuzz', () => {
  for (const seed of [1, 2]) {
    it(`2500 mutations of sealed layers, index logs and tar wrappers (seed ${seed}): no crash, only errors or correct data`, { timeout: 300_000 }, async () => {
      const r = await runChild(2500, seed);
      assert.equal(r.signal, null, `fuzz child crashed with ${r.signal}\n${r.err}`);
      assert.equal(r.code, 0, `fuzz child reported a violation:\n${r.out}\n${r.err}`);
      const stats = JSON.parse(r.out.trim().split('\n').pop()!);
      assert.equal(stats.iterations, 2500);
      assert.ok(stats.errors > 300, `many mutants are rejected (${stats.errors})`);
      assert.ok(stats.harmlessChecked > 200, `harmless mutants read back intact (${stats.harmlessChecked})`);
    });
  }
});
