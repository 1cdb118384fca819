// Bounded fuzz loop over mutated LSMT fixtures, in a child process: a crash (signal, abort) or a
// mutant that silently yields wrong bytes fails the test; errors naming the file are the expected outcome.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';

function runChild(iterations: number, seed: number): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'lsmt-fuzz-child.js'), String(iterations), String(seed)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

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
