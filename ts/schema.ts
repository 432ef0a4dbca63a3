/**
 * Payload validation with any Standard Schema validator (zod, valibot, TypeBox with its
 * adapter, ArkType…): the interface below is the published Standard Schema v1 contract, so no
 * validator library is a dependency of Orrery.
 */
import { refuse, type Where } from './check.js'
import { OrreryError } from './errors.js'

/** The Standard Schema v1 interface (types only). */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': {
    readonly version: 1
    readonly vendor: string
    readonly validate: (value: unknown) => StandardResult<Output> | Promise<StandardResult<Output>>
    readonly types?: { readonly input: Input; readonly output: Output } | undefined
  }
}

export type StandardResult<Output> = { readonly value: Output; readonly issues?: undefined } | { readonly issues: ReadonlyArray<StandardIssue> }

export interface StandardIssue {
  readonly message: string
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined
}

/** The output type of a schema. */
export type InferOutput<S> = S extends StandardSchemaV1<unknown, infer O> ? O : unknown

function pathOf(issue: StandardIssue): string {
  return (issue.path ?? []).map((p) => String(typeof p === 'object' && p !== null ? p.key : p)).join('.')
}

function invalid(issues: ReadonlyArray<StandardIssue>, where: string, schemaId: string | undefined): OrreryError {
  const first = issues[0]
  const field = first ? pathOf(first) : ''
  const named = field ? `field ${field}` : 'the payload'
  return new OrreryError('SCHEMA_INVALID', `${where}: ${named} ${first?.message ?? 'is invalid'}${schemaId ? ` (schema ${schemaId})` : ''}`, {
    details: { field, schema: schemaId, issues: issues.map((i) => ({ path: pathOf(i), message: i.message })) },
  })
}

/** Validates `value`; resolves to the schema's output or rejects with `SCHEMA_INVALID` naming the field. */
export function validate<S extends StandardSchemaV1>(schema: S, value: unknown, where: string, schemaId?: string): InferOutput<S> | Promise<InferOutput<S>> {
  const result = schema['~standard'].validate(value)
  const settle = (r: StandardResult<unknown>): InferOutput<S> => {
    if (r.issues) throw invalid(r.issues, where, schemaId)
    return r.value as InferOutput<S>
  }
  return result instanceof Promise ? result.then(settle) : settle(result)
}

/** @internal A Standard Schema (v1): an object whose `~standard.validate` is a function. */
export function checkSchema<S>(value: S, name = 'schema', where: Where = 'option'): S {
  const standard =
    value !== null && (typeof value === 'object' || typeof value === 'function') ? (value as { '~standard'?: { validate?: unknown } })['~standard'] : undefined
  if (typeof standard?.validate !== 'function') refuse(where, name, value, 'must be a Standard Schema (an object with ~standard.validate)')
  return value
}
