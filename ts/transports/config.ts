/**
 * The `transports` and `bindings` options of `Orrery.create`, checked before anything connects:
 * a wrong value is `INVALID_OPTION` naming the option, a binding naming an unknown transport too.
 */
import { keysOf, ms, onlyKeys, oneOf, oneOfOr, options as checkOptions, refuse, refuseSecret, secretOr, text, textOr } from '../check.js'
import { LIMITS } from '../engines/manifest.js'
import { OrreryError } from '../errors.js'
import { TRANSPORT_KINDS, type TransportKind } from './capabilities.js'
import { platform } from './platform.js'
import { type CheckedSigning, checkSigning, type SigningOptions } from './signing.js'
import { type CheckedTls, checkTls, type TlsOptions } from './tls.js'

/** A Redis server reached through node-redis (`npm i redis`): channels become Redis Streams. */
export interface RedisTransportOptions {
  kind: 'redis'
  /** `redis://[[user][:password]@]host[:port][/db]` or `rediss://…` (TLS). */
  url: string
  username?: string
  password?: string
  /**
   * Connect with TLS: `true` for Node's defaults, or settings passed through to Node's TLS (a
   * private CA, a client certificate, the name to check). Implied by a `rediss://` url.
   */
  tls?: boolean | TlsOptions
  /** Prepended to every key Orrery makes (default `orrery:`). */
  keyPrefix?: string
  /** How long `Orrery.create` waits for the server (default 5,000 ms). */
  connectTimeoutMs?: number
  /** How long a publish may wait to be written while the server is unreachable (default 30,000 ms). */
  publishTimeoutMs?: number
  /** Signs every message written and refuses what does not verify or was written again (docs/transports.md "Signed messages"). */
  signing?: SigningOptions
}

/**
 * A NATS server with JetStream, reached through nats.js (`npm i @nats-io/transport-node
 * @nats-io/jetstream`; over WebSocket `npm i @nats-io/nats-core @nats-io/jetstream`): channels
 * become JetStream streams.
 */
export interface NatsTransportOptions {
  kind: 'nats'
  /**
   * `nats://host:port` or `tls://host:port` (TCP, Node), or `ws://host:port[/path]` or
   * `wss://…` (the server's WebSocket listener: browsers, and Node with a global WebSocket);
   * several for a cluster, all over TCP or all over WebSocket.
   */
  servers: string | readonly string[]
  token?: string
  user?: string
  pass?: string
  /**
   * A user's NKey seed (`SU…`, 58 characters): the server knows the user by its public key, and
   * the client signs the server's challenge with the seed. Never shown in an error.
   */
  nkeySeed?: string
  /**
   * The contents of a `.creds` file (a user JWT and its NKey seed, in either order, any line
   * ends), for a server whose accounts are issued by an operator (JWT authentication). Never
   * shown in an error.
   */
  creds?: string
  /**
   * Connect with TLS: `true` for Node's defaults, or settings passed through to Node's TLS (a
   * private CA, a client certificate, the name to check). Implied by a `tls://` server; over
   * WebSocket the scheme says it (`wss://`) and this is left out.
   */
  tls?: boolean | TlsOptions
  /** Names Orrery's streams (`<prefix>-ch-<channel>`) and subjects (`<prefix>.ch.<channel>`); default `orrery`. */
  prefix?: string
  /** How long `Orrery.create` waits for the server (default 5,000 ms). */
  connectTimeoutMs?: number
  /** How long a publish may wait to be written while the server is unreachable (default 30,000 ms). */
  publishTimeoutMs?: number
  /** Signs every message written and refuses what does not verify or was written again (docs/transports.md "Signed messages"). */
  signing?: SigningOptions
  /**
   * How requests on this transport's channels travel (docs/transports.md "Core requests"):
   * `'stream'` (the default) as entries of the channel's stream, kept and redelivered like any
   * message; `'core'` as core NATS messages, never stored: faster, but a request reaches only the
   * responders listening when it is sent, and one whose responder dies is not redelivered.
   */
  requests?: NatsRequests
}

/** How a nats transport carries requests: `'stream'` (kept, redelivered) or `'core'` (not stored). */
export type NatsRequests = 'stream' | 'core'

/**
 * An Apache Kafka cluster reached through @platformatic/kafka (`npm i @platformatic/kafka@1.35`):
 * channels become topics.
 */
