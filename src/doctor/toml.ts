// A small TOML reader, enough for containerd's config.toml: tables, arrays of tables, dotted and
// quoted keys, strings (basic, literal, multi-line), integers, floats, booleans, arrays, inline
// tables. Dates are kept as strings. Errors name the line.

export type TomlValue = string | number | boolean | TomlValue[] | TomlTable;
export interface TomlTable {
  [key: string]: TomlValue;
}

export class TomlError extends Error {
  constructor(message: string, readonly line: number) {
    super(`line ${line}: ${message}`);
    this.name = 'TomlError';
  }
}

const BARE = /[A-Za-z0-9_-]/;

class Reader {
  private i = 0;
  constructor(private readonly s: string) {}

  line(): number {
    return this.s.slice(0, this.i).split('\n').length;
  }
  fail(why: string): never {
    throw new TomlError(why, this.line());
  }
  eof(): boolean {
    return this.i >= this.s.length;
  }
  peek(n = 0): string {
    return this.s[this.i + n] ?? '';
  }
  startsWith(t: string): boolean {
    return this.s.startsWith(t, this.i);
  }
  skipSpaces(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.i++;
  }
  /** Spaces, newlines and comments (inside arrays). */
  skipBlank(): void {
    for (;;) {
      this.skipSpaces();
      if (this.peek() === '#') while (!this.eof() && this.peek() !== '\n') this.i++;
      if (this.peek() === '\n' || this.peek() === '\r') this.i++;
      else return;
    }
  }
  endOfLine(): void {
    this.skipSpaces();
    if (this.peek() === '#') while (!this.eof() && this.peek() !== '\n') this.i++;
    if (this.peek() === '\r') this.i++;
    if (!this.eof() && this.peek() !== '\n') this.fail(`unexpected ${JSON.stringify(this.peek())}`);
    this.i++;
  }
  take(t: string): void {
    if (!this.startsWith(t)) this.fail(`expected ${JSON.stringify(t)}`);
    this.i += t.length;
  }

  key(): string[] {
    const parts: string[] = [];
    for (;;) {
      this.skipSpaces();
      if (this.peek() === '"' || this.peek() === "'") parts.push(this.string());
      else {
        const start = this.i;
        while (BARE.test(this.peek())) this.i++;
        if (start === this.i) this.fail('expected a key');
        parts.push(this.s.slice(start, this.i));
      }
      this.skipSpaces();
      if (this.peek() !== '.') return parts;
      this.i++;
    }
  }

  string(): string {
    if (this.startsWith('"""') || this.startsWith("'''")) return this.multiline();
    const q = this.peek();
    this.i++;
    let out = '';
    for (;;) {
      const c = this.peek();
      if (c === '' || c === '\n') this.fail('unterminated string');
      this.i++;
      if (c === q) return out;
      if (c === '\\' && q === '"') out += this.escape();
      else out += c;
    }
  }

