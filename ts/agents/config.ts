/**
 * Agent configuration: gathered from a JSON file, an object and environment variables (later
 * sources win, key by key), then validated with the agent's Standard Schema. An invalid
 * configuration is refused with every reason, and whatever was in force stays.
 */
import { OrreryError } from '../errors.js'
import type { StandardSchemaV1 } from '../schema.js'

/** Where an agent's configuration comes from. */
export interface ConfigSources {
  /** A JSON file (Node only), read first. */
  file?: string
  /** Values, over the file's. */
  values?: Record<string, unknown>
  /**
   * Environment variables starting with this prefix, over both: `PREFIX_MAX_TOKENS` sets
   * `maxTokens`. Values are parsed as JSON when they parse, else kept as strings.
   */
  env?: string
}

type FileReader = (path: string) => Promise<string>
let readFile: FileReader | undefined

/** @internal Called by the Node entry: how config files are read. */
export function useFileReader(reader: FileReader): void {
  readFile = reader
}

function camel(name: string): string {
  return name.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())
}

function fromEnv(prefix: string): Record<string, unknown> {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {}
  const out: Record<string, unknown> = {}
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(prefix) || raw === undefined || name.length === prefix.length) continue
    let value: unknown = raw
    try {
      value = JSON.parse(raw)
    } catch {
      // Not JSON: the string itself.
    }
    out[camel(name.slice(prefix.length))] = value
  }
  return out
}

/** Reads every source and merges them (file, then values, then environment). */
export async function gatherConfig(sources: ConfigSources): Promise<Record<string, unknown>> {
  let fromFile: Record<string, unknown> = {}
  if (sources.file !== undefined) {
    if (!readFile) throw new OrreryError('UNSUPPORTED', 'config files are read in Node only; pass values instead', { details: { file: sources.file } })
    let text: string
    try {
      text = await readFile(sources.file)
    } catch (cause) {
      throw new OrreryError('INVALID_CONFIG', `cannot read config file ${sources.file}: ${(cause as Error).message}`, {
        cause,
        details: { file: sources.file },
      })
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch (cause) {
      throw new OrreryError('INVALID_CONFIG', `config file ${sources.file} is not JSON: ${(cause as Error).message}`, {
        cause,
        details: { file: sources.file },
      })
    }
    // Spread, a number or an array would turn silently into `{}` or index keys.
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new OrreryError('INVALID_CONFIG', `config file ${sources.file} must hold a JSON object`, { details: { file: sources.file } })
    }
    fromFile = parsed as Record<string, unknown>
  }
  return { ...fromFile, ...sources.values, ...(sources.env === undefined ? {} : fromEnv(sources.env)) }
}

/** Validates a configuration: its schema's output, or `INVALID_CONFIG` listing every issue. */
export async function checkConfig<C>(schema: StandardSchemaV1<unknown, C> | undefined, value: unknown, agent: string): Promise<C> {
  if (!schema) return value as C
  const result = await schema['~standard'].validate(value)
  if (!result.issues) return result.value
  const issues = result.issues.map((i) => ({
    path: (i.path ?? []).map((p) => String(typeof p === 'object' && p !== null ? p.key : p)).join('.'),
    message: i.message,
  }))
  const summary = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ')
  throw new OrreryError('INVALID_CONFIG', `invalid configuration for ${agent}: ${summary}`, { details: { agent, issues } })
}