export interface KafkaTransportOptions {
  kind: 'kafka'
  /** `host:port` of one broker or more (the bootstrap list). */
  brokers: string | readonly string[]
  /** The client id the brokers see (default `orrery`; at most 32,767 bytes in UTF-8). */
  clientId?: string
  /** Names Orrery's topics (`<prefix>-ch-<channel>`) and groups; default `orrery`. */
  prefix?: string
  /** Partitions of each topic Orrery makes (default 1: one total order per channel). */
  partitions?: number
  /** Connect with TLS: `true` for Node's defaults, or settings passed through to Node's TLS (a private CA, a client certificate, the name to check). */
  tls?: boolean | TlsOptions
  /** SASL PLAIN or SCRAM credentials. */
  sasl?: { mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; username: string; password: string }
  /** How long `Orrery.create` waits for the cluster (default 5,000 ms). */
  connectTimeoutMs?: number
  /** How long a publish may wait to be written while the cluster is unreachable (default 30,000 ms). */
  publishTimeoutMs?: number
  /** Signs every message written and refuses what does not verify or was written again (docs/transports.md "Signed messages"). */
  signing?: SigningOptions
}

/** This process's own bus: a channel bound to it stays local (for running one suite against both). */
export interface MemoryTransportOptions {
  kind: 'memory'
}

/**
 * Channels kept on disk by this process (native engine): a crash loses nothing acknowledged.
 * One per Orrery; see docs/transports.md.
 */
export interface DurableTransportOptions {
  kind: 'durable'
  /** The file that holds the durable channels (created when missing; its directory must exist). */
  path: string
}

export type TransportOptions = RedisTransportOptions | NatsTransportOptions | KafkaTransportOptions | MemoryTransportOptions | DurableTransportOptions

/** Channel names (exact) or prefixes ending in `*`, each naming a transport. */
export type Bindings = Readonly<Record<string, string>>

/** One checked transport: its name, its id in the core (1, 2, ... in the order given) and options. */
export interface CheckedTransport {
  readonly name: string
  readonly id: number
  readonly kind: TransportKind
  readonly options: CheckedRedisOptions | CheckedNatsOptions | CheckedKafkaOptions | MemoryTransportOptions | CheckedDurableOptions
}

export interface CheckedDurableOptions {
  readonly kind: 'durable'
  readonly path: string
}

export interface CheckedRedisOptions {
  readonly kind: 'redis'
  readonly url: string
  readonly username: string | undefined
  readonly password: string | undefined
  /** TLS settings; `false` or undefined for none (see CheckedTls). */
  readonly tls: CheckedTls
  readonly keyPrefix: string
  readonly connectTimeoutMs: number
  readonly publishTimeoutMs: number
  readonly signing?: CheckedSigning | undefined
}

export interface CheckedNatsOptions {
  readonly kind: 'nats'
  readonly servers: readonly string[]
  readonly token: string | undefined
  readonly user: string | undefined
  readonly pass: string | undefined
  readonly nkeySeed: string | undefined
  /** The user JWT and seed a `.creds` text holds. */
  readonly creds: { readonly jwt: string; readonly seed: string } | undefined
  /** TLS settings; `false` or undefined for none (see CheckedTls). */
  readonly tls: CheckedTls
  readonly prefix: string
  readonly connectTimeoutMs: number
  readonly publishTimeoutMs: number
  readonly signing?: CheckedSigning | undefined
  readonly requests: NatsRequests
}

export interface CheckedKafkaOptions {
  readonly kind: 'kafka'
  readonly brokers: readonly string[]
  readonly clientId: string
  readonly prefix: string
  readonly partitions: number
  /** TLS settings; `false` or undefined for none (see CheckedTls). */
  readonly tls: CheckedTls
  readonly sasl: { readonly mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; readonly username: string; readonly password: string } | undefined
  readonly connectTimeoutMs: number
  readonly publishTimeoutMs: number
  readonly signing?: CheckedSigning | undefined
}

/** Which transport each channel name is bound to: exact names first, then the longest prefix. */
export class BindingRules {
  constructor(
    private readonly exact: ReadonlyMap<string, CheckedTransport>,
    /** Longest prefix first. */
    private readonly prefixes: ReadonlyArray<readonly [string, CheckedTransport]>,
  ) {}

