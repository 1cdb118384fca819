// The repository stands alone: no tracked file names a path outside it (a sibling checkout, a
// developer's machine), and every relative link of README.md and docs/ resolves, anchors included.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { headingAnchors, markdownLinks } from './markdown';

const repoRoot = path.resolve(__dirname, '..', '..', '..');

function trackedFiles(): string[] {
  let out: string;
  try {
    out = execFileSync('git', ['-C', repoRoot, 'ls-files', '-z'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch (err) {
    throw new Error(`this test needs git and a git checkout at ${repoRoot}: ${(err as Error).message}`);
  }
  return out.split('\0').filter((f) => f !== '' && fs.existsSync(path.join(repoRoot, f)));
}

/** Text of a tracked file, or undefined for binary files (a NUL byte in the first 8 KiB). */
function textOf(file: string): string | undefined {
  const buf = fs.readFileSync(path.join(repoRoot, file));
  if (buf.subarray(0, 8192).includes(0)) return undefined;
  return buf.toString('utf8');
}

// Built from pieces so that this file does not match itself.
const SLASH = '/';
const outsidePatterns: Array<{ re: RegExp; what: string }> = [
  { re: new RegExp(`\\.\\.${SLASH}shared\\b`), what: 'a sibling directory of the repository' },
  { re: new RegExp(`(^|[^A-Za-z0-9_.-])${SLASH}work${SLASH}`), what: 'the development workspace' },
  { re: new RegExp(`(^|[^A-Za-z0-9_.-])${SLASH}home${SLASH}[A-Za-z0-9_.-]+`), what: "a user's home directory" },
  { re: new RegExp(`(^|[^A-Za-z0-9_.-])${SLASH}Users${SLASH}[A-Za-z0-9_.-]+`), what: "a user's home directory" },
];

export function outsidePathsIn(text: string): Array<{ line: number; what: string; text: string }> {
  const found: Array<{ line: number; what: string; text: string }> = [];
  text.split('\n').forEach((l, i) => {
    for (const p of outsidePatterns) if (p.re.test(l)) found.push({ line: i + 1, what: p.what, text: l.trim().slice(0, 120) });
  });
  return found;
}

function brokenLinksIn(mdFile: string): string[] {
  const abs = path.join(repoRoot, mdFile);
  const broken: string[] = [];
  for (const link of markdownLinks(fs.readFileSync(abs, 'utf8'))) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(link.target)) continue; // http:, https:, mailto:
    const [rawPath, anchor] = link.target.split('#', 2) as [string, string | undefined];
    const target = rawPath === '' ? abs : path.resolve(path.dirname(abs), decodeURIComponent(rawPath));
    const where = `${mdFile}:${link.line}: (${link.target})`;
    if (path.relative(repoRoot, target).startsWith('..')) {
      broken.push(`${where} points outside the repository`);
      continue;
    }
    if (!fs.existsSync(target)) {
      broken.push(`${where} does not exist`);
      continue;
    }
    if (anchor !== undefined && target.endsWith('.md') && !headingAnchors(fs.readFileSync(target, 'utf8')).has(anchor)) {
      broken.push(`${where} has no heading with anchor #${anchor}`);
    }
  }
  return broken;
}

describe('the repository is self-contained', () => {
  it('no tracked file names a path outside the repository', () => {
    const files = trackedFiles();
    assert.ok(files.length > 50, `git ls-files listed only ${files.length} files`);
    const offenders: string[] = [];
    for (const f of files) {
      const text = textOf(f);
      if (text === undefined) continue;
      for (const hit of outsidePathsIn(text)) offenders.push(`${f}:${hit.line}: names ${hit.what}: ${hit.text}`);
    }
    assert.deepEqual(offenders, [], `tracked files name paths outside the repository:\n${offenders.join('\n')}`);
  });

  it('the check recognises each kind of outside path', () => {
    assert.equal(outsidePathsIn(`see ..${SLASH}shared/DESIGN.md`).length, 1);
    assert.equal(outsidePathsIn(`from ../../..${SLASH}shared/spec/x.md`).length, 1);
    assert.equal(outsidePathsIn(`'${SLASH}work${SLASH}shared/fixtures/a.tar'`).length, 1);
    assert.equal(outsidePathsIn(`${SLASH}home${SLASH}alice/obd/x`).length, 1);
    assert.deepEqual(outsidePathsIn(`/root/.docker/config.json and /var/lib/obd/cache and src${SLASH}work${SLASH}x`), []);
  });

  it('every relative link in README.md and docs/ resolves', () => {
    const files = trackedFiles().filter((f) => f === 'README.md' || (f.startsWith('docs/') && f.endsWith('.md')));
    assert.ok(files.includes('README.md'), 'README.md is not tracked');
    assert.ok(files.some((f) => f.startsWith('docs/')), 'docs/ has no tracked markdown files');
    const broken = files.flatMap(brokenLinksIn);
    assert.deepEqual(broken, [], `broken links:\n${broken.join('\n')}`);
  });
});

describe('markdown link reading', () => {
  it('finds inline and reference links outside code, and GitHub heading anchors', () => {
    const md = ['# Block cache: `cacheDir` (x)', 'see [a](docs/a.md#b) and `[not](code.md)`', '```', '[no](fenced.md)', '```', '[r]: other.md', '## Block cache: `cacheDir` (x)'].join('\n');
    assert.deepEqual(markdownLinks(md).map((l) => l.target), ['docs/a.md#b', 'other.md']);
    assert.deepEqual([...headingAnchors(md)], ['block-cache-cachedir-x', 'block-cache-cachedir-x-1']);
  });
});