  private multiline(): string {
    const q = this.s.slice(this.i, this.i + 3);
    this.i += 3;
    if (this.peek() === '\n') this.i++;
    const end = this.s.indexOf(q, this.i);
    if (end < 0) this.fail('unterminated multi-line string');
    const raw = this.s.slice(this.i, end);
    this.i = end + 3;
    return q === "'''" ? raw : raw.replace(/\\\s*\n\s*/g, '').replace(/\\(["\\bfnrt])/g, (_, c: string) => ({ b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' })[c] ?? c);
  }

  private escape(): string {
    const c = this.peek();
    this.i++;
    const simple: Record<string, string> = { b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', '"': '"', '\\': '\\' };
    if (c in simple) return simple[c];
    if (c === 'u' || c === 'U') {
      const n = c === 'u' ? 4 : 8;
      const hex = this.s.slice(this.i, this.i + n);
      if (!/^[0-9A-Fa-f]+$/.test(hex) || hex.length !== n) this.fail('bad unicode escape');
      this.i += n;
      return String.fromCodePoint(parseInt(hex, 16));
    }
    return this.fail(`bad escape \\${c}`);
  }

  value(): TomlValue {
    this.skipSpaces();
    const c = this.peek();
    if (c === '"' || c === "'") return this.string();
    if (c === '[') return this.array();
    if (c === '{') return this.inlineTable();
    const start = this.i;
    while (!this.eof() && !/[,\]}\s#]/.test(this.peek())) this.i++;
    const word = this.s.slice(start, this.i);
    if (word === 'true') return true;
    if (word === 'false') return false;
    const num = word.replace(/_/g, '');
    if (/^[+-]?(0x[0-9a-fA-F]+|0o[0-7]+|0b[01]+)$/.test(num)) return Number(num.replace(/^\+/, ''));
    if (/^[+-]?(\d+(\.\d+)?([eE][+-]?\d+)?|inf|nan)$/.test(num)) return Number(num.replace(/inf$/, 'Infinity').replace(/nan$/, 'NaN'));
    if (/^\d{4}-\d{2}-\d{2}/.test(word) || /^\d{2}:\d{2}/.test(word)) return word;
    return this.fail(`cannot read the value ${JSON.stringify(word || c)}`);
  }

  private array(): TomlValue[] {
    this.take('[');
    const out: TomlValue[] = [];
    for (;;) {
      this.skipBlank();
      if (this.peek() === ']') break;
      out.push(this.value());
      this.skipBlank();
      if (this.peek() === ',') this.i++;
      else if (this.peek() !== ']') this.fail('expected "," or "]" in an array');
    }
    this.i++;
    return out;
  }

  private inlineTable(): TomlTable {
    this.take('{');
    const t: TomlTable = {};
    this.skipSpaces();
    if (this.peek() === '}') {
      this.i++;
      return t;
    }
    for (;;) {
      const k = this.key();
      this.take('=');
      assign(t, k, this.value(), this);
      this.skipSpaces();
      if (this.peek() === ',') this.i++;
      else if (this.peek() === '}') {
        this.i++;
        return t;
      } else this.fail('expected "," or "}" in an inline table');
    }
  }
}

function isTable(v: TomlValue | undefined): v is TomlTable {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function descend(root: TomlTable, path: string[], r: Reader): TomlTable {
  let t = root;
  for (const p of path) {
    let next = t[p];
    if (next === undefined) next = t[p] = {};
    if (Array.isArray(next)) next = next[next.length - 1];
    if (!isTable(next)) r.fail(`key ${path.join('.')} is not a table`);
    t = next;
  }
  return t;
}

function assign(t: TomlTable, key: string[], v: TomlValue, r: Reader): void {
  const parent = descend(t, key.slice(0, -1), r);
  const last = key[key.length - 1];
  if (last in parent) r.fail(`key ${key.join('.')} is defined twice`);
  parent[last] = v;
}

export function parseToml(text: string): TomlTable {
  const r = new Reader(text);
  const root: TomlTable = {};
  let current = root;
  for (;;) {
    r.skipBlank();
    if (r.eof()) return root;
    if (r.startsWith('[[')) {
      r.take('[[');
      const k = r.key();
      r.take(']]');
      const parent = descend(root, k.slice(0, -1), r);
      const last = k[k.length - 1];
      const arr = (parent[last] ??= []);
      if (!Array.isArray(arr)) return r.fail(`key ${k.join('.')} is not an array of tables`);
      current = {};
      arr.push(current);
    } else if (r.peek() === '[') {
      r.take('[');
      const k = r.key();
      r.take(']');
      current = descend(root, k, r);
    } else {
      const k = r.key();
      r.take('=');
      assign(current, k, r.value(), r);
    }
    r.endOfLine();
  }
}

/** The value at a path of keys, or undefined. */
export function lookup(t: TomlTable, ...path: string[]): TomlValue | undefined {
  let v: TomlValue | undefined = t;
  for (const p of path) {
    if (!isTable(v)) return undefined;
    v = v[p];
  }
  return v;
}
