// Bounded fuzz loop over mutated upstream ZFile fixtures, in a child process: a crash (signal,
// abort) or a mutant that silently yields wrong bytes fails the test; errors are the expected outcome.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runFuzzChild } from './fuzz-support';

describe('zfile fuzz', () => {
  for (const seed of [1, 2]) {
    it(`2000 mutations of real fixtures (seed ${seed}): no crash, only errors or correct data`, { timeout: 300_000 }, async () => {
      const stats = await runFuzzChild('zfile-fuzz-child', 2000, seed);
      assert.ok(stats.errors > 500, `most mutants are rejected (${stats.errors})`);
      assert.ok(stats.correct > 50, `some mutants are harmless and read back intact (${stats.correct})`);
    });
  }
});
