/**
 * How Orrery's lazily decoded objects print. Their fields are getters over a frame or a record,
 * so `console.log` would show internals (`bytes`, an undecoded marker) instead of the message.
 * Node looks up `util.inspect`'s hook by a registered symbol, so no `node:util` import is
 * needed and the same code runs in browsers.
 */

/** Node's `util.inspect.custom`. */
export const INSPECT: unique symbol = Symbol.for('nodejs.util.inspect.custom') as never

/** The `inspect` Node passes to a custom inspect hook. */
export type InspectFn = (value: unknown, options: InspectOptions) => string
export interface InspectOptions {
  depth?: number | null | undefined
}

/** Prints `Name { …fields }` the way `util.inspect` prints a class instance, honouring depth. */
export function inspectAs(name: string, fields: object, depth: number, options: InspectOptions, inspect: InspectFn | undefined): string | object {
  // Older hosts (and a direct call) pass no inspect function: let the caller print the fields.
  if (typeof inspect !== 'function') return fields
  if (depth < 0) return `[${name}]`
  const inner = options.depth == null ? options.depth : options.depth - 1
  return `${name} ${inspect(fields, { ...options, depth: inner })}`
}
