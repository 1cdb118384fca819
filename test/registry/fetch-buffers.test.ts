// Runs the C++ checks of fetched-bytes memory (addon/test/remote/fetch_buffers_test.cc): page-aligned
// fetch buffers, the pool that keeps large ones, and direct cache writes from aligned and unaligned memory.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { runChild } from '../helpers/child';
import { makeTempDir } from '../helpers/tmp';

const program = path.join(__dirname, '..', '..', '..', 'build', 'Release', 'fetch_buffers_test');
const tmp = makeTempDir('obd-fetch-buffers-');
after(() => tmp.cleanup());

describe('fetched bytes in memory and on their way to the cache', () => {
  it('aligned buffers stay aligned, the pool keeps large buffers over small ones, direct writes keep the bytes', async () => {
    const r = await runChild(program, [tmp.path], 60_000);
    assert.equal(r.signal, null, `fetch_buffers_test crashed (${r.signal})\n${r.out}${r.err}`);
    assert.equal(r.code, 0, `fetch_buffers_test failed:\n${r.out}${r.err}`);
    assert.equal(r.out.split('\n').filter((l) => l.startsWith('ok ')).length, 3, r.out);
  });
});
