/**
 * Request checks against the routes' TypeBox schemas: a body strictly (no coercion: `"5"` is no
 * integer; unknown fields refused), a path or query string with only what text must become,
 * a field the schema types as integer written in plain decimal digits (`limit=true` or
 * `limit=1e3` stays text, and fails).
 */
import type { FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify'
import type { TSchema } from 'typebox'
import { Compile } from 'typebox/compile'

const DIGITS = /^(0|[1-9][0-9]{0,15})$/

/** String fields of a path or query that the schema types as integers, made numbers. */
function numbersIn(value: unknown, properties: Readonly<Record<string, { type?: unknown }>>): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value
  const out: Record<string, unknown> = {}
  for (const [key, item] of Object.entries(value)) {
    out[key] = properties[key]?.type === 'integer' && typeof item === 'string' && DIGITS.test(item) ? Number(item) : item
  }
  return out
}

export const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const check = Compile(schema)
  const properties = ((schema as { properties?: unknown }).properties ?? {}) as Record<string, { type?: unknown }>
  return (value: unknown) => {
    const given = httpPart === 'body' ? value : numbersIn(value, properties)
    if (check.Check(given)) return { value: given }
    return { error: check.Errors(given) as unknown as FastifySchemaValidationError[] }
  }
}