  /**
   * The transport `channel` is bound to. A dead-letter channel (`<name>.dead-letter`) follows its
   * channel's binding unless a rule names it: the core binds it along with its channel.
   */
  match(channel: string): CheckedTransport | undefined {
    const found = this.direct(channel)
    if (found !== undefined || !channel.endsWith(DEAD_LETTER)) return found
    return this.direct(channel.slice(0, -DEAD_LETTER.length))
  }

  private direct(channel: string): CheckedTransport | undefined {
    const exact = this.exact.get(channel)
    if (exact !== undefined) return exact
    for (const [prefix, transport] of this.prefixes) if (channel.startsWith(prefix)) return transport
    return undefined
  }
}

const DEAD_LETTER = '.dead-letter'

export interface CheckedTransports {
  readonly transports: readonly CheckedTransport[]
  readonly rules: BindingRules
}

/** The core's name characters (check.ts `name`), `*` allowed only as a binding's last character. */
const BINDING = /^[A-Za-z0-9._\-:/>]*\*?$/

/** Checks `transports` and `bindings` together; undefined when neither is given. */
export function checkTransports(transports: unknown, bindings: unknown): CheckedTransports | undefined {
  if (transports === undefined && bindings === undefined) return undefined
  const t = checkOptions(transports as Record<string, unknown> | undefined, 'transports', 'option')
  const list: CheckedTransport[] = []
  const byName = new Map<string, CheckedTransport>()
  for (const name of Object.keys(t)) {
    if (name === '' || !BINDING.test(name) || name.endsWith('*')) refuse('option', 'transports', name, 'must be named by letters, digits and . _ - : / >')
    const checked: CheckedTransport = { name, id: list.length + 1, ...transportOptions(t[name], `transports.${name}`) }
    // One file holds every durable channel of an Orrery.
    const durable = list.find((other) => other.kind === 'durable')
    if (checked.kind === 'durable' && durable !== undefined)
      refuse(
        'option',
        `transports.${name}`,
        'durable',
        `must not be a second durable transport (transport "${durable.name}" is one): one file holds every durable channel`,
      )
    list.push(checked)
    byName.set(name, checked)
  }
  const b = checkOptions(bindings as Record<string, unknown> | undefined, 'bindings', 'option')
  const exact = new Map<string, CheckedTransport>()
  const prefixes: Array<[string, CheckedTransport]> = []
  for (const pattern of Object.keys(b)) {
    const where = `bindings[${JSON.stringify(pattern)}]`
    if (pattern === '' || pattern.length > LIMITS.maxNameBytes || !BINDING.test(pattern))
      refuse('option', 'bindings', pattern, "must be keyed by channel names, or by prefixes ending in '*'")
    const target = text(b[pattern], where, {}, 'option')
    const transport = byName.get(target)
    if (transport === undefined) refuse('option', where, target, `must name a transport of \`transports\` (${[...byName.keys()].join(', ') || 'none given'})`)
    if (pattern.endsWith('*')) prefixes.push([pattern.slice(0, -1), transport])
    else exact.set(pattern, transport)
  }
  prefixes.sort((x, y) => y[0].length - x[0].length)
  if (platform() === 'browser') for (const t of list) refuseInBrowser(t)
  return { transports: list, rules: new BindingRules(exact, prefixes) }
}

/** The fields of each kind's options: any other is refused. */
const KEYS: Readonly<Record<TransportKind, readonly string[]>> = {
  redis: keysOf<RedisTransportOptions>()(['kind', 'url', 'username', 'password', 'tls', 'keyPrefix', 'connectTimeoutMs', 'publishTimeoutMs', 'signing']),
  nats: keysOf<NatsTransportOptions>()([
    'kind',
    'servers',
    'token',
    'user',
    'pass',
    'nkeySeed',
    'creds',
    'tls',
    'prefix',
    'connectTimeoutMs',
    'publishTimeoutMs',
    'signing',
    'requests',
  ]),
  kafka: keysOf<KafkaTransportOptions>()([
    'kind',
    'brokers',
    'clientId',
    'prefix',
    'partitions',
    'tls',
    'sasl',
    'connectTimeoutMs',
    'publishTimeoutMs',
    'signing',
  ]),
  memory: keysOf<MemoryTransportOptions>()(['kind']),
  durable: keysOf<DurableTransportOptions>()(['kind', 'path']),
}

