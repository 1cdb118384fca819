// containerd's filter syntax (filters/parser.go grammar), as containerd sends it in List/Walk:
//
//   filter    := selectors ("|" selectors)*        ("|" between complete selectors: obd extension, OR)
//   selectors := selector ("," selector)*          (AND)
//   selector  := fieldpath (operator value)?       (no operator: the field is present)
//   fieldpath := field ("." field)*
//   field     := quoted | [A-Za-z0-9_]+
//   operator  := "==" | "!=" | "~="
//   value     := quoted | [^\s,]+
//   quoted    := "..." (Go escapes) | /.../ or |...| (only after ~=, for regular expressions)
//
// Several filter strings are ORed, as containerd's ParseAll. A parse error is InvalidArgument.
import { invalidArgument } from './errors';

/** Answers (value, present) for a field path of the object under test. */
export type FieldLookup = (fieldpath: string[]) => [string, boolean];

type Op = 'present' | '==' | '!=' | '~=';

interface Selector {
  fieldpath: string[];
  op: Op;
  value: string;
  re?: RegExp;
}

export type Filter = (lookup: FieldLookup) => boolean;

class Scanner {
  pos = 0;
  constructor(readonly input: string) {}

  error(msg: string, at = this.pos): never {
    throw invalidArgument(`filters: parse error: [${this.input}] at offset ${at}: ${msg}`);
  }
  skipSpace(): void {
    while (this.pos < this.input.length && /\s/.test(this.input[this.pos])) this.pos++;
  }
  peek(): string {
    this.skipSpace();
    return this.input[this.pos] ?? '';
  }
  eof(): boolean {
    return this.peek() === '';
  }

  field(): string {
    const c = this.peek();
    if (c === '"') return this.quoted('"');
    const m = /^[A-Za-z0-9_]+/.exec(this.input.slice(this.pos));
    if (!m) this.error(c ? `expected field or quoted, got ${JSON.stringify(c)}` : 'expected field or quoted');
    this.pos += m[0].length;
    return m[0];
  }

  operator(): Op {
    const start = this.pos;
    const m = /^[=!~]+/.exec(this.input.slice(this.pos));
    if (!m) this.error('expected an operator ("=="|"!="|"~=")');
    this.pos += m[0].length;
    if (m[0] === '==' || m[0] === '!=' || m[0] === '~=') return m[0];
    return this.error(`unsupported operator ${JSON.stringify(m[0])}`, start);
  }

  value(op: Op): string {
    const c = this.peek();
    if (c === '"' || (op === '~=' && (c === '/' || c === '|'))) return this.quoted(c);
    const m = /^[^\s,|]+/.exec(this.input.slice(this.pos));
    if (!m) this.error('expected value or quoted');
    this.pos += m[0].length;
    return m[0];
  }

  /** A Go-syntax quoted string (the alternative quotes / and | take no escapes but \\ and the quote). */
  quoted(q: string): string {
    const start = this.pos;
    this.pos++; // opening quote
    let out = '';
    for (;;) {
      const c = this.input[this.pos++];
      if (c === undefined || c === '\n') this.error('quoted literal not terminated', start);
      if (c === q) return out;
      if (c !== '\\') {
        out += c;
        continue;
      }
      out += this.escape(q, start);
    }
  }

  private escape(q: string, start: number): string {
    const c = this.input[this.pos++];
    const simple: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };
    if (c === q) return q;
    if (c in simple) return simple[c];
    const hex = (n: number): string => {
      const digits = this.input.slice(this.pos, this.pos + n);
      if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(digits)) this.error('invalid escape in quoted literal', start);
      this.pos += n;
      return String.fromCodePoint(parseInt(digits, 16));
    };
    if (c === 'x') return hex(2);
    if (c === 'u') return hex(4);
    if (c === 'U') return hex(8);
    if (c !== undefined && c >= '0' && c <= '7') {
      const digits = this.input.slice(this.pos - 1, this.pos + 2);
      if (!/^[0-7]{3}$/.test(digits)) this.error('invalid octal escape in quoted literal', start);
      this.pos += 2;
      return String.fromCharCode(parseInt(digits, 8));
    }
    return this.error('invalid escape in quoted literal', start);
  }
}

function parseSelector(s: Scanner): Selector {
  const fieldpath = [s.field()];
  while (s.peek() === '.') {
    s.pos++;
    fieldpath.push(s.field());
  }
  const next = s.peek();
  if (next === '' || next === ',' || next === '|') return { fieldpath, op: 'present', value: '' };
  const op = s.operator();
  const value = s.value(op);
  if (op !== '~=') return { fieldpath, op, value };
  try {
    return { fieldpath, op, value, re: new RegExp(value) };
  } catch (err) {
    return s.error(`invalid regular expression ${JSON.stringify(value)}: ${(err as Error).message}`);
  }
}

function matchSelector(sel: Selector, lookup: FieldLookup): boolean {
  const [value, present] = lookup(sel.fieldpath);
  switch (sel.op) {
    case 'present':
      return present;
    case '==':
      return present && value === sel.value;
    case '!=':
      return value !== sel.value;
    case '~=':
      return sel.re!.test(value);
  }
}

/** Parses one filter string into groups of ANDed selectors that are ORed together. */
function parseOne(input: string): Selector[][] {
  if (input === '') return [];
  const s = new Scanner(input);
  const groups: Selector[][] = [[parseSelector(s)]];
  while (!s.eof()) {
    const c = s.peek();
    if (c === ',') {
      s.pos++;
      groups[groups.length - 1].push(parseSelector(s));
    } else if (c === '|') {
      s.pos++;
      groups.push([parseSelector(s)]);
    } else {
      s.error(`unexpected input: ${JSON.stringify(c)}`);
    }
  }
  return groups;
}

/** No filters, or an empty one among them, match everything (as containerd's ParseAll). */
export function parseFilters(filters: readonly string[]): Filter {
  const groups = filters.flatMap(parseOne);
  if (groups.length === 0 || filters.includes('')) return () => true;
  return (lookup) => groups.some((and) => and.every((sel) => matchSelector(sel, lookup)));
}
