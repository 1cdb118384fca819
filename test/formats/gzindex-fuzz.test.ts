// Bounded fuzz loop over mutated and truncated gzip indexes (TurboOCI gzip.meta), in a child process:
// a crash or a mutant that silently yields wrong bytes fails the test; errors are the expected outcome.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runFuzzChild } from './fuzz-support';

describe('gzip index fuzz', () => {
  it('1500 mutations of a real index: no crash, only errors or correct data', { timeout: 300_000 }, async () => {
    const stats = await runFuzzChild('gzindex-fuzz-child', 1500, 3);
    assert.ok(stats.openErrors > 700, `most mutants are refused on open (${stats.openErrors})`);
    assert.ok(stats.correct > 20, `mutants of unused fields read back intact (${stats.correct})`);
  });
});
