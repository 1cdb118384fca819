// LSMT golden tests: every upstream-made fixture decodes to the values its manifest states (test/fixtures/overlaybd/PROVENANCE.md), and our
// writer produces the same bytes as overlaybd-create / overlaybd-commit.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { commitLayer, createWritableLayer, layerInfo, openStack } from '../../src/addon';
import { copyFixture, ext4_64, fileSha256, fixture, makeTempDir, MiB, stackSha256, unzstd, withStack } from './lsmt-support';

const NULL_UUID = '00000000-0000-0000-0000-000000000000';
const ZERO_64M = '3b6a07d0d404fab4e23b6d34bc6696a6a312dd92821332385e5af7c01c421351';
const B_DISK = '4ce24e8d3b4ead0bbc14172760b0420040e8dded121e34fdf0a6a3a814e20159';
const D_ALONE = '43474841f064eecb5ff25f4555a8ebd0f27ffde0d4c729ff84681bc72c69e814';
const D_MERGED = 'a1e74b4005af3039798892054881f3daa310db281d52157e6dd0bdb65f5bc65d';

const tmp = makeTempDir('obd-lsmt-');
after(() => tmp.cleanup());

type Ext = { offset: number; length: number; zeroed: boolean };
const sectors = (e: Ext[]) => e.map((x) => [x.offset / 512, (x.offset + x.length) / 512, x.zeroed]);

describe('sealed LSMT fixtures decode as MANIFEST.md lists', () => {
  it('b.commit.lsmt: header, trailer, 3 extents with 253 padding entries, disk sha256', () => {
    const i = layerInfo(fixture('b_patterns/b.commit.lsmt'));
    assert.deepEqual(i.formats, ['lsmt-sealed']);
    assert.equal(i.header!.flags, 7);
    assert.equal(i.header!.indexOffset, 0);
    assert.equal(i.header!.indexSize, 0);
    assert.equal(i.header!.uuid, 'AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEE01');
    assert.equal(i.header!.parentUuid, NULL_UUID);
    assert.equal(i.header!.userTag, 'fixture b base layer');
    assert.equal(i.header!.version, 1);
    assert.equal(i.header!.subVersion, 1);
    assert.equal(i.trailer!.flags, 6);
    assert.equal(i.trailer!.indexOffset, 1057280);
    assert.equal(i.trailer!.indexSize, 256);
    assert.equal(i.trailer!.virtualSize, 64 * MiB);
    assert.equal(i.extentCount, 3);
    withStack({ lowers: [fixture('b_patterns/b.commit.lsmt')] }, (s) => {
      assert.deepEqual(sectors(s.extents()), [
        [0, 8, false],
        [16384, 18432, false],
        [122880, 122881, false],
      ]);
      assert.equal(s.size(), 64 * MiB);
      assert.equal(stackSha256(s), B_DISK);
      // spot values from the write table
      const head = s.read(0, 4096);
      assert.equal(head[0], 0xaa);
      assert.equal(head[1024], 0x55);
      assert.equal(head[2047], 0x55);
      assert.equal(head[2048], 0xaa);
      const mod = s.read(8 * MiB, 512);
      for (let k = 0; k < 512; k++) assert.equal(mod[k], (k * 7) % 251);
    });
  });

  it('d.commit.lsmt: zeroed extents keep the data cursor as moffset; alone it reads as MANIFEST says', () => {
    const i = layerInfo(fixture('d_stack/d.commit.lsmt'));
    assert.equal(i.header!.uuid, 'AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEE02');
    assert.equal(i.header!.parentUuid, 'AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEE01');
    assert.equal(i.header!.userTag, 'fixture d upper layer');
    assert.equal(i.trailer!.indexOffset, 18432);
    assert.equal(i.extentCount, 5);
    assert.equal(i.zeroedCount, 2);
    withStack({ lowers: [fixture('d_stack/d.commit.lsmt')] }, (s) => {
      assert.deepEqual(sectors(s.extents()), [
        [4, 8, true],
        [16392, 16400, false],
        [17408, 17536, true],
        [65536, 65552, false],
        [122878, 122882, false],
      ]);
      assert.equal(stackSha256(s), D_ALONE);
    });
  });

  it('empty layers (a1, a3) have no index bytes and read as zeros', () => {
    for (const [f, vsize, uuid, tag] of [
      ['a_empty/a1_create_1g.commit.lsmt', 1 << 30, NULL_UUID, ''],
      ['a_empty/a1_create_1g.commit_uuid_tag.lsmt', 1 << 30, '11111111-1111-4111-8111-111111111111', 'fixture a: empty layer'],
      ['a_empty/a3_api_64m.commit.lsmt', 64 * MiB, '0A0A0A0A-0000-4000-8000-0000000000C3', ''],
    ] as const) {
      const i = layerInfo(fixture(f));
      assert.equal(i.fileSize, 8192, f);
      assert.equal(i.trailer!.indexOffset, 4096, f);
      assert.equal(i.trailer!.indexSize, 0, f);
      assert.equal(i.trailer!.virtualSize, vsize, f);
      assert.equal(i.header!.uuid, uuid, f);
      assert.equal(i.header!.userTag, tag, f);
      assert.equal(i.extentCount, 0, f);
    }
    const parent = layerInfo(fixture('a_empty/a1_create_1g.commit_uuid_tag.lsmt')).header!.parentUuid;
    assert.equal(parent, '00000000-0000-4000-8000-000000000000');
    withStack({ lowers: [fixture('a_empty/a3_api_64m.commit.lsmt')] }, (s) => assert.equal(stackSha256(s), ZERO_64M));
  });

  it('writable layer files are recognised with their header fields', () => {
    const d = layerInfo(fixture('a_empty/a1_create_1g.rw.data'));
    assert.deepEqual(d.formats, ['lsmt-rw-data']);
    assert.equal(d.header!.flags, 3);
    assert.equal(d.header!.uuid, 'C27AF1BB-2805-4A4C-9E8A-91C65D1B04DB');
    const x = layerInfo(fixture('a_empty/a1_create_1g.rw.index'));
    assert.deepEqual(x.formats, ['lsmt-rw-index']);
    assert.equal(x.header!.flags, 1);
    assert.equal(x.header!.indexOffset, 4096);
    const bi = layerInfo(fixture('b_patterns/b.rw.index'));
    assert.equal(bi.header!.uuid, '0B0B0B0B-1111-4222-8333-444444444401');
  });

  it('ext4_64 (ZFile around LSMT): 8448 index entries, 8323 live, read vectors match', () => {
    const i = layerInfo(ext4_64());
    assert.deepEqual(i.formats, ['zfile', 'lsmt-sealed']);
    assert.equal(i.trailer!.indexOffset, 541798400);
    assert.equal(i.trailer!.indexSize, 8448);
    assert.equal(i.extentCount, 8323);
    assert.equal(i.header!.uuid, 'C02FB491-B4D4-4904-8684-A014D032AF78');
    assert.equal(i.trailer!.virtualSize, 64 * 1024 * MiB);
    assert.equal(i.dataBytes, 1058192 * 512);
    withStack({ lowers: [ext4_64()] }, (s) => {
      const ext = s.extents();
      assert.deepEqual(sectors(ext.slice(0, 3)), [
        [0, 8272, false],
        [8272, 8392, true],
        [8392, 8400, false],
      ]);
      assert.equal(stackSha256(s, 0, MiB), '7afc8295bdfac4e6189e2a10850384e91391d02e0e6d4931e1f7f09f9d54420b');
      assert.equal(stackSha256(s, 0, 64 * MiB), 'a7405d1545c7bdb63e3d5233a1ce3e34a2564eb8269bfb125202168fb1bdc596');
      assert.equal(stackSha256(s, 68719411200, 65536), 'de2f256064a0af797747c2b97505dc0b9f3df0de4f489eac731c23ae9ca9cc31');
      const sb = s.read(1024, 512);
      assert.equal(sb.readUInt16LE(56), 0xef53);
    });
  });
});

