// TurboOCI reads of a remote gzip layer: through the gzip index, a read at a random offset of a
// 100 MiB layer fetches at most the compressed bytes of the one access-point span that holds it
// (rounded out to block-cache units), counted at a proxy in front of the registry.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import { createRemoteFetcher, gzipIndexBuild, openBlockCache, openGzipFile, openRemoteFile } from '../../src/addon';
import { BlobSource, RegistryClient } from '../../src/registry';
import { makeStream } from '../formats/gzindex-support';
import { prng } from '../formats/zfile-support';
import { FaultProxy } from '../helpers/fault-proxy';
import { TestRegistry } from '../helpers/registry';

const MiB = 1 << 20;
const UNIT = 64 * 1024;

describe('TurboOCI: random reads of a remote gzip layer', () => {
  const reg = new TestRegistry();
  let proxy: FaultProxy;
  let dir: string;
  let raw: Buffer;
  let digest = '';
  let gzSize = 0;
  let points: { de: number; en: number }[] = [];
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-turbo-span-'));
    await reg.start();
    raw = makeStream(100 * MiB, 21);
    const gz = zlib.gzipSync(raw, { level: 6 });
    gzSize = gz.length;
    fs.writeFileSync(path.join(dir, 'layer.gz'), gz);
    digest = await reg.pushBlob('lib/turbo', gz);
    gzipIndexBuild(path.join(dir, 'layer.gz'), path.join(dir, 'gzip.meta'));
    const ix = fs.readFileSync(path.join(dir, 'gzip.meta'));
    const table = zlib.inflateSync(ix.subarray(Number(ix.readBigInt64LE(313))));
    for (let i = 0; i < table.length / 29; i++)
      points.push({ de: Number(table.readBigInt64LE(i * 29)), en: Number(table.readBigInt64LE(i * 29 + 8)) });
    proxy = await FaultProxy.inFrontOf(reg.host);
  });
  after(async () => {
    await proxy?.stop();
    await reg.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('each read fetches at most one span of compressed bytes', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    const source = new BlobSource(client);
    source.add({ host: proxy.host, repo: 'lib/turbo', digest, size: gzSize });
    const cache = openBlockCache({ dir: path.join(dir, 'cache'), capacityBytes: 1 << 30, unitSize: UNIT });
    const fetcher = createRemoteFetcher(source.fetch);
    t.after(() => fetcher.close());
    const blob = openRemoteFile({ digest, size: gzSize, cache, fetcher, readAheadUnits: 0 });
    const f = openGzipFile({ blob, index: path.join(dir, 'gzip.meta'), cacheBytes: 0 });
    const fetchedBytes = () => proxy.seen.filter((s) => s.method === 'GET' && s.range).reduce((n, s) => {
      const m = /bytes=(\d+)-(\d+)/.exec(s.range!)!;
      return n + Number(m[2]) - Number(m[1]) + 1;
    }, 0);
    const rnd = prng(9);
    let worst = 0;
    const spans = new Set<number>();
    const order = points.map((_, i) => i).sort((a, b) => ((a * 2654435761) % 1009) - ((b * 2654435761) % 1009));
    assert.ok(points.length >= 20, `${points.length} access points`);
    for (const i of order.slice(0, 40)) {
      // a 4 KiB read inside one span, each span once, in a scattered order
      spans.add(i);
      const start = points[i].de;
      const end = i + 1 < points.length ? points[i + 1].de : raw.length;
      const off = start + (rnd() % Math.max(1, end - start - 4096));
      const before = fetchedBytes();
      const got = await f.read(off, 4096);
      assert.ok(got.equals(raw.subarray(off, off + 4096)), `bytes at ${off}`);
      const cStart = points[i].en - 1;
      const cEnd = i + 1 < points.length ? points[i + 1].en + 1 : gzSize;
      const allowed = Math.ceil(cEnd / UNIT) * UNIT - Math.floor(cStart / UNIT) * UNIT;
      const fetched = fetchedBytes() - before;
      worst = Math.max(worst, fetched / (cEnd - cStart));
      assert.ok(fetched <= allowed, `read in span ${i} fetched ${fetched} bytes; its compressed span is ${cEnd - cStart} (${allowed} in whole units)`);
    }
    t.diagnostic(`${points.length} spans over ${gzSize} compressed bytes; worst read fetched ${worst.toFixed(2)}x its span`);
  });
});
