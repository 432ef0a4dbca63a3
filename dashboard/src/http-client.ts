/**
 * The Control of a running Orrery over its HTTP API (`serveHttp`, `orrery serve`): each method one
 * request under `/v1`, the live feeds as server-sent events, every refusal the API's
 * `{ error: { code, message } }` thrown as a ControlError.
 */
import { readServerEvents } from '../../ts/control/server-events.js'
import { type ControlClient, ControlError, type Unsubscribe } from './client.js'
import { wholeRun } from './run-pages.js'
import type {
  AgentView,
  ChannelView,
  ControlEvent,
  ControlSnapshot,
  DeadLetterView,
  DefinitionView,
  EntryView,
  GroupView,
  MessageView,
  NamespaceView,
  Overview,
  RunDetail,
  RunView,
} from './views.js'

type Query = Record<string, string | number | undefined>

/** `baseUrl`: where the API is ('' for the page's own origin); `token`: a bearer token (none on an open loopback server). */
export function httpClient(baseUrl: string, token?: string): ControlClient {
  const base = baseUrl.replace(/\/$/, '')
  const headers = (json: boolean): Record<string, string> => ({
    ...(token ? { authorization: `Bearer ${token}` } : {}),
    ...(json ? { 'content-type': 'application/json' } : {}),
  })
  const url = (path: string, query?: Query) => {
    const q = Object.entries(query ?? {}).filter((e): e is [string, string | number] => e[1] !== undefined)
    return `${base}${path}${q.length ? `?${new URLSearchParams(q.map(([k, v]) => [k, String(v)]))}` : ''}`
  }
  const request = async <T>(method: string, path: string, options: { query?: Query; body?: unknown } = {}): Promise<T> => {
    const init: RequestInit = { method, headers: headers(options.body !== undefined) }
    if (options.body !== undefined) init.body = JSON.stringify(options.body)
    const response = await fetch(url(path, options.query), init)
    const text = await response.text()
    const value: unknown = text ? JSON.parse(text) : undefined
    if (!response.ok) {
      const error = (value as { error?: { code?: string; message?: string } } | undefined)?.error
      throw new ControlError(error?.code ?? 'TRANSPORT_ERROR', error?.message ?? `${method} ${path}: HTTP ${response.status}`, response.status)
    }
    return value as T
  }
  const get = <T>(path: string, query?: Query) => request<T>('GET', path, query ? { query } : {})
  const post = async (path: string, body?: unknown) => {
    await request('POST', path, body === undefined ? {} : { body })
  }
  const enc = encodeURIComponent

  const stream = <T>(path: string, query: Query, onValue: (value: T) => void, onError?: (e: unknown) => void): Unsubscribe => {
    const abort = new AbortController()
    void (async () => {
      const response = await fetch(url(path, query), { headers: { ...headers(false), accept: 'text/event-stream' }, signal: abort.signal })
      if (!response.ok) throw new ControlError('TRANSPORT_ERROR', `${path}: HTTP ${response.status}`, response.status)
      // Aborting the fetch ends the body's reads too.
      if (response.body !== null) await readServerEvents(response.body, (e) => onValue(JSON.parse(e.data) as T))
    })().catch((e: unknown) => {
      if (!abort.signal.aborted) onError?.(e)
    })
    return () => abort.abort()
  }

  return {
    source: base || location.origin,
    readOnly: false,
    overview: () => get<Overview>('/v1/overview'),
    agents: () => get<AgentView[]>('/v1/agents'),
    pauseAgent: (id) => post(`/v1/agents/${enc(id)}/pause`),
    resumeAgent: (id) => post(`/v1/agents/${enc(id)}/resume`),
    stopAgent: (id) => post(`/v1/agents/${enc(id)}/stop`),
    channels: () => get<ChannelView[]>('/v1/channels'),
    messages: (channel, o = {}) => get<MessageView[]>(`/v1/channels/${enc(channel)}/messages`, { from: o.from, limit: o.limit }),
    publish: (channel, payload) => post(`/v1/channels/${enc(channel)}/messages`, { payload }),
    groups: () => get<GroupView[]>('/v1/groups'),
    deadLetters: (channel, o = {}) => get<DeadLetterView[]>(`/v1/channels/${enc(channel)}/dead-letters`, { limit: o.limit }),
    replayDeadLetter: (channel, seq) => post(`/v1/channels/${enc(channel)}/dead-letters/${seq}/replay`),
    discardDeadLetter: (channel, seq) => post(`/v1/channels/${enc(channel)}/dead-letters/${seq}/discard`),
    namespaces: () => get<NamespaceView[]>('/v1/namespaces'),
    entries: (ns, o = {}) => get<EntryView[]>(`/v1/namespaces/${enc(ns)}/entries`, { prefix: o.prefix, limit: o.limit }),
    definitions: () => get<DefinitionView[]>('/v1/workflows'),
    runs: (f = {}) => get<RunView[]>('/v1/runs', { status: f.status, definition: f.definition, limit: f.limit }),
    run: (id) => wholeRun((from, limit) => get<RunDetail>(`/v1/runs/${enc(id)}`, { historyFrom: from, historyLimit: limit })),
    startRun: (definition, input, o = {}) => request<RunView>('POST', '/v1/runs', { body: { definition, input, ...(o.id ? { id: o.id } : {}) } }),
    signalRun: (id, name, payload) => post(`/v1/runs/${enc(id)}/signal`, { name, payload }),
    cancelRun: (id) => post(`/v1/runs/${enc(id)}/cancel`),
    events: (onEvent, onError) => stream<ControlEvent>('/v1/events', {}, onEvent, onError),
    tail: (channel, onMessage, o = {}) => stream<MessageView>(`/v1/channels/${enc(channel)}/tail`, { from: o.from }, onMessage),
    snapshot: () => get<ControlSnapshot>('/v1/snapshot'),
    close: () => {},
  }
}
