// A tiny declarative schema for config.json: each key has a type, a default and an optional check.
// Validation walks the JSON once and reports the first bad key by its dotted path ("cacheConfig.cacheDir").

export class ConfigError extends Error {
  readonly code = 'OBD_CONFIG';
  constructor(
    message: string,
    readonly key?: string,
    readonly value?: unknown,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}


export type Field =
  | { type: 'string'; default: string; check?: (v: string) => string | undefined }
  | { type: 'boolean'; default: boolean }
  | { type: 'integer'; default: number; min?: number; max?: number }
  | { type: 'number'; default: number; min?: number; max?: number }
  | { type: 'stringArray'; default: string[]; check?: (v: string) => string | undefined }
  | { type: 'object'; fields: Schema; nullable?: boolean }
  | { type: 'objectArray'; default: unknown[] | null; fields: Schema };

export type Schema = Record<string, Field>;

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? s.slice(0, 77) + '...' : s;
}

function bad(key: string, value: unknown, why: string): ConfigError {
  return new ConfigError(`config key "${key}": ${why} (got ${show(value)})`, key, value);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkNumber(key: string, v: unknown, f: { min?: number; max?: number }, integer: boolean): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(key, v, integer ? 'must be an integer' : 'must be a number');
  if (integer && !Number.isInteger(v)) throw bad(key, v, 'must be an integer');
  if (f.min !== undefined && v < f.min) throw bad(key, v, `must be >= ${f.min}`);
  if (f.max !== undefined && v > f.max) throw bad(key, v, `must be <= ${f.max}`);
  return v;
}

function validateField(key: string, f: Field, v: unknown): unknown {
  switch (f.type) {
    case 'string': {
      if (typeof v !== 'string') throw bad(key, v, 'must be a string');
      const why = f.check?.(v);
      if (why) throw bad(key, v, why);
      return v;
    }
    case 'boolean':
      if (typeof v !== 'boolean') throw bad(key, v, 'must be true or false');
      return v;
    case 'integer':
      return checkNumber(key, v, f, true);
    case 'number':
      return checkNumber(key, v, f, false);
    case 'stringArray': {
      if (v === null) return [...f.default];
      if (!Array.isArray(v)) throw bad(key, v, 'must be an array of strings');
      return v.map((item, i) => {
        if (typeof item !== 'string') throw bad(`${key}[${i}]`, item, 'must be a string');
        const why = f.check?.(item);
        if (why) throw bad(`${key}[${i}]`, item, why);
        return item;
      });
    }
    case 'object':
      if (v === null && f.nullable) return applySchema(f.fields, {}, key + '.');
      if (!isPlainObject(v)) throw bad(key, v, 'must be an object');
      return applySchema(f.fields, v, key + '.');
    case 'objectArray':
      if (v === null) return null;
      if (!Array.isArray(v)) throw bad(key, v, 'must be an array of objects');
      return v.map((item, i) => {
        if (!isPlainObject(item)) throw bad(`${key}[${i}]`, item, 'must be an object');
        return applySchema(f.fields, item, `${key}[${i}].`);
      });
  }
}

function defaultOf(f: Field): unknown {
  switch (f.type) {
    case 'object':
      return applySchema(f.fields, {}, '');
    case 'stringArray':
      return [...f.default];
    case 'objectArray':
      return f.default === null ? null : [...f.default];
    default:
      return f.default;
  }
}

/** Missing keys take their defaults (as ACI decodes JSON over its defaults); unknown keys are errors. */
export function applySchema(schema: Schema, input: Record<string, unknown>, prefix: string): Record<string, unknown> {
  for (const k of Object.keys(input)) {
    if (!Object.prototype.hasOwnProperty.call(schema, k)) {
      throw bad(prefix + k, input[k], `unknown key; known keys: ${Object.keys(schema).join(', ')}`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(schema)) {
    out[k] = input[k] === undefined ? defaultOf(f) : validateField(prefix + k, f, input[k]);
  }
  return out;
}
