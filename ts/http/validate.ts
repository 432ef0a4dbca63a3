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

/** The description of the schema at `path` (`#/properties/name`) within `root`, if it has one. */
function descriptionAt(root: unknown, path: string): string | undefined {
  let node = root
  const keys = path.replace(/^#\/?/, '').split('/')
  for (const key of keys.filter((k) => k !== '')) {
    node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[key] : undefined
  }
  const description = node !== null && typeof node === 'object' ? (node as { description?: unknown }).description : undefined
  return typeof description === 'string' ? description : undefined
}

export const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const check = Compile(schema)
  const properties = ((schema as { properties?: unknown }).properties ?? {}) as Record<string, { type?: unknown }>
  return (value: unknown) => {
    const given = httpPart === 'body' ? value : numbersIn(value, properties)
    if (check.Check(given)) return { value: given }
    // A `not` fails as 'must not be valid': the field's description says what it takes instead.
    const errors = [...check.Errors(given)].map((e) => {
      const description = e.keyword === 'not' ? descriptionAt(schema, e.schemaPath) : undefined
      return description === undefined ? e : { ...e, message: `does not have this field's form: ${description}` }
    })
    return { error: errors as unknown as FastifySchemaValidationError[] }
  }
}
