/**
 * The control API's input rules, shared by every route and by the route plugins registered on the
 * same fastify instance (they inherit the instance's validator options): a body is exactly what
 * its schema says. No coercion ("true" is not true, "24" is not 24), no silently dropped fields
 * (`"interal": true` is a typo to report, not to ignore), no defaults filled in, and every refusal
 * names the field.
 */

/** ajv options for Fastify({ ajv: { customOptions } }). */
export const STRICT_AJV = { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } as const;

/** Longest text field (a name is at most 63; an address or CIDR at most 49; options and labels more). */
export const MAX_TEXT = 1024;
/** Most keys in an options, labels or aux-address map. */
export const MAX_KEYS = 256;

/** One ajv error, as fastify attaches it to a validation failure (error.validation). */
export interface SchemaError {
  readonly keyword: string;
  readonly instancePath: string;
  readonly params: Record<string, unknown>;
  readonly message?: string;
}

/** "/ports/0/hostPort" -> "ports[0].hostPort"; the root is "the request body". */
function fieldOf(path: string, context: string): string {
  if (path === '') return context === 'body' ? 'the request body' : `the ${context}`;
  return path
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

/** The known name closest to `name` (case or one or two typos off), for "did you mean". */
export function nearest(name: string, known: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  const exact = known.find((k) => k.toLowerCase() === lower);
  if (exact) return exact;
  let best: string | undefined;
  let bestD = 3;
  for (const k of known) {
    const d = distance(lower, k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best;
}

function distance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * A message naming the field and what is wrong with it, from the first schema error. `schema` is
 * the route's schema for that part (body, params), so an unknown field can suggest a known one.
 */
export function validationMessage(errors: readonly SchemaError[], context: string, schema?: unknown): string {
  const e = errors[0];
  if (!e) return `${context} is not valid`;
  const field = fieldOf(e.instancePath, context);
  const where = e.instancePath === '' ? field : `field "${field}"`;
  const p = e.params;
  switch (e.keyword) {
    case 'additionalProperties': {
      const extra = String(p.additionalProperty);
      const known = Object.keys(propertiesAt(schema, e.instancePath) ?? {});
      const hint = nearest(extra, known);
      const full = e.instancePath === '' ? extra : `${field}.${extra}`;
      return `unknown field "${full}" in ${e.instancePath === '' ? field : `"${field}"`}${hint ? ` (did you mean "${hint}"?)` : known.length ? ` (known fields: ${known.join(', ')})` : ''}`;
    }
    case 'required':
      return `field "${e.instancePath === '' ? '' : `${field}.`}${String(p.missingProperty)}" is required`;
    case 'type':
      return `${where} must be ${String(p.type).replace(',', ' or ')}`;
    case 'maxLength':
      return `${where} is longer than ${String(p.limit)} characters`;
    case 'minLength':
      return `${where} must not be empty`;
    case 'maxItems':
      return `${where} has more than ${String(p.limit)} items`;
    case 'maxProperties':
      return `${where} has more than ${String(p.limit)} keys`;
    case 'minimum':
    case 'maximum':
      return `${where} must be ${e.keyword === 'minimum' ? '>=' : '<='} ${String(p.limit)}`;
    case 'enum':
      return `${where} must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'pattern':
      return `${where} is not of the expected form`;
    case 'propertyNames':
      return `${where} has a key that is ${e.message ?? 'not allowed'}`;
    default:
      return `${where} ${e.message ?? 'is not valid'}`;
  }
}

/** The `properties` of the object schema at a JSON pointer into the instance. */
function propertiesAt(schema: unknown, path: string): Record<string, unknown> | undefined {
  let s = schema as { properties?: Record<string, unknown>; items?: unknown } | undefined;
  for (const part of path.split('/').slice(1)) {
    if (!s) return undefined;
    s = (/^\d+$/.test(part) ? s.items : s.properties?.[part]) as typeof s;
  }
  return s?.properties;
}
