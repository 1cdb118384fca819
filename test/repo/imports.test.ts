// The module graph of src/ as it runs: the compiled require() calls under dist/src. No cycle among
// modules, and no module importing from a layer above its own (the layering of
// docs/architecture.md, "Module layers"): a change low in the stack then never needs one above it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

const distSrc = path.join(__dirname, '..', '..', 'src');

/** Layer of each area, lowest first; an area is a directory under src/, or a single file at its top. */
const LAYERS: string[][] = [
  ['addon', 'log', 'errors', 'proto', 'labels', 'digest', 'atomic-file', 'untrusted-file', 'config', 'metrics', 'kernel'],
  ['grpc-status', 'grpc-socket'],
  ['registry'],
  ['trace'],
  ['device', 'convert', 'rpull'],
  ['snapshotter', 'doctor'],
  ['cli'],
];

function areaOf(file: string): string {
  const rel = path.relative(distSrc, file).split(path.sep);
  return rel.length === 1 ? rel[0].replace(/\.js$/, '') : rel[0];
}

function layerOf(area: string): number {
  const i = LAYERS.findIndex((l) => l.includes(area));
  assert.notEqual(i, -1, `src/${area} has no layer: add it to LAYERS here and to docs/architecture.md`);
  return i;
}

const repoSrc = path.join(distSrc, '..', '..', 'src');

/** Compiled files whose source is still in src/ (a build dir may hold output of deleted files). */
function jsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return jsFiles(p);
    const source = path.join(repoSrc, path.relative(distSrc, p)).replace(/\.js$/, '.ts');
    return e.name.endsWith('.js') && fs.existsSync(source) ? [p] : [];
  });
}

function resolveLocal(from: string, spec: string): string {
  const base = path.resolve(path.dirname(from), spec);
  for (const candidate of [base, `${base}.js`, path.join(base, 'index.js')]) {
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return candidate;
  }
  throw new Error(`${path.relative(distSrc, from)}: require("${spec}") resolves to no file`);
}

/** file → the src files it requires at run time (type-only imports are gone after compiling). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of jsFiles(distSrc)) {
    const text = fs.readFileSync(file, 'utf8');
    const deps = [...text.matchAll(/require\("(\.{1,2}\/[^"]*)"\)/g)].map((m) => resolveLocal(file, m[1]));
    graph.set(file, [...new Set(deps)]);
  }
  return graph;
}

/** Strongly connected components with more than one file, or a file requiring itself (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(scc);
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe('src/ module graph', () => {
  const rel = (f: string) => path.relative(distSrc, f);

  test('the compiled sources are there to walk', () => {
    assert.ok(fs.existsSync(distSrc), `${distSrc} is missing: run \`npm run build\``);
    assert.ok(jsFiles(distSrc).length >= 40, `expected the whole of src/ under ${distSrc}`);
  });

  test('no import cycle among src/ modules', () => {
    const found = cycles(importGraph()).map((scc) => scc.map(rel).sort().join(' → '));
    assert.deepEqual(found, [], `import cycles:\n${found.join('\n')}`);
  });

  test('no module imports from a layer above its own', () => {
    const bad: string[] = [];
    for (const [file, deps] of importGraph()) {
      const from = areaOf(file);
      for (const dep of deps) {
        const to = areaOf(dep);
        if (to === from) continue;
        if (layerOf(to) >= layerOf(from)) bad.push(`${rel(file)} (${from}) → ${rel(dep)} (${to})`);
      }
    }
    assert.deepEqual(bad, [], `imports that point up or sideways in the layering:\n${bad.join('\n')}`);
  });

  test('the cycle finder sees a cycle and the layering check an upward import', () => {
    const a = '/x/a.js';
    const b = '/x/b.js';
    const c = '/x/c.js';
    assert.deepEqual(cycles(new Map([[a, [b]], [b, [c]], [c, []]])), []);
    assert.equal(cycles(new Map([[a, [b]], [b, [c]], [c, [a]]])).length, 1);
    assert.equal(cycles(new Map([[a, [a]]])).length, 1);
    assert.ok(layerOf('snapshotter') > layerOf('device') && layerOf('cli') > layerOf('snapshotter'));
  });
});
