/**
 * The CLI's client of the HTTP API (docs/cli.md): JSON requests with a bearer token, the API's error
 * shape turned into a {@link CliFailure} carrying its code, and server-sent events read as a stream.
 */
import { isOrreryError } from '../errors.js'
import { readServerEvents, type ServerEvent } from '../control/server-events.js'
import { type Parsed, stringOf } from './args.js'
import { CliFailure, EXIT, unreachable, usageError } from './failure.js'

/** Where `orrery serve` listens unless told otherwise, and where clients look by default. */
export const DEFAULT_PORT = 7070
export const DEFAULT_URL = `http://127.0.0.1:${DEFAULT_PORT}`

/** Query parameters; undefined ones are left out. */
export type Query = Record<string, string | number | undefined>

export class ApiClient {
  readonly url: string

  constructor(
    url: string,
    private readonly token: string | undefined,
    /** How long a request may take before the server counts as unreachable (streams excepted). */
    private readonly timeoutMs = 10_000,
  ) {
    this.url = url.replace(/\/+$/, '')
  }

  get<T>(path: string, query: Query = {}): Promise<T> {
    return this.send<T>('GET', path, query, undefined)
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.send<T>('POST', path, {}, body)
  }

  /**
   * Reads the server-sent events at `path` and hands each to `onEvent` until the stream ends,
   * `signal` aborts it (resolves), or `onEvent` returns false (resolves). A server that sends no
   * headers within the timeout is unreachable, as for any request; once they came, the stream may
   * stay quiet as long as it likes (the API sends a comment every 15 s).
   */
  async events(path: string, query: Query, onEvent: (event: ServerEvent) => boolean | undefined, signal?: AbortSignal): Promise<void> {
    const stop = new AbortController()
    signal?.addEventListener('abort', () => stop.abort(), { once: true })
    const noHeaders = setTimeout(() => stop.abort(new DOMException(`no headers within ${this.timeoutMs} ms`, 'TimeoutError')), this.timeoutMs)
    let response: Response
    try {
      response = await this.fetch(path, query, { method: 'GET', headers: this.headers({ accept: 'text/event-stream' }), signal: stop.signal })
    } catch (error) {
      if (signal?.aborted) return
      throw error
    } finally {
      clearTimeout(noHeaders)
    }
    try {
      if (!response.ok) throw await this.refusal(response)
      if (response.body !== null) await readServerEvents(response.body, onEvent)
    } catch (error) {
      if (error instanceof CliFailure) throw error
      // The server answered, but with an event past what this reader holds: not an outage.
      if (isOrreryError(error, 'MESSAGE_TOO_LARGE')) throw new CliFailure(EXIT.api, error.message, error.code, error.details)
      if (!stop.signal.aborted) throw unreachable(this.url, `the stream broke (${describe(error)})`)
    } finally {
      stop.abort()
    }
  }

  private async send<T>(method: string, path: string, query: Query, body: unknown): Promise<T> {
    const init: RequestInit = {
      method,
      headers: this.headers(body === undefined ? {} : { 'content-type': 'application/json' }),
      signal: AbortSignal.timeout(this.timeoutMs),
    }
    if (body !== undefined) init.body = JSON.stringify(body)
    const response = await this.fetch(path, query, init)
    const text = await response.text().catch((error: unknown) => {
      throw unreachable(this.url, `the answer broke off (${describe(error)})`)
    })
    if (!response.ok) throw this.refusalOf(response, text)
    return (text === '' ? undefined : JSON.parse(text)) as T
  }

  private headers(extra: Record<string, string>): Record<string, string> {
    return this.token === undefined ? extra : { ...extra, authorization: `Bearer ${this.token}` }
  }

  private async fetch(path: string, query: Query, init: RequestInit): Promise<Response> {
    let target: URL
    try {
      target = new URL(`${this.url}${path}`)
    } catch {
      throw usageError(`--url must be a URL like ${DEFAULT_URL}, not ${JSON.stringify(this.url)}`)
    }
    for (const [key, value] of Object.entries(query)) if (value !== undefined) target.searchParams.set(key, String(value))
    try {
      return await fetch(target, init)
    } catch (error) {
      if (error instanceof Error && error.name === 'TimeoutError') throw unreachable(this.url, `no answer within ${this.timeoutMs / 1000} s`)
      throw unreachable(this.url, describe(error))
    }
  }

  private async refusal(response: Response): Promise<CliFailure> {
    return this.refusalOf(response, await response.text().catch(() => ''))
  }

  /** The API's `{ error: { code, message, details? } }`, or the bare status from anything else. */
  private refusalOf(response: Response, text: string): CliFailure {
    try {
      const { error } = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: Record<string, unknown> } }
      if (typeof error?.code === 'string' && typeof error.message === 'string') return new CliFailure(EXIT.api, error.message, error.code, error.details)
    } catch {
      // Not the API's shape: reported by status below.
    }
    return new CliFailure(EXIT.api, `${response.status} ${response.statusText} from ${response.url} (is this an Orrery API?)`, `HTTP_${response.status}`)
  }
}

/** A path segment: channel names, ids and keys may hold any character. */
export function segment(value: string | number): string {
  return encodeURIComponent(String(value))
}

/** The client a command line asks for: --url and --token, else ORRERY_URL and ORRERY_TOKEN. */
export function clientOf(parsed: Parsed, env: Record<string, string | undefined> = process.env): ApiClient {
  const url = stringOf(parsed, 'url') ?? env['ORRERY_URL'] ?? DEFAULT_URL
  const token = stringOf(parsed, 'token') ?? env['ORRERY_TOKEN']
  return new ApiClient(url, token === '' ? undefined : token)
}

/** An error's message, with its cause's code where fetch hides it (`fetch failed` -> ECONNREFUSED). */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const cause = error.cause as { code?: unknown; message?: unknown } | undefined
  if (typeof cause?.code === 'string') return `${cause.code}${typeof cause.message === 'string' ? ` (${cause.message})` : ''}`
  if (typeof cause?.message === 'string') return `${error.message}: ${cause.message}`
  return error.message
}
