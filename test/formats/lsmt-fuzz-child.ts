// Fuzz worker (run in a child process by lsmt-fuzz.test.ts, so a crash is seen as a failure):
// mutates real LSMT fixtures — sealed layers, writable index logs, tar wrappers — and opens and
// reads each mutant. Allowed outcomes: an error naming the file, or a successful read; mutants that
// only touch bytes the format ignores must read back exactly like the original.
// Usage: node lsmt-fuzz-child.js <iterations> <seed>
import crypto from 'node:crypto';
import fs from 'node:fs';
import { layerInfo, openStack, StackSpec } from '../../src/addon';
import { fixture, makeTempDir, prng } from './lsmt-support';

const iterations = Number(process.argv[2] ?? 1000);
const rnd = prng(Number(process.argv[3] ?? 1));
const tmp = makeTempDir('obd-lsmt-fuzz-');

interface Target {
  name: string;
  bytes: Buffer;
  /** Byte ranges the reader must not care about (mutations there must not change the data). */
  ignored: [number, number][];
  /** Ranges where mutations are concentrated (headers, index, trailer). */
  hot: [number, number][];
  spec: (file: string) => StackSpec;
}

function sealed(rel: string, lowerRel?: string): Target {
  const bytes = fs.readFileSync(fixture(rel));
  const t = bytes.length - 4096;
  const indexOffset = Number(bytes.readBigUInt64LE(t + 32));
  const indexSize = Number(bytes.readBigUInt64LE(t + 40));
  const ignored: [number, number][] = [
    [32, 4096], // header fields other than magic/flags: the trailer is authoritative
    [t + 56, t + 4096], // trailer uuid, parent, version, tag, padding
  ];
  for (let i = 0; i < indexSize; i++) ignored.push([indexOffset + 16 * i + 15, indexOffset + 16 * i + 16]); // tag byte
  return {
    name: rel,
    bytes,
    ignored,
    hot: [
      [0, 64],
      [indexOffset, indexOffset + 16 * Math.min(indexSize, 16)],
      [t, t + 64],
    ],
    spec: (file) => ({ lowers: lowerRel ? [fixture(lowerRel), file] : [file] }),
  };
}

function rwIndex(rel: string, dataRel: string): Target {
  const bytes = fs.readFileSync(fixture(rel));
  const data = tmp.join(`rw-${rel.replace(/\W/g, '_')}.data`);
  fs.copyFileSync(fixture(dataRel), data);
  fs.chmodSync(data, 0o644);
  return {
    name: rel,
    bytes,
    ignored: [[40, 4096]], // index header: index_size, vsize, uuids, tag, padding are not used
    hot: [
      [0, 64],
      [4096, bytes.length],
    ],
    spec: (file) => ({ lowers: [], upper: { data, index: file } }),
  };
}

function tarWrapped(rel: string): Target {
  const bytes = fs.readFileSync(fixture(rel));
  return { name: rel, bytes, ignored: [], hot: [[0, 1536]], spec: (file) => ({ lowers: [file], verify: true }) };
}

const targets: Target[] = [
  sealed('d_stack/d.commit.lsmt'),
  sealed('d_stack/d.commit.lsmt', 'b_patterns/b.commit.lsmt'),
  sealed('b_patterns/b.commit.lsmt'),
  rwIndex('d_stack/d.rw.index', 'd_stack/d.rw.data'),
  tarWrapped('c_zfile/c.lz4_bs4k.zfile.tar'),
];

/** Digest of what the stack maps: the extent list and the bytes of every data extent. */
function digest(spec: StackSpec): string {
  const s = openStack(spec);
  try {
    const h = crypto.createHash('sha256');
    const ext = s.extents();
    h.update(JSON.stringify(ext.map((e) => [e.offset, e.length, e.zeroed])));
    for (const e of ext) if (!e.zeroed) h.update(s.read(e.offset, e.length));
    // and a few fixed reads, holes included
    for (const off of [0, 4096, 8 << 20, 32 << 20, (60 << 20) - 4096]) if (off + 8192 <= s.size()) h.update(s.read(off, 8192));
    return h.digest('hex');
  } finally {
    s.close();
  }
}

function mutate(t: Target): { bytes: Buffer; harmless: boolean; what: string } {
  const b = Buffer.from(t.bytes);
  const pick = rnd() % 10;
  const inRange = (r: [number, number][]) => {
    const [a, z] = r[rnd() % r.length];
    return a + (rnd() % Math.max(1, z - a));
  };
  if (pick === 0) {
    const len = rnd() % b.length;
    return { bytes: b.subarray(0, len), harmless: false, what: `truncate to ${len}` };
  }
  if (pick <= 2 && t.ignored.length > 0) {
    const pos = inRange(t.ignored);
    b[pos] ^= 1 + (rnd() % 255);
    return { bytes: b, harmless: true, what: `flip ignored byte ${pos}` };
  }
  if (pick <= 4) {
    // an absurd or boundary value over a field-sized slot
    const pos = inRange(t.hot) & ~7;
    const values = [0xffffffffffffffffn, 1n << 50n, 1n << 40n, 0n, 4096n, BigInt(b.length), 0x7fffffffn, 16383n];
    if (pos + 8 <= b.length) b.writeBigUInt64LE(values[rnd() % values.length], pos);
    return { bytes: b, harmless: false, what: `u64 at ${pos}` };
  }
  const count = 1 + (rnd() % 4);
  const where: number[] = [];
  for (let k = 0; k < count; k++) {
    const pos = rnd() % 3 === 0 ? rnd() % b.length : inRange(t.hot);
    if (pos < b.length) {
      b[pos] ^= 1 << (rnd() % 8);
      where.push(pos);
    }
  }
  const harmless = where.every((p) => t.ignored.some(([a, z]) => p >= a && p < z));
  return { bytes: b, harmless, what: `flip bits at ${where.join(',')}` };
}

const baseline = new Map<Target, string>();
for (const t of targets) {
  const file = tmp.join(`base-${targets.indexOf(t)}`);
  fs.writeFileSync(file, t.bytes);
  baseline.set(t, digest(t.spec(file)));
}

const stats = { iterations: 0, errors: 0, opened: 0, harmlessChecked: 0 };
const violations: string[] = [];
for (let i = 0; i < iterations; i++) {
  const t = targets[rnd() % targets.length];
  const m = mutate(t);
  const file = tmp.join(`mutant-${i % 8}`);
  fs.writeFileSync(file, m.bytes);
  stats.iterations++;
  let d: string | undefined;
  try {
    d = digest(t.spec(file));
    stats.opened++;
  } catch (err) {
    const e = err as { code?: string; message: string };
    stats.errors++;
    if (typeof e.code !== 'string' || !e.code.startsWith('E')) violations.push(`${t.name} ${m.what}: error without errno code: ${e.message}`);
    else if (!e.message.includes(file) && !e.message.includes(fixture(''))) violations.push(`${t.name} ${m.what}: error does not name the file: ${e.message}`);
    if (m.harmless) violations.push(`${t.name} ${m.what}: harmless mutation rejected: ${e.message}`);
  }
  if (d !== undefined && m.harmless) {
    stats.harmlessChecked++;
    if (d !== baseline.get(t)) violations.push(`${t.name} ${m.what}: harmless mutation changed the data`);
  }
  try {
    layerInfo(file); // must not crash either
  } catch {
    // errors are fine
  }
  if (violations.length > 10) break;
}
for (const v of violations) process.stdout.write(`VIOLATION ${v}\n`);
tmp.cleanup();
process.stdout.write(JSON.stringify(stats) + '\n');
process.exit(violations.length > 0 ? 1 : 0);
