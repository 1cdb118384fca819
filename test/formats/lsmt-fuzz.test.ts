// Bounded fuzz loop over mutated LSMT fixtures, in a child process: a crash (signal, abort) or a
// mutant that silently yields wrong bytes fails the test; errors naming the file are the expected outcome.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runFuzzChild } from './fuzz-support';

describe('lsmt fuzz', () => {
  for (const seed of [1, 2]) {
    it(`2500 mutations of sealed layers, index logs and tar wrappers (seed ${seed}): no crash, only errors or correct data`, { timeout: 300_000 }, async () => {
      const stats = await runFuzzChild('lsmt-fuzz-child', 2500, seed);
      assert.ok(stats.errors > 300, `many mutants are rejected (${stats.errors})`);
      assert.ok(stats.harmlessChecked > 200, `harmless mutants read back intact (${stats.harmlessChecked})`);
    });
  }
});
