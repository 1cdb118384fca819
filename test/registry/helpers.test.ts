// The test helpers themselves: a private registry in each auth mode answers and stores blobs.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestRegistry } from '../helpers/registry';
import { TokenServer } from '../helpers/token-server';

describe('test registry helper', () => {
  it('plain: pushes a blob and serves it with a Range', async (t) => {
    const reg = new TestRegistry();
    t.after(() => reg.stop());
    await reg.start();
    const d = await reg.pushBlob('lib/a', Buffer.from('hello world'));
    const r = await fetch(`${reg.url}/v2/lib/a/blobs/${d}`, { headers: { range: 'bytes=6-10' } });
    assert.equal(r.status, 206);
    assert.equal(await r.text(), 'world');
  });

  it('basic: refuses anonymous, accepts the htpasswd user', async (t) => {
    const reg = new TestRegistry({ basic: { users: { alice: 's3cret' } } });
    t.after(() => reg.stop());
    await reg.start();
    const anon = await fetch(`${reg.url}/v2/`);
    assert.equal(anon.status, 401);
    assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic /);
    const d = await reg.pushBlob('lib/b', Buffer.from('x'));
    assert.match(d, /^sha256:/);
  });

  describe('token', () => {
    const ts = new TokenServer({ users: { bob: 'pw' }, anonymousPull: true });
    let reg: TestRegistry;
    before(async () => {
      await ts.start();
      reg = new TestRegistry({ token: { server: ts, user: 'bob', password: 'pw' } });
      await reg.start();
    });
    after(async () => {
      await reg?.stop();
      await ts.stop();
    });
    it('issues a Bearer challenge and accepts the token for push', async () => {
      const anon = await fetch(`${reg.url}/v2/`);
      assert.equal(anon.status, 401);
      assert.match(anon.headers.get('www-authenticate') ?? '', /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token"/);
      const img = await reg.pushImage('lib/c', 'v1', [{ data: Buffer.from('layer') }]);
      assert.equal(img.layers.length, 1);
    });
  });
});
