// Every metric obd exports is documented: each `obd_*` name in src/ appears in docs/operations.md
// (histogram series by their family name; names followed by a dot are file names, e.g. the addon).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

const repoRoot = path.resolve(__dirname, '..', '..', '..');

function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('every metric name in src/ is documented in docs/operations.md', () => {
  const names = new Set<string>();
  for (const f of tsFiles(path.join(repoRoot, 'src')))
    for (const m of fs.readFileSync(f, 'utf8').matchAll(/\bobd_[a-z][a-z0-9_]*[a-z0-9](?![.\w])/g)) names.add(m[0].replace(/_(bucket|sum|count)$/, ''));
  assert.ok(names.size >= 10, `found only ${names.size} metric names in src/`);
  const docs = fs.readFileSync(path.join(repoRoot, 'docs', 'operations.md'), 'utf8');
  const documented = new Set([...docs.matchAll(/`(obd_[a-z0-9_]+)`/g)].map((m) => m[1]));
  const missing = [...names].filter((n) => !documented.has(n)).sort();
  assert.deepEqual(missing, [], `metrics missing from docs/operations.md: ${missing.join(', ')}`);
});