describe('layer stacks merge as overlaybd does', () => {
  it('b below d: top wins, zeroed extents mask lower data, holes read zero (a1e74b40…)', () => {
    withStack({ lowers: [fixture('b_patterns/b.commit.lsmt'), fixture('d_stack/d.commit.lsmt')] }, (s) => {
      assert.equal(stackSha256(s), D_MERGED);
      assert.ok(s.read(2048, 2048).equals(Buffer.alloc(2048)), 'd zeroes the tail of b\'s 0xAA block');
      assert.equal(s.read(0, 512)[0], 0xaa);
    });
  });

  it('the same merge with the lower given tar-wrapped and ZFile-compressed', () => {
    const i = layerInfo(fixture('c_zfile/c.lz4_bs4k.zfile.tar'));
    assert.deepEqual(i.formats, ['tar-wrapped', 'zfile', 'lsmt-sealed']);
    for (const lower of ['c_zfile/c.lz4_bs4k.zfile.tar', 'c_zfile/c.zstd_bs64k.zfile', 'c_zfile/c.commit_z_lz4_bs4k.zfile']) {
      withStack({ lowers: [fixture(lower), fixture('d_stack/d.commit.lsmt')] }, (s) => assert.equal(stackSha256(s), D_MERGED, lower));
    }
  });

  it('overlaybd-merge output (entries with tag=1 on disk) reads as the same merged disk', () => {
    const f = fixture('d_stack/d.merged_by_overlaybd-merge.zfile');
    const i = layerInfo(f);
    assert.equal(i.extentCount, 9);
    assert.equal(i.zeroedCount, 2);
    withStack({ lowers: [f] }, (s) => {
      assert.deepEqual(sectors(s.extents()).slice(0, 3), [
        [0, 4, false],
        [4, 8, true],
        [16384, 16392, false],
      ]);
      assert.equal(stackSha256(s), D_MERGED);
    });
  });

  it('writable layers replay their index log: b.rw alone reads as b.commit; d.rw over b as the merge', () => {
    const bData = copyFixture('b_patterns/b.rw.data', tmp, 'replay-b.data');
    const bIndex = copyFixture('b_patterns/b.rw.index', tmp, 'replay-b.index');
    withStack({ lowers: [], upper: { data: bData, index: bIndex } }, (s) => assert.equal(stackSha256(s), B_DISK));
    const dData = copyFixture('d_stack/d.rw.data', tmp, 'replay-d.data');
    const dIndex = copyFixture('d_stack/d.rw.index', tmp, 'replay-d.index');
    withStack({ lowers: [fixture('b_patterns/b.commit.lsmt')], upper: { data: dData, index: dIndex } }, (s) => {
      assert.equal(s.readOnly(), false);
      assert.equal(stackSha256(s), D_MERGED);
    });
  });

  it('the stack size is the top-most layer\'s virtual size', () => {
    withStack({ lowers: [ext4_64(), fixture('b_patterns/b.commit.lsmt')] }, (s) => assert.equal(s.size(), 64 * MiB));
    withStack({ lowers: [fixture('b_patterns/b.commit.lsmt'), ext4_64()] }, (s) => assert.equal(s.size(), 64 * 1024 * MiB));
  });

  it('a read-only stack refuses writes with EROFS', () => {
    withStack({ lowers: [fixture('b_patterns/b.commit.lsmt')] }, (s) => {
      assert.throws(() => s.write(0, Buffer.alloc(512)), { code: 'EROFS' });
      assert.throws(() => s.discard(0, 512), { code: 'EROFS' });
      assert.throws(() => s.read(1, 512), { code: 'EINVAL' });
      assert.throws(() => s.read(64 * MiB, 512), { code: 'EINVAL' });
    });
  });

  it('a closed stack refuses calls with EBADF', () => {
    const s = openStack({ lowers: [fixture('b_patterns/b.commit.lsmt')] });
    s.close();
    assert.throws(() => s.read(0, 512), { code: 'EBADF' });
  });
});

