/**
 * The command line, read with node:util's parseArgs (strict: an unknown option or a missing value is
 * a usage error), and the checks every command shares on its positionals.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util'

import { nameProblem } from '../check.js'
import { usageError } from './failure.js'

/** Options of a command, in parseArgs' form. */
export type OptionSpec = NonNullable<ParseArgsConfig['options']>

/** What a command line holds once read. */
export interface Parsed {
  readonly values: Readonly<Record<string, string | boolean | string[] | undefined>>
  readonly positionals: readonly string[]
}

/** The options of every command that talks to a server. */
export const CLIENT_OPTIONS = {
  url: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
} as const satisfies OptionSpec

/** `--help` and `-h`, which every command takes. */
export const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const satisfies OptionSpec

/**
 * `--ttl -5` as `--ttl=-5`: a negative number after an option that takes a value is that value,
 * so the option's own check says what it takes (parseArgs calls it ambiguous, suspecting an option).
 */
function negativeValues(argv: readonly string[], options: OptionSpec): string[] {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ''
    if (arg === '--') return [...out, ...argv.slice(i)]
    const next = argv[i + 1]
    const option = arg.startsWith('--') && !arg.includes('=') ? options[arg.slice(2)] : undefined
    if (option?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`)
      i++
    } else out.push(arg)
  }
  return out
}

/** Reads `argv` against `options`; anything parseArgs refuses is a usage error of `command`. */
export function parse(argv: readonly string[], options: OptionSpec, command: string): Parsed {
  try {
    const { values, positionals } = parseArgs({
      args: negativeValues(argv, options),
      options: { ...options, ...HELP_OPTION },
      allowPositionals: true,
      strict: true,
    })
    return { values: values as Parsed['values'], positionals }
  } catch (error) {
    // parseArgs' messages name the option; in one line, without its hint about '--'.
    const message = error instanceof Error ? error.message.replace(/\. To specify a positional argument.*$/s, '').replace(/\s*\n\s*/g, ' ') : String(error)
    throw usageError(message, command)
  }
}

/** A string option's value, or undefined. */
export function stringOf(parsed: Parsed, name: string): string | undefined {
  const value = parsed.values[name]
  return typeof value === 'string' ? value : undefined
}

/** A repeatable string option's values. */
export function stringsOf(parsed: Parsed, name: string): string[] {
  const value = parsed.values[name]
  return Array.isArray(value) ? value : typeof value === 'string' ? [value] : []
}

/** Whether a boolean option was given. */
export function flagOf(parsed: Parsed, name: string): boolean {
  return parsed.values[name] === true
}

/** Exactly the positionals `names` (then `optional` ones, which may be left out), or a usage error. */
export function positionals(parsed: Parsed, command: string, names: readonly string[], optional: readonly string[] = []): (string | undefined)[] {
  const given = parsed.positionals
  if (given.length < names.length) throw usageError(`missing <${names[given.length]}>`, command)
  if (given.length > names.length + optional.length) throw usageError(`unexpected argument ${JSON.stringify(given[names.length + optional.length])}`, command)
  return [...names, ...optional].map((_, i) => given[i])
}

/** A whole number >= `min` from the command line (a sequence number, a limit). */
export function wholeNumber(text: string, name: string, command: string, min = 0): number {
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN
  if (!Number.isSafeInteger(n) || n < min) throw usageError(`${name} must be a whole number >= ${min}, not ${JSON.stringify(text)}`, command)
  return n
}

/** A channel name as the core takes it, or a usage error saying what is wrong with it (nothing is sent). */
export function channelName(text: string, command: string): string {
  const problem = nameProblem(text)
  if (problem !== undefined) throw usageError(`the channel name ${text === '' ? '' : `${JSON.stringify(text)} `}${problem}`, command)
  return text
}

/** A JSON value from the command line (a payload, an input). */
export function jsonValue(text: string, name: string, command: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw usageError(`${name} must be JSON (quote strings: '"text"'), not ${JSON.stringify(text)}`, command)
  }
}
