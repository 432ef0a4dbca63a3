/**
 * How the NATS driver reaches its servers, chosen by their URL scheme: `nats://` and `tls://` over
 * TCP with `@nats-io/transport-node` (Node only), `ws://` and `wss://` over WebSocket with
 * `@nats-io/nats-core`'s `wsconnect` (browsers, and Node with a global `WebSocket`). Each is loaded
 * with `import()` only when a transport of its scheme connects: a browser bundle never pulls in the
 * Node client or the socket watch, and the WebSocket client's specifiers are plain strings so
 * bundlers follow them (Vite turns a missing optional peer dependency into a module that throws,
 * which becomes TRANSPORT_UNAVAILABLE here).
 *
 * nats.js keeps its transport factory in one module-wide slot that every connect sets and every
 * reconnect reads: a TCP connection and a WebSocket connection open in the same process would
 * reconnect through whichever was set last. So a process holds connections of one kind at a time,
 * and a transport of the other kind is refused (UNSUPPORTED) until the last of them has closed.
 */
import type { ConnectionOptions, NatsConnection } from '@nats-io/nats-core'

import { OrreryError } from '../errors.js'
import type { SocketWatch } from './socket-watch.js'

/** Which of nats.js's clients a list of servers needs: TCP (`nats://`, `tls://`) or WebSocket (`ws://`, `wss://`). */
export type NatsWire = 'tcp' | 'websocket'

/** The wire of checked servers (config.ts refuses a list that mixes them). */
export function wireOf(servers: readonly string[]): NatsWire {
  return servers.length > 0 && servers.every((s) => /^wss?:\/\//.test(s)) ? 'websocket' : 'tcp'
}

/** The parts of nats.js the driver uses. */
export interface NatsModules {
  readonly wire: NatsWire
  /** The client: its connect for this wire, and the error classes and headers nats-core defines. */
  readonly transport: {
    connect(options: ConnectionOptions): Promise<NatsConnection>
    readonly errors: typeof import('@nats-io/nats-core').errors
    readonly headers: typeof import('@nats-io/nats-core').headers
    readonly createInbox: typeof import('@nats-io/nats-core').createInbox
    readonly nkeyAuthenticator: typeof import('@nats-io/nats-core').nkeyAuthenticator
    readonly jwtAuthenticator: typeof import('@nats-io/nats-core').jwtAuthenticator
  }
  readonly jetstream: typeof import('@nats-io/jetstream')
  /** Watches the sockets one connect attempt opens (TCP in Node; nothing to watch over WebSocket). */
  watch(): Promise<SocketWatch>
}

const unwatched: SocketWatch = { run: (f) => f(), closeAll: () => {}, end: () => {} }

/** Connections open (or being opened) in this process, by wire: see the module's comment. */
const open: Record<NatsWire, number> = { tcp: 0, websocket: 0 }

const SCHEMES: Record<NatsWire, string> = { tcp: 'nats:// or tls://', websocket: 'ws:// or wss://' }

/**
 * `connect` counted for its wire while it is open: from the attempt until the connection closes
 * (or the attempt fails). A connection of the other wire open in this process refuses it.
 */
function counted(wire: NatsWire, transport: string, connect: (options: ConnectionOptions) => Promise<NatsConnection>) {
  return async (options: ConnectionOptions): Promise<NatsConnection> => {
    const other: NatsWire = wire === 'tcp' ? 'websocket' : 'tcp'
    if (open[other] > 0)
      throw new OrreryError(
        'UNSUPPORTED',
        `nats transport ${transport} connects over ${SCHEMES[wire]} while this process has NATS connections over ${SCHEMES[other]} open: nats.js reconnects every connection of a process through one client kind, so a process uses one kind at a time (close the others first, or give every nats transport the same scheme)`,
        { details: { transport, kind: 'nats', wire, open: other } },
      )
    open[wire]++
    let released = false
    const release = () => {
      if (!released) open[wire]--
      released = true
    }
    try {
      const nc = await connect(options)
      void nc.closed().then(release, release)
      return nc
    } catch (error) {
      release()
      throw error
    }
  }
}

function missing(transport: string, install: string, cause: unknown): OrreryError {
  return new OrreryError('TRANSPORT_UNAVAILABLE', `nats transport ${transport} needs nats.js: npm i ${install}`, { cause, details: { transport } })
}

/** The TCP client (Node only): specifiers bundlers do not follow, so a browser bundle never holds them. */
async function loadTcp(transport: string): Promise<NatsModules> {
  const names = ['@nats-io/transport-node', '@nats-io/jetstream']
  let node: typeof import('@nats-io/transport-node')
  let jetstream: typeof import('@nats-io/jetstream')
  try {
    ;[node, jetstream] = await Promise.all(names.map((n) => import(/* @vite-ignore */ n)))
  } catch (cause) {
    throw missing(transport, names.join(' '), cause)
  }
  return {
    wire: 'tcp',
    transport: {
      connect: counted('tcp', transport, (o) => node.connect(o)),
      errors: node.errors,
      headers: node.headers,
      createInbox: node.createInbox,
      nkeyAuthenticator: node.nkeyAuthenticator,
      jwtAuthenticator: node.jwtAuthenticator,
    },
    jetstream,
    watch: async () => (await import('./socket-watch.js')).watchSockets(),
  }
}

/** The WebSocket client: plain specifiers, so that a browser bundle carries them. */
async function loadWebSocket(transport: string): Promise<NatsModules> {
  if (typeof (globalThis as { WebSocket?: unknown }).WebSocket !== 'function')
    throw new OrreryError(
      'UNSUPPORTED',
      `nats transport ${transport} connects over WebSocket, and this runtime has no global WebSocket: use Node 22 or later (on Node 20, run node --experimental-websocket), or nats:// servers`,
      { details: { transport, kind: 'nats', wire: 'websocket' } },
    )
  let core: typeof import('@nats-io/nats-core')
  let jetstream: typeof import('@nats-io/jetstream')
  try {
    ;[core, jetstream] = await Promise.all([import('@nats-io/nats-core'), import('@nats-io/jetstream')])
  } catch (cause) {
    throw missing(transport, '@nats-io/nats-core @nats-io/jetstream', cause)
  }
  // TLS over WebSocket is the URL's (wss://): nats.js refuses a `tls` option there.
  const connect = ({ tls: _, ...options }: ConnectionOptions) => core.wsconnect(options)
  return {
    wire: 'websocket',
    transport: {
      connect: counted('websocket', transport, connect),
      errors: core.errors,
      headers: core.headers,
      createInbox: core.createInbox,
      nkeyAuthenticator: core.nkeyAuthenticator,
      jwtAuthenticator: core.jwtAuthenticator,
    },
    jetstream,
    watch: async () => unwatched,
  }
}

/** Loads the client `servers` need; missing, it is TRANSPORT_UNAVAILABLE saying what to install. */
export function loadNats(servers: readonly string[] = ['nats://'], transport = 'nats'): Promise<NatsModules> {
  return wireOf(servers) === 'websocket' ? loadWebSocket(transport) : loadTcp(transport)
}
