// Runs the C++ stack test (addon/test/stack): lowers whose reads complete later, on other threads,
// out of order — as remote lowers do — plus failure injection and concurrent writers on the upper.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { runChild } from '../helpers/child';
import { makeTempDir } from '../helpers/tmp';
import { fixture } from './lsmt-support';

const program = path.join(__dirname, '..', '..', '..', 'build', 'Release', 'stack_async_test');
const tmp = makeTempDir('obd-stack-async-');
after(() => tmp.cleanup());

describe('layer stack with asynchronous lowers', () => {
  it('reads complete once with the right bytes; a failing lower fails only its reads; concurrent writers stay consistent', { timeout: 120_000 }, async () => {
    const r = await runChild(program, [fixture(''), tmp.path], 110_000);
    assert.equal(r.signal, null, `stack_async_test crashed (${r.signal})\n${r.out}${r.err}`);
    assert.equal(r.code, 0, `stack_async_test failed:\n${r.out}${r.err}`);
    assert.equal(r.out.split('\n').filter((l) => l.startsWith('ok ')).length, 4, r.out);
  });
});