describe('our writer matches upstream byte for byte', () => {
  it('create: a3 writable layer (64 MiB, fixed uuid) = a3_api_64m.rw.{data,index}', () => {
    const data = tmp.join('a3.data');
    const index = tmp.join('a3.index');
    const uuid = createWritableLayer(data, index, { vsize: 64 * MiB, uuid: '0a0a0a0a-0000-4000-8000-000000000003' });
    assert.equal(uuid, '0A0A0A0A-0000-4000-8000-000000000003');
    assert.equal(fileSha256(data), fileSha256(fixture('a_empty/a3_api_64m.rw.data')));
    assert.equal(fileSha256(index), fileSha256(fixture('a_empty/a3_api_64m.rw.index')));
    assert.throws(() => createWritableLayer(data, index, { vsize: 64 * MiB }), { code: 'EEXIST' });
  });

  const cases: { name: string; data: () => string; index: string; opts: Parameters<typeof commitLayer>[3]; sha: string }[] = [
    {
      name: 'b (uuid + tag) → b.commit.lsmt',
      data: () => fixture('b_patterns/b.rw.data'),
      index: 'b_patterns/b.rw.index',
      opts: { uuid: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeee01', userTag: 'fixture b base layer' },
      sha: 'e06d416ed5dfcb75ffc7f516f4a1174da0ca16b4f1a6bd58ea900537b4dd5c03',
    },
    {
      name: 'b (no options) → b.commit_nouuid.lsmt',
      data: () => fixture('b_patterns/b.rw.data'),
      index: 'b_patterns/b.rw.index',
      opts: {},
      sha: '7fa951ed401a3466e0a9943eb3b3bf2e3e30bf7f11bb9f72c22035f0ffad1e7f',
    },
    {
      name: 'd (uuid, parent, tag; zeroed extents) → d.commit.lsmt',
      data: () => fixture('d_stack/d.rw.data'),
      index: 'd_stack/d.rw.index',
      opts: { uuid: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeee02', parentUuid: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeee01', userTag: 'fixture d upper layer' },
      sha: 'f114bc7457da18050857191b8d5419ed52f22268ef3d98a0bd59409f17a073fb',
    },
    {
      name: 'a1 empty (no options) → a1_create_1g.commit.lsmt',
      data: () => fixture('a_empty/a1_create_1g.rw.data'),
      index: 'a_empty/a1_create_1g.rw.index',
      opts: {},
      sha: '17edbeb74ee12e4453b907364dadfd2087a47fe8a9c3a10fc265b5de308b58a6',
    },
    {
      name: 'a1 empty (uuid, parent, tag) → a1_create_1g.commit_uuid_tag.lsmt',
      data: () => fixture('a_empty/a1_create_1g.rw.data'),
      index: 'a_empty/a1_create_1g.rw.index',
      opts: { uuid: '11111111-1111-4111-8111-111111111111', parentUuid: '00000000-0000-4000-8000-000000000000', userTag: 'fixture a: empty layer' },
      sha: 'fb3002098b648e2dcb41a10cf62e0d9152096ccc3c904637f40faa161d373482',
    },
    {
      name: 'a3 empty 64 MiB → a3_api_64m.commit.lsmt',
      data: () => fixture('a_empty/a3_api_64m.rw.data'),
      index: 'a_empty/a3_api_64m.rw.index',
      opts: { uuid: '0a0a0a0a-0000-4000-8000-0000000000c3' },
      sha: '77c5879c5fe1ec314b57e7f415dad1edabc1d574d118b64144c546e438262247',
    },
    {
      name: 'e1 (ext4 apply, index records tagged 1) → e1.commit.lsmt',
      data: () => unzstd('e_ext4/e1.rw.data.zst', tmp),
      index: 'e_ext4/e1.rw.index',
      opts: { uuid: 'eeeeeeee-0001-4000-8000-000000000001', parentUuid: 'C02FB491-B4D4-4904-8684-A014D032AF78' },
      sha: '68b1866bbaea6c2cd0c0ebb89a8ae8223c251b3b03fbe5aaf687cc965fe6326e',
    },
    {
      name: 'e2 (index records tagged 2) → e2.commit.lsmt',
      data: () => unzstd('e_ext4/e2.rw.data.zst', tmp),
      index: 'e_ext4/e2.rw.index',
      opts: { uuid: 'eeeeeeee-0002-4000-8000-000000000002', parentUuid: 'eeeeeeee-0001-4000-8000-000000000001' },
      sha: '152fb323b681f6b6c51f780eab22b7860926c75f4c3ef7ad62cef9c47dc3c0e9',
    },
  ];
  for (const c of cases) {
    it(`commit ${c.name}`, () => {
      const out = tmp.join(`commit-${cases.indexOf(c)}.lsmt`);
      commitLayer(c.data(), fixture(c.index), out, c.opts);
      assert.equal(fileSha256(out), c.sha);
    });
  }

  it('commit --zfile (lz4, 4 KiB) of b = c.commit_z_lz4_bs4k.zfile (header overwritten)', () => {
    const out = tmp.join('b.commit.zfile');
    commitLayer(fixture('b_patterns/b.rw.data'), fixture('b_patterns/b.rw.index'), out, {
      uuid: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeee01',
      userTag: 'fixture b base layer',
      zfile: { algorithm: 'lz4', blockSize: 4096 },
    });
    assert.equal(fileSha256(out), '3cd4fa1ae1c78a3ddf2680c44b48b53027f99035652d6fdab736add093e3f918');
  });

  it('commit --zfile zstd 64 KiB decodes to b.commit.lsmt', () => {
    const out = tmp.join('b.commit.zstd.zfile');
    commitLayer(fixture('b_patterns/b.rw.data'), fixture('b_patterns/b.rw.index'), out, {
      uuid: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeee01',
      userTag: 'fixture b base layer',
      zfile: { algorithm: 'zstd', blockSize: 65536 },
    });
    const i = layerInfo(out);
    assert.deepEqual(i.formats, ['zfile', 'lsmt-sealed']);
    assert.equal(i.zfile!.algorithm, 'zstd');
    assert.equal(i.zfile!.blockSize, 65536);
    withStack({ lowers: [out] }, (s) => assert.equal(stackSha256(s), B_DISK));
  });

  it('commit refuses bad uuids and over-long tags, leaving no output', () => {
    const out = tmp.join('bad.lsmt');
    const args = [fixture('b_patterns/b.rw.data'), fixture('b_patterns/b.rw.index'), out] as const;
    assert.throws(() => commitLayer(...args, { uuid: 'not-a-uuid' }), { code: 'EINVAL', message: /uuid/ });
    assert.throws(() => commitLayer(...args, { userTag: 'x'.repeat(257) }), { code: 'ENOBUFS' });
    assert.equal(fs.existsSync(out), false);
  });
});