function transportOptions(value: unknown, name: string): Pick<CheckedTransport, 'kind' | 'options'> {
  if (value === undefined) refuse('option', name, value, "must be an object { kind: 'redis', url, ... }")
  const o = checkOptions(value as Record<string, unknown>, name, 'option')
  const kind = oneOf(o['kind'], TRANSPORT_KINDS, `${name}.kind`)
  onlyKeys(o, KEYS[kind], name)
  if (kind === 'memory') return { kind, options: { kind } }
  if (kind === 'durable') return { kind, options: { kind, path: text(o['path'], `${name}.path`, { nonEmpty: true }, 'option') } }
  if (kind === 'nats') return { kind, options: natsOptions(o, name) }
  if (kind === 'kafka') return { kind, options: kafkaOptions(o, name) }
  const url = lowerScheme(text(o['url'], `${name}.url`, { nonEmpty: true }, 'option'))
  const parsed = redisUrl(url, `${name}.url`)
  const tls = checkTls(o['tls'], `${name}.tls`, parsed.protocol === 'rediss:')
  const keyPrefix = textOr(o['keyPrefix'], `${name}.keyPrefix`) ?? 'orrery:'
  const username = textOr(o['username'], `${name}.username`)
  const password = secretOr(o['password'], `${name}.password`)
  redisCredentials(parsed, username, password, name)
  return {
    kind,
    options: {
      kind,
      url,
      username,
      password,
      tls,
      keyPrefix,
      connectTimeoutMs: o['connectTimeoutMs'] === undefined ? 5_000 : ms(o['connectTimeoutMs'], `${name}.connectTimeoutMs`, 1),
      publishTimeoutMs: o['publishTimeoutMs'] === undefined ? 30_000 : ms(o['publishTimeoutMs'], `${name}.publishTimeoutMs`, 1),
      signing: checkSigning(o['signing'], `${name}.signing`),
    },
  }
}

/**
 * The user and password a redis URL carries, against the options: node-redis decodes the URL's
 * (it throws at connect on a bad percent-encoding) and lets them win over the options, so options
 * saying otherwise would be dropped without a word: refused here.
 */
function redisCredentials(parsed: URL, username: string | undefined, password: string | undefined, name: string): void {
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part)
    } catch {
      return refusedQuietly(`${name}.url`, 'has credentials that are not valid percent-encoding')
    }
  }
  const user = parsed.username === '' ? undefined : decode(parsed.username)
  const pass = parsed.password === '' ? undefined : decode(parsed.password)
  // Credentials in the URL are all the client takes: a part the URL lacks is not read from the options.
  if (user === undefined && pass === undefined) return
  const parts = [
    ['username', 'user', username, user],
    ['password', 'password', password, pass],
  ] as const
  for (const [option, what, given, inUrl] of parts)
    if (given !== undefined && given !== inUrl)
      refusedQuietly(
        `${name}.${option}`,
        inUrl === undefined
          ? `is given while ${name}.url carries credentials without a ${what}: give them in one place`
          : `differs from the ${what} in ${name}.url: give it once`,
      )
}

/** A URL with its scheme in lower case (schemes are case-insensitive: `NATS://` is `nats://`), as the clients want it. */
function lowerScheme(url: string): string {
  return url.replace(/^[A-Za-z][A-Za-z0-9+.-]*:/, (scheme) => scheme.toLowerCase())
}

/** A redis:// URL up to its port: the port as written (a URL parser only says it failed). */
const REDIS_PORT = /^rediss?:\/\/(?:[^@/?#]*@)?(?:\[[^\]]*\]|[^:/?#]*)(?::([^/?#]*))?/

/**
 * Checks what node-redis reads of a URL (scheme, host, port, database number), so a wrong one is
 * refused here, saying what is wrong, rather than thrown by the client at connect.
 */
function redisUrl(url: string, where: string): URL {
  // The password stays out of the message, and so does a query (it may hold one).
  const shown = url.replace(/[?#][\s\S]*$/, '?…').replace(/\/\/[^/]*@/, '//***@')
  if (!/^rediss?:\/\//.test(url)) refuse('option', where, shown, 'must be a redis:// or rediss:// URL')
  const port = REDIS_PORT.exec(url)?.[1]
  if (port !== undefined && port !== '' && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535))
    refuse('option', where, shown, `has port "${port}": a port is a whole number from 1 to 65535`)
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch (error) {
    refuse('option', where, shown, `is not a valid URL (${error instanceof Error ? error.message : String(error)})`)
  }
  if (parsed.hostname === '') refuse('option', where, shown, 'must name a host')
  if (parsed.search !== '' || parsed.hash !== '')
    refuse('option', where, shown, 'has a query or a fragment (? or #), which the client reads none of: give settings as options (username, password, tls)')
  const database = parsed.pathname.slice(1)
  if (database !== '' && !/^\d+$/.test(database))
    refuse('option', where, shown, `has database "${database}": the path is a database number (e.g. /0), or nothing`)
  return parsed
}

/** A NATS server URL: nats:// or tls://, as nats.js takes them (no query: see natsOptions). */
const NATS_URL = /^(nats|tls):\/\/[^\s/?#]+\/?$/
/** A NATS server's WebSocket URL: ws:// or wss://, a path allowed (a proxy may serve it under one). */
const NATS_WS_URL = /^wss?:\/\/[^\s/?#]+(?:[/?][^\s#]*)?$/

/**
 * What a browser cannot run, once the options are known to be well formed (a malformed one is
 * INVALID_OPTION everywhere alike): UNSUPPORTED naming the transport, before anything loads. A
 * page opens WebSocket connections only: a nats transport with ws:// or wss:// servers.
 */
function refuseInBrowser(t: CheckedTransport): void {
  const name = `transports.${t.name}`
  const details = { transport: t.name, kind: t.kind, platform: 'browser' }
  if (t.options.kind === 'nats') {
    const i = t.options.servers.findIndex((url) => !NATS_WS_URL.test(url))
    if (i < 0) return
    const where = t.options.servers.length === 1 ? `${name}.servers` : `${name}.servers[${i}]`
    throw new OrreryError(
      'UNSUPPORTED',
      `${where} is a TCP server (${shownServer(t.options.servers[i]!)}), and a browser opens no TCP connection: use the NATS server's WebSocket listener, ws://host:port or wss://host:port (its \`websocket\` block)`,
      { details: { option: where, ...details } },
    )
  }
  if (t.kind === 'memory') return
  const why =
    t.kind === 'durable'
      ? 'a browser has no file for it (and the wasm engine keeps the bus in memory)'
      : `a browser opens no TCP connection to ${t.kind === 'redis' ? 'Redis' : 'Kafka'}`
  throw new OrreryError(
    'UNSUPPORTED',
    `${name} is a ${t.kind} transport, and ${why}: in a browser, channels cross processes through a nats transport with ws:// or wss:// servers (the NATS server's WebSocket listener)`,
    { details: { option: `${name}.kind`, ...details } },
  )
}

/** A NATS server URL with its password (user:***@) or token (***@) hidden. */
function shownServer(url: string): string {
  // The credentials are hidden first, on the whole URL (a raw ? or # in a password is not a
  // query); then a TCP server's query (refused), which may hold a secret, is cut. A WebSocket
  // URL's path and query are shown.
  const hidden = url.replace(/\/\/(?:([^:@/]*):)?[^/]*@/, (_, user: string | undefined) => `//${user === undefined ? '' : `${user}:`}***@`)
  return /^(nats|tls):/.test(hidden) ? hidden.replace(/[?#][\s\S]*$/, '?…') : hidden
}
/** A prefix that is one subject token and a valid stream name start. */
const NATS_PREFIX = /^[A-Za-z0-9_-]{1,32}$/

/** A NATS server URL's host and port, refused here as a redis URL's or a kafka broker's are, rather than failing at connect. */
function natsAddress(url: string, where: string, shown: string): void {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    refuse('option', where, shown, 'is not a valid URL: it must name a host, and a port is a whole number from 1 to 65535')
  }
  if (parsed.hostname === '') refuse('option', where, shown, 'must name a host')
  if (parsed.port === '0') refuse('option', where, shown, 'has port "0": a port is a whole number from 1 to 65535')
}

function natsOptions(o: Record<string, unknown>, name: string): CheckedNatsOptions {
  const raw = o['servers']
  const list = Array.isArray(raw) ? (raw as unknown[]) : [raw]
  if (list.length === 0) refuse('option', `${name}.servers`, raw, 'must name at least one server')
  // Array.from visits holes (map skips them): `[, url]` is refused like `[undefined, url]`.
  const servers = Array.from(list, (s, i) => {
    const where = Array.isArray(raw) ? `${name}.servers[${i}]` : `${name}.servers`
    const url = lowerScheme(text(s, where, { nonEmpty: true }, 'option'))
    // A password (user:***@) or a token (***@) stays out of the message, and so does a query.
    const shown = shownServer(url)
    const websocket = NATS_WS_URL.test(url)
    if (!websocket && /^(nats|tls):\/\/[^?#]*[?#]/.test(url))
      refuse('option', where, shown, 'has a query or a fragment (? or #), which the client reads none of: give settings as options (user, pass, token, tls)')
    if (!websocket && !NATS_URL.test(url))
      refuse('option', where, shown, 'must be a nats://host:port or tls://host:port URL, or ws://host:port or wss://host:port (WebSocket)')
    natsAddress(url, where, shown)
    if (i > 0 && websocket !== NATS_WS_URL.test(String(list[0])))
      refuse('option', where, shown, 'must be over the same wire as the first server: all nats:// or tls://, or all ws:// or wss://')
    return url
  })
  const credentials = natsCredentials(o, name, servers)
  const keys = natsKeys(o, name, credentials)
  if (o['tls'] === false && servers.some((s) => /^tls:/.test(s)))
    refusedQuietly(`${name}.tls`, `is false while ${name}.servers asks for TLS (tls://): for a plain connection use nats:// servers`)
  const websocket = NATS_WS_URL.test(servers[0]!)
  if (websocket && o['tls'] !== undefined) refusedQuietly(`${name}.tls`, 'must be left out with WebSocket servers: wss:// connects with TLS, ws:// without')
  const prefix = textOr(o['prefix'], `${name}.prefix`) ?? 'orrery'
  if (!NATS_PREFIX.test(prefix)) refuse('option', `${name}.prefix`, prefix, 'must be 1 to 32 letters, digits, _ or -')
  return {
    kind: 'nats',
    servers,
    ...credentials,
    ...keys,
    tls: checkTls(
      o['tls'],
      `${name}.tls`,
      servers.some((s) => /^(tls|wss):/.test(s)),
    ),
    prefix,
    connectTimeoutMs: o['connectTimeoutMs'] === undefined ? 5_000 : ms(o['connectTimeoutMs'], `${name}.connectTimeoutMs`, 1),
    publishTimeoutMs: o['publishTimeoutMs'] === undefined ? 30_000 : ms(o['publishTimeoutMs'], `${name}.publishTimeoutMs`, 1),
    signing: checkSigning(o['signing'], `${name}.signing`),
    requests: oneOfOr(o['requests'], NATS_REQUESTS, 'stream', `${name}.requests`),
  }
}

const NATS_REQUESTS: readonly NatsRequests[] = ['stream', 'core']

/** The credentials in front of a server URL's host: `user:pass@` or `token@`. */
const URL_CREDENTIALS = /^[a-z]+:\/\/([^@/]*)@/i

/** A server URL without the credentials in front of its host (nats.js does not read them there). */
export function withoutCredentials(url: string): string {
  return url.replace(URL_CREDENTIALS, (whole, auth: string) => whole.slice(0, -auth.length - 1))
}

type NatsCredentials = Pick<CheckedNatsOptions, 'token' | 'user' | 'pass'>

/** INVALID_OPTION naming the option and showing none of its value (credentials, or servers that may carry them). */
function refusedQuietly(option: string, why: string): never {
  throw new OrreryError('INVALID_OPTION', `${option} ${why}`, { details: { option } })
}

/**
 * The connection's credentials: the `token`, `user` and `pass` options, or those a server URL
 * carries (`nats://user:pass@host`, `nats://token@host`, percent-decoded), which nats.js would
 * not read from the URL itself. A connection has one set: URLs carrying different ones, or URLs
 * and options saying different things, are refused.
 */
function natsCredentials(o: Record<string, unknown>, name: string, servers: readonly string[]): NatsCredentials {
  const given: NatsCredentials = {
    // nats.js drops an empty token or user: the connection then went without credentials (or
    // without the password given), unseen. Refused, as an empty password is.
    token: secretOr(o['token'], `${name}.token`, { nonEmpty: true }),
    user: textOr(o['user'], `${name}.user`, { nonEmpty: true }),
    pass: secretOr(o['pass'], `${name}.pass`, { nonEmpty: true }),
  }
  let carried: NatsCredentials | undefined
  servers.forEach((url, i) => {
    const auth = URL_CREDENTIALS.exec(url)?.[1]
    if (auth === undefined) return
    const where = servers.length === 1 ? `${name}.servers` : `${name}.servers[${i}]`
    // An @ of the password left as it is: where the host begins is then a guess.
    if (/^[a-z]+:\/\/[^/]*@[^/]*@/i.test(url)) refusedQuietly(where, 'has more than one @ before its host: write an @ of the credentials as %40')
    const decode = (part: string) => {
      try {
        return decodeURIComponent(part)
      } catch {
        return refusedQuietly(where, 'has credentials that are not valid percent-encoding')
      }
    }
    const colon = auth.indexOf(':')
    const these: NatsCredentials =
      colon < 0
        ? { token: decode(auth), user: undefined, pass: undefined }
        : { token: undefined, user: decode(auth.slice(0, colon)), pass: decode(auth.slice(colon + 1)) }
    if (these.token === '' || these.user === '' || these.pass === '')
      refusedQuietly(where, `has an empty ${these.token === '' ? 'token' : these.user === '' ? 'user' : 'password'} before its host`)
    if (carried === undefined) carried = these
    else if (carried.token !== these.token || carried.user !== these.user || carried.pass !== these.pass)
      refusedQuietly(where, 'carries other credentials than the first server that has some: a connection has one set')
  })
  const merged: NatsCredentials =
    carried === undefined ? given : { token: given.token ?? carried.token, user: given.user ?? carried.user, pass: given.pass ?? carried.pass }
  if (merged.token !== undefined && (merged.user !== undefined || merged.pass !== undefined))
    refusedQuietly(`${name}.token`, 'is given with a user and password (as options or in the servers): a connection uses one or the other')
  if ((merged.user === undefined) !== (merged.pass === undefined))
    refusedQuietly(
      merged.user === undefined ? `${name}.pass` : `${name}.user`,
      merged.user === undefined ? 'is given without a user: give user too' : 'is given without a password: give pass too (or the token as token)',
    )
  if (carried === undefined) return given
  for (const key of ['token', 'user', 'pass'] as const) {
    const option = given[key]
    const inUrl = carried[key]
    if (option !== undefined && inUrl !== undefined && option !== inUrl)
      refusedQuietly(`${name}.${key}`, `differs from the ${key === 'token' ? 'token' : key === 'user' ? 'user' : 'password'} in ${name}.servers: give it once`)
  }
  return merged
}

/** A user NKey seed: base32 of its prefix, 32 bytes and a checksum, `SU` first. */
const NKEY_USER_SEED = /^SU[A-Z2-7]{56}$/
/** The two blocks of a `.creds` file, found wherever they are (a text from a secret store may have lost its line ends). */
const CREDS_JWT = /-{3,}BEGIN NATS USER JWT-{3,}\s*([\w=-]+\.[\w=-]+\.[\w=-]+)\s*-{3,}END NATS USER JWT-{3,}/
const CREDS_SEED = /-{3,}BEGIN USER NKEY SEED-{3,}\s*(SU[A-Z2-7]{56})\s*-{3,}END USER NKEY SEED-{3,}/

/**
 * `nkeySeed` and `creds`, checked without showing them. A connection authenticates one way: a
 * token, a user and password, an NKey, or a `.creds` file.
 */
function natsKeys(o: Record<string, unknown>, name: string, credentials: NatsCredentials): Pick<CheckedNatsOptions, 'nkeySeed' | 'creds'> {
  // A seed read from a file keeps its line end.
  const nkeySeed = secretOr(o['nkeySeed'], `${name}.nkeySeed`)?.trim()
  if (nkeySeed !== undefined && !NKEY_USER_SEED.test(nkeySeed))
    refuseSecret(`${name}.nkeySeed`, nkeySeed, "must be a user's NKey seed: 58 characters of base32 (A-Z, 2-7) beginning SU")
  const text = secretOr(o['creds'], `${name}.creds`)
  let creds: CheckedNatsOptions['creds']
  if (text !== undefined) {
    const jwt = CREDS_JWT.exec(text)?.[1]
    const seed = CREDS_SEED.exec(text)?.[1]
    if (jwt === undefined || seed === undefined)
      refuseSecret(`${name}.creds`, text, 'must be the contents of a .creds file: a NATS USER JWT block and a USER NKEY SEED block')
    creds = { jwt, seed }
  }
  const ways = [
    credentials.token !== undefined ? 'token' : undefined,
    credentials.user !== undefined || credentials.pass !== undefined ? 'user and pass' : undefined,
    nkeySeed !== undefined ? 'nkeySeed' : undefined,
    creds !== undefined ? 'creds' : undefined,
  ].filter((w): w is string => w !== undefined)
  if (ways.length > 1)
    refusedQuietly(
      `${name}.${ways[1] === 'user and pass' ? 'user' : ways[1]}`,
      `is given with ${ways[0]} (as options or in the servers): a connection authenticates one way`,
    )
  return { nkeySeed, creds }
}

/** A bootstrap broker: `host:port` (a bracketed IPv6 host allowed). */
const KAFKA_BROKER = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/
const SASL_MECHANISMS = ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'] as const
const SASL_KEYS = ['mechanism', 'username', 'password']

/** Kafka writes a client id in every request header with a 16-bit length. */
const MAX_CLIENT_ID_BYTES = 32_767

function kafkaClientId(value: unknown, name: string): string {
  const id = textOr(value, name) ?? 'orrery'
  // At most 3 UTF-8 bytes a UTF-16 unit: only a long id is encoded to count.
  if (id.length * 3 > MAX_CLIENT_ID_BYTES && new TextEncoder().encode(id).length > MAX_CLIENT_ID_BYTES) {
    refuse('option', name, id, `must be at most ${MAX_CLIENT_ID_BYTES} bytes in UTF-8 (Kafka sends it with a 16-bit length)`)
  }
  return id
}

function kafkaOptions(o: Record<string, unknown>, name: string): CheckedKafkaOptions {
  const raw = o['brokers']
  const list = Array.isArray(raw) ? (raw as unknown[]) : [raw]
  if (list.length === 0) refuse('option', `${name}.brokers`, raw, 'must name at least one broker')
  // Array.from visits holes (map skips them): `[, url]` is refused like `[undefined, url]`.
  const brokers = Array.from(list, (b, i) => {
    const where = Array.isArray(raw) ? `${name}.brokers[${i}]` : `${name}.brokers`
    const broker = text(b, where, { nonEmpty: true }, 'option')
    const port = KAFKA_BROKER.exec(broker)?.[1]
    // Credentials written in front of the host (`user:password@`) stay out of the message.
    if (port === undefined || Number(port) < 1 || Number(port) > 65535)
      refuse('option', where, broker.replace(/^[^@]*@/, '***@'), 'must be host:port (a port from 1 to 65535)')
    return broker
  })
  const prefix = textOr(o['prefix'], `${name}.prefix`) ?? 'orrery'
  if (!NATS_PREFIX.test(prefix)) refuse('option', `${name}.prefix`, prefix, 'must be 1 to 32 letters, digits, _ or -')
  const partitions = o['partitions'] === undefined ? 1 : o['partitions']
  if (typeof partitions !== 'number' || !Number.isInteger(partitions) || partitions < 1 || partitions > 10_000)
    refuse('option', `${name}.partitions`, partitions, 'must be a whole number from 1 to 10,000')
  let sasl: CheckedKafkaOptions['sasl']
  if (o['sasl'] !== undefined) {
    const raw = o['sasl']
    // A password given where the object belongs is not shown.
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) refuseSecret(`${name}.sasl`, raw, 'must be an object { mechanism, username, password }')
    const s = raw as Record<string, unknown>
    onlyKeys(s, SASL_KEYS, `${name}.sasl`)
    sasl = {
      mechanism: oneOf(s['mechanism'], SASL_MECHANISMS, `${name}.sasl.mechanism`),
      username: text(s['username'], `${name}.sasl.username`, { nonEmpty: true }, 'option'),
      password: secretOr(s['password'], `${name}.sasl.password`) ?? refuseSecret(`${name}.sasl.password`, undefined, 'must be a string'),
    }
  }
  return {
    kind: 'kafka',
    brokers,
    clientId: kafkaClientId(o['clientId'], `${name}.clientId`),
    prefix,
    partitions,
    tls: checkTls(o['tls'], `${name}.tls`, false),
    sasl,
    connectTimeoutMs: o['connectTimeoutMs'] === undefined ? 5_000 : ms(o['connectTimeoutMs'], `${name}.connectTimeoutMs`, 1),
    publishTimeoutMs: o['publishTimeoutMs'] === undefined ? 30_000 : ms(o['publishTimeoutMs'], `${name}.publishTimeoutMs`, 1),
    signing: checkSigning(o['signing'], `${name}.signing`),
  }
}
