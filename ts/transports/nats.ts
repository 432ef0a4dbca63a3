/**
 * The NATS JetStream driver, on nats.js (`@nats-io/transport-node` and `@nats-io/jetstream`,
 * optional peer dependencies loaded when a nats transport is configured). A bound channel is one
 * stream with one subject; a mirror is an ordered consumer; a group is a durable pull consumer
 * with explicit acks, this process fetching what its members have room for. A request is a
 * message of the stream with headers `Orrery-Reply-To` (the requester's reply address) and
 * `Orrery-Timeout` (ms); its reply is a core publish to `<prefix>.reply.<address>`, which the
 * requester's process subscribes to. With `signing`, every message (replies too) carries header
 * `Orrery-Sig`, its signature. The driver only moves bytes: what a delivery means stays in the core.
 */
import type { JetStreamClient, JetStreamManager, JsMsg, StreamConfig } from '@nats-io/jetstream'
import type { Msg, NatsConnection, Subscription, TlsOptions } from '@nats-io/nats-core'
import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js'

import { askUntilAnswered } from './asking.js'
import { OrreryError } from '../errors.js'
import { type CheckedNatsOptions, withoutCredentials } from './config.js'
import type { BrokerRetention, ChannelRef, Driver, DriverSink, Egress, GroupRef, HistoryBound } from './driver.js'
import { type AckSink, PubAcks } from './nats-acks.js'
import { type CoreHost, CoreRequests } from './nats-core-requests.js'
import type { NatsModules } from './nats-connect.js'
import { IngestWriter } from './records.js'
import { DELIVERED, MSG_ID, REPLY_TO, routeOfMsg, SIGNATURE, TIMEOUT } from './nats-headers.js'
import { errorReply, frameIdHex, type PendingWrite, threshold, transportError, Writes } from './writes.js'
import type { OpenNatsWire } from '../engines/backend.js'
import { credsFile, openWire, type Wire, type WireRecord } from './nats-wire.js'
import { CatchUps, catchUpWith, FirstLook, GroupStarts, heldBy, Markers, sendable, serversKey } from './catch-up.js'
import { Signing } from './signing.js'
import { Pause } from './pause.js'

export { loadNats, type NatsModules } from './nats-connect.js'

/** A JetStream API request given up because the connection went before its answer (see `uncut`). */
class ConnectionLost extends Error {}

/**
 * Whether a JetStream publish found no stream on its subject: the server answers "no responders"
 * (a publish answered on the ack inbox, nats-acks.ts; nats.js's own publish calls it
 * `JetStreamNotEnabled`, for it cannot tell the two apart).
 */
function isNoStream(error: unknown): boolean {
  if (!(error instanceof Error)) return false
  const cause = error.cause as { isNoResponders?: () => boolean } | undefined
  return error.name === 'NoResponders' || error.name === 'JetStreamNotEnabled' || (typeof cause?.isNoResponders === 'function' && cause.isNoResponders())
}

/** A server URL as it may be shown: a password (`user:***@`) or a token (`***@`) hidden. */
export function shownUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/)([^@/]*)@/i, (_, scheme: string, auth: string) => {
    const colon = auth.indexOf(':')
    return `${scheme}${colon < 0 ? '***' : `${auth.slice(0, colon)}:***`}@`
  })
}

/** The secrets of a configuration: passwords, tokens, NKey seeds and creds, in the URLs or as options. */
function secretsOf(config: CheckedNatsOptions): string[] {
  const found = [config.pass, config.token, config.nkeySeed, config.creds?.jwt, config.creds?.seed]
  for (const url of config.servers) {
    const auth = /^[a-z]+:\/\/([^@/]*)@/i.exec(url)?.[1]
    if (auth === undefined) continue
    const colon = auth.indexOf(':')
    found.push(colon < 0 ? auth : auth.slice(colon + 1))
    // The URL-decoded form too: nats.js decodes it before use.
    try {
      found.push(decodeURIComponent(colon < 0 ? auth : auth.slice(colon + 1)))
    } catch {
      // Not percent-encoded.
    }
  }
  return [...new Set(found.filter((s): s is string => s !== undefined && s !== ''))]
}

/** Secrets shorter than this are hidden only where they stand alone (see `hiders`). */
const SHORT_SECRET = 8

/**
 * A pattern for each secret that finds it in a message. A long one is hidden wherever it
 * appears; a short one only where no letter or digit touches it: hidden inside words (the `e`s
 * of "connection refused"), the marks would mangle the message and show where it occurs, which
 * says the secret.
 */
function hiders(secrets: readonly string[]): RegExp[] {
  // Longest first: a secret holding another is hidden whole.
  return [...secrets]
    .sort((a, b) => b.length - a.length)
    .map((secret) => {
      const literal = secret.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
      if (secret.length >= SHORT_SECRET) return new RegExp(literal, 'gu')
      // Only an end that is a letter or digit can run into a word (any script's).
      const before = WORDLIKE.test(secret.slice(0, 1)) ? '(?<![\\p{L}\\p{N}])' : ''
      const after = WORDLIKE.test(secret.slice(-1)) ? '(?![\\p{L}\\p{N}])' : ''
      return new RegExp(`${before}${literal}${after}`, 'gu')
    })
}

const WORDLIKE = /^[\p{L}\p{N}]$/u

/**
 * A name as one subject token and a valid stream or consumer name: letters, digits and `-` stay,
 * every other character is `_` and its code in hex (`orders.eu` -> `orders_2Eeu`), so distinct
 * names never meet. A name whose form would be too long keeps a readable head and a hash.
 */
export function brokerName(name: string): string {
  let out = ''
  for (const ch of name) out += /[A-Za-z0-9-]/.test(ch) ? ch : `_${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(2, '0')}`
  if (out.length <= MAX_NAME) return out
  return `${out.slice(0, MAX_NAME - 17)}-${bytesToHex(sha256(utf8ToBytes(name))).slice(0, 16)}`
}

/** Room left for a name in a stream name (JetStream allows 255, and a prefix comes first). */
const MAX_NAME = 200

type AckEgress = Extract<Egress, { kind: 'ack' }>

/** A core request sent again carries its delivery count: the largest such header line. */
const DELIVERED_HEADER_BYTES = `${DELIVERED}: 4294967294\r\n`.length
type PublishEgress = Extract<Egress, { kind: 'publish' }>

/** Why a record was not written (its outcome, beside a publish's duplicate flag). */
class Failed {
  constructor(readonly reason: unknown) {}
}

/** A record's outcome: written (a publish: whether the stream dropped it as a duplicate), or Failed. */
type Outcome = boolean | Failed

/** Reply subjects kept (one per requesting process). */
const MAX_REPLY_SUBJECTS = 4_096
/** A group's pulls in flight at once, at most: the next goes out while one still delivers. */
const MAX_PULLS = 2
/** Messages fetched per pull, at most. */
const READ_COUNT = 512
/** How long a pull waits for messages before it is made again (nats.js's minimum is 1 s). */
const PULL_MS = 5_000
/** How often the server says a pull (a group's, a mirror's) is alive while it has nothing to deliver. */
const PULL_HEARTBEAT_MS = 1_000
/** A pull that said nothing for this long is taken for lost (two heartbeats missed). */
const PULL_SILENT_MS = 2 * PULL_HEARTBEAT_MS + 500
/** How long a mirror's consumer outlives this process's last pull (one it could not delete goes by itself). */
const MIRROR_INACTIVE_MS = 5 * 60_000
/** The wire dropped at most this long before the connection did: both went with the server (an outage). */
const OUTAGE_SLACK_MS = 2_000
/** Pause before a failed read or write is tried again (nats.js reconnects meanwhile). */
const RETRY_MS = 200
/** How often a group's reader looks its consumer's ack floor up again (see `GroupReader.floor`). */
const FLOOR_MS = 5_000
/** How long one attempt of a publish waits for its PubAck. */
const PUBLISH_ATTEMPT_MS = 5_000
/** The longest dedup window JetStream is asked to keep (an unbounded window keeps ids a year). */
const LONGEST_WINDOW_MS = 365 * 24 * 3600 * 1000

const ms = (n: number): number => Math.round(n * 1e6)

/**
 * Markers of `latest` subscribes and group starts not answered yet, by server and stream (JetStream answers API
 * requests and stores messages on separate paths, so order on the connection alone does not say
 * which came first).
 */
const markers = new Markers()

const later: (f: () => void) => void = typeof setImmediate === 'function' ? (f) => void setImmediate(f) : (f) => void setTimeout(f, 0)

/**
 * Calls `silent` once nothing was heard for `ms`: `heard()` notes the time (no timer per call:
 * re-arming one for every delivery was a tenth of a consumer's time), the one timer looks at it
 * when it fires and waits out the rest. `stop()` ends the watch.
 */
function silenceWatch(ms: number, silent: () => void): { heard(): void; stop(): void } {
  // The monotonic clock: a wall clock set back would stretch the watch, set forward cut it short.
  let last = performance.now()
  let timer: ReturnType<typeof setTimeout> | undefined
  const check = () => {
    const quiet = performance.now() - last
    timer = quiet >= ms ? undefined : setTimeout(check, ms - quiet)
    if (timer === undefined) silent()
  }
  timer = setTimeout(check, ms)
  return {
    heard: () => {
      last = performance.now()
    },
    stop: () => clearTimeout(timer),
  }
}

export class NatsDriver implements Driver {
  private nc: NatsConnection | undefined
  /** @internal The native engine's wire for groups' pulls (see nats-wire.ts). */
  wire: Wire | undefined
  /** The wire's failure to connect was reported (until it connects). */
  private wireTrouble = false
  /** Since when the wire is down (or was opened). */
  private wireDownSince = Date.now()
  /** JetStream publishes of this connection, answered on one subscription. */
  private acks: PubAcks | undefined
  private js: JetStreamClient | undefined
  private jsm: JetStreamManager | undefined
  private closed = false
  private readonly queue: PendingWrite[] = []
  private inFlight = false
  private readonly kept = new Map<string, BrokerRetention>()
  /** Streams known to exist, with what they were last set to. */
  private readonly streams = new Map<string, { ready: Promise<void>; windowMs: number | undefined; retention: BrokerRetention | undefined }>()
  private readonly writes = new Writes(markers, (r) => this.streamKeyOf(r))
  /** Groups from 'latest' being made, which publishes wait for. */
  private readonly starts = new GroupStarts(markers)
  /** Each channel's stream and subject (`namesOf`). */
  private readonly names = new Map<string, { readonly stream: string; readonly subject: string }>()
  private readonly mirrors = new Map<number, MirrorReader>()
  private readonly groups = new Map<number, GroupReader>()
  /** Deliveries this process holds, by group and stream sequence: what acks, naks and terms answer. */
  private readonly held = new Map<number, Map<string, Held>>()
  /**
   * Groups whose held deliveries are not answered now, each with the answers waiting: from a
   * disconnect until the group's reader has looked at the stream again. A server back without its
   * data has a new stream under the same name, numbering from 1 again, and another process may have
   * made its consumer again under the same name too: the server settles an answer by the stream
   * sequence in its ack subject alone, so an answer meant for the old stream would settle the new
   * stream's message of that number, which another process may hold. Once the reader has looked,
   * the answers go (a new stream's reader has dropped the old deliveries first: they go nowhere).
   */
  private readonly unchecked = new Map<number, Egress[] | 'drop'>()
  /**
   * Groups deleted here whose held deliveries are not let go yet (`letGoOnceWritten`): a
   * disconnect meanwhile makes their answers go nowhere (their reader, gone, never looks again).
   */
  private readonly leaving = new Set<number>()
  /** How many dead letters of each group are being written now (their delivery answered once written). */
  private readonly deadLettering = new Map<number, number>()
  /** Whether the connection is up (false from a disconnect until nats.js has reconnected). */
  private connected = true
  /** What waits for the next disconnect (see `uncut`). */
  private readonly cuts = new Set<(error: Error) => void>()
  private readonly serverKey: string
  /** What hides each secret of the configuration (passwords, tokens: never in a message this driver gives out; see `hiders`). */
  private readonly secrets: RegExp[]
  private readonly sink: DriverSink
  /** The bytes of the signature's header line (0 unsigned): `Orrery-Sig: <key id>:<ms>:<64 hex digits>\r\n`. */
  private readonly signatureLine: number
  /** @internal The transport's signing (undefined: messages go unsigned and nothing is checked). */
  readonly signing: Signing | undefined
  /** The round trip the answers of this turn wait for. */
  private reading: Promise<void> | undefined
  /** This process's reply subscription, made by its first request. */
  private listening: Promise<void> | undefined
  /** Requests as core NATS messages (`requests: 'core'`); undefined: they are stream entries. */
  private readonly core: CoreRequests | undefined
  private readonly replySubjects = new Map<string, string>()

  constructor(
    readonly nats: NatsModules,
    private readonly config: CheckedNatsOptions,
    sink: DriverSink,
    private readonly transport: string,
    /** The engine's NATS wire, if it has one (the native engine). */
    private readonly openWire?: OpenNatsWire,
  ) {
    this.serverKey = serversKey(config.servers, 4222)
    this.secrets = hiders(secretsOf(config))
    // A time in ms has 13 digits from 2001 to 2286: the line's length is made once.
    this.signatureLine = config.signing === undefined ? 0 : `${SIGNATURE}: ${config.signing.sign}:${Date.now()}:\r\n`.length + 64
    // What reaches the bus's transport-error events passes through the same redaction.
    this.sink = {
      ingest: (b) => sink.ingest(b),
      groupRoom: (g) => sink.groupRoom(g),
      memberRoom: (g) => sink.memberRoom(g),
      mirrorRoom: (c) => sink.mirrorRoom(c),
      failed: (e) => sink.failed(this.redacted(e)),
      refused: (r) => sink.refused?.(r),
      connection: (up, cause) => sink.connection?.(up, cause === undefined ? undefined : this.redacted(cause)),
    }
    this.signing = config.signing === undefined ? undefined : new Signing(config.signing, (r) => sink.refused?.(r))
    if (config.requests === 'core') {
      const host: CoreHost = {
        sink: this.sink,
        signing: this.signing,
        connection: () => this.connection(),
        headers: () => this.nats.transport.headers(),
        registered: (what) => this.registered(what),
      }
      this.core = new CoreRequests(host, config.prefix, brokerName)
    }
  }

  /** `text` with every secret of the configuration replaced by `***`. */
  private scrub(text: string): string {
    let out = text.replace(/([a-z]+:\/\/[^\s@/]*@)/gi, (m) => shownUrl(m))
    for (const secret of this.secrets) out = out.replace(secret, '***')
    return out
  }

  /** Whether `error`, or any cause of it, says a secret. */
  private leaks(error: unknown): boolean {
    for (let e = error, depth = 0; e !== undefined && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
      const text = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : typeof e === 'string' ? e : ''
      if (this.scrub(text) !== text) return true
    }
    return false
  }

  /**
   * `error` as it may be given out: one that would say a password or token becomes a
   * TRANSPORT_UNAVAILABLE with the message redacted, and without the cause that says it.
   */
  redacted(error: unknown): unknown {
    if (!this.leaks(error)) return error
    const message = error instanceof Error ? error.message : String(error)
    const details = error instanceof OrreryError ? { ...error.details } : { transport: this.transport }
    const code = error instanceof OrreryError ? error.code : 'TRANSPORT_UNAVAILABLE'
    return new OrreryError(code, this.scrub(message), { details })
  }

  /** The stream of `channel`. */
  streamOf(channel: string): string {
    return this.namesOf(channel).stream
  }

  /** The one subject of `channel`'s stream. */
  subjectOf(channel: string): string {
    return this.namesOf(channel).subject
  }

  /** A channel's stream and subject, made once: every record written asks for them (brokerName's pass cost ~2% of a publish). */
  private namesOf(channel: string): { readonly stream: string; readonly subject: string } {
    let names = this.names.get(channel)
    if (names === undefined) {
      const part = brokerName(channel)
      names = { stream: `${this.config.prefix}-ch-${part}`, subject: `${this.config.prefix}.ch.${part}` }
      this.names.set(channel, names)
    }
    return names
  }

  async connect(): Promise<void> {
    const { servers, token, user, pass, nkeySeed, creds, tls, connectTimeoutMs } = this.config
    const bytes = (text: string) => new TextEncoder().encode(text)
    let timer: ReturnType<typeof setTimeout> | undefined
    let nc: NatsConnection | undefined
    let failed = false
    // nats.js leaves a socket open when its own connect timeout fires (see socket-watch.ts): what
    // the attempt opens is watched, so a failure closes all of it (TCP; a WebSocket closes itself).
    const sockets = await this.nats.watch()
    const attempt = sockets.run(async () => {
      nc = await this.nats.transport.connect({
        // Credentials in a URL came out as options (config.ts): nats.js would not read them there.
        servers: servers.map(withoutCredentials),
        timeout: connectTimeoutMs,
        reconnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        // Otherwise nats.js makes two Errors (a stack each) ahead of every request, a JetStream
        // publish included, in case it fails: in a CPU profile of publishing they took 38% of the
        // time, and the rate was 26 k msg/s against 45 k without (benches/transports.mjs). What
        // fails still comes as the same error types; the driver wraps it in an OrreryError.
        noAsyncTraces: true,
        ...(token === undefined ? {} : { token }),
        ...(user === undefined ? {} : { user }),
        ...(pass === undefined ? {} : { pass }),
        // The server's challenge signed with the seed (and, for creds, the user's JWT sent along).
        ...(nkeySeed === undefined ? {} : { authenticator: this.nats.transport.nkeyAuthenticator(bytes(nkeySeed)) }),
        ...(creds === undefined ? {} : { authenticator: this.nats.transport.jwtAuthenticator(creds.jwt, bytes(creds.seed)) }),
        // Handed to Node's tls.connect as given (nats.js types PEM as strings only; bytes work as
        // well). Turned off, `null`: nats.js otherwise upgrades whenever the server offers TLS.
        ...(tls === undefined ? {} : tls === false ? { tls: null } : { tls: { ...tls } as TlsOptions }),
      })
      if (this.closed || failed) return
      // Asks the server for the account's JetStream: a server without it is refused here.
      const jsm = await this.nats.jetstream.jetstreamManager(nc, { timeout: connectTimeoutMs })
      // Given up meanwhile (connectTimeoutMs): no wire is opened for a connection that is closed.
      if (this.closed || failed) return
      this.jsm = jsm
      this.js = jsm.jetstream()
      // TLS and WebSocket connections keep nats.js's pulls (the wire speaks plain TCP only).
      if ((tls === undefined || tls === false) && servers.every((url) => !/^(wss?|tls):/i.test(url))) {
        this.wireDownSince = Date.now()
        this.wire = openWire(
          this.openWire,
          {
            servers: servers.map(withoutCredentials),
            connectTimeoutMs,
            token,
            user,
            pass,
            nkeySeed,
            creds: creds === undefined ? undefined : credsFile(creds.jwt, creds.seed),
          },
          (event) => this.wireEvent(event),
        )
      }
    })
    try {
      // A server that accepts the connection but never answers is caught here too.
      await Promise.race([
        attempt,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within connectTimeoutMs (${connectTimeoutMs} ms)`)), connectTimeoutMs)
        }),
      ])
      this.nc = nc
      this.acks = new PubAcks(nc!, this.nats)
      this.watchStatus(nc!)
      this.watchConnection(nc!)
    } catch (error) {
      failed = true
      this.jsm = undefined
      this.js = undefined
      // Nothing stays open: the connection (closed, it never reconnects), its sockets, and those
      // nats.js still makes going on to its next server, or once it hands the connection over late.
      const closeLate = () => nc?.close().catch(() => {})
      void closeLate()
      sockets.closeAll()
      void attempt.then(closeLate, closeLate).finally(() => sockets.end())
      throw this.connectError(error)
    } finally {
      clearTimeout(timer)
      if (!failed) sockets.end()
    }
  }

  /** Tells the link when the connection goes and when nats.js has it back (an iterator of its own). */
  private watchConnection(nc: NatsConnection): void {
    void (async () => {
      for await (const s of nc.status()) {
        if (this.closed) return
        if (s.type === 'disconnect') this.sink.connection?.(false, new Error(`disconnected from ${s.server}`))
        else if (s.type === 'reconnect') this.sink.connection?.(true)
      }
    })().catch(() => {})
  }

  /** Reports what the connection says nobody waits for (a refused permission, a lost server for good). */
  private watchStatus(nc: NatsConnection): void {
    void (async () => {
      for await (const s of nc.status()) {
        if (this.closed) return
        if (s.type === 'error') this.sink.failed(s.error)
        else if (s.type === 'disconnect') {
          // A pull dies with the connection: each is ended, and made again once it is back (a
          // mirror's with a new consumer: the server may have lost the one it read).
          this.connected = false
          // The wire went just before: the server went (an outage), not a message the wire could
          // not read. Its groups pull over the wire again as soon as it is back.
          if (this.wire?.connected === false && Date.now() - this.wireDownSince < OUTAGE_SLACK_MS) for (const w of this.groups.values()) w.wireBack()
          for (const group of this.leaving) this.unchecked.set(group, 'drop')
          const lost = new ConnectionLost(`the connection to ${s.server} went before the server answered`)
          for (const cut of [...this.cuts]) cut(lost)
          for (const w of this.groups.values()) w.disconnected()
          for (const r of this.mirrors.values()) r.disconnected()
        } else if (s.type === 'reconnect') {
          this.connected = true
          for (const w of this.groups.values()) w.wake()
          for (const r of this.mirrors.values()) r.wake()
        }
      }
    })().catch(() => {})
  }

  private connectError(error: unknown): OrreryError {
    // Refused before connecting (one kind of connection per process: nats-connect.ts).
    if (error instanceof OrreryError) return this.redacted(error) as OrreryError
    const message = error instanceof Error ? error.message : String(error)
    const where = `nats transport ${this.transport}`
    // A page's WebSocket error carries no text: the message says so rather than ending in ': '.
    const reason = message.trim() === '' ? 'the connection was refused or closed, and no reason was given (a browser tells none for a WebSocket)' : message
    if (error instanceof this.nats.transport.errors.AuthorizationError || /authorization|authentication/i.test(message))
      return this.redacted(
        transportError('TRANSPORT_AUTH', `${where} refused the credentials: ${message}`, { cause: error, details: { transport: this.transport } }),
      ) as OrreryError
    return this.redacted(
      transportError('TRANSPORT_UNAVAILABLE', `${where} is unreachable at ${this.config.servers.map(shownUrl).join(', ')}: ${reason}`, {
        cause: error,
        details: { transport: this.transport },
      }),
    ) as OrreryError
  }

  // --- streams --------------------------------------------------------------------------------

  /** The stream configuration this process asks for `channel`. */
  private wanted(channel: string, windowMs: number | undefined): Partial<StreamConfig> {
    const keep = this.kept.get(channel)
    const maxAge = keep?.maxAgeMs
    const config: Partial<StreamConfig> = {}
    if (keep !== undefined) {
      config.max_msgs = keep.maxCount ?? -1
      config.max_age = maxAge === undefined ? 0 : ms(Math.max(100, maxAge))
      config.max_bytes = keep.maxBytes ?? -1
    }
    if (windowMs !== undefined || maxAge !== undefined) {
      // JetStream wants the dedup window within the age limit.
      let window = windowMs === undefined || windowMs === 0 ? 120_000 : Math.min(windowMs, LONGEST_WINDOW_MS)
      if (maxAge !== undefined) window = Math.min(window, Math.max(100, maxAge))
      config.duplicate_window = ms(window)
    }
    return config
  }

  /**
   * Makes `channel`'s stream if it does not exist, and sets what this process asks of it
   * (retention, the dedup window `windowMs`) when that changed. Another process's settings
   * stay unless this one set its own.
   */
  ensureStream(channel: string, windowMs?: number): Promise<void> {
    const known = this.streams.get(channel)
    const keep = this.kept.get(channel)
    const windowChanged = windowMs !== undefined && windowMs !== 0 && known?.windowMs !== windowMs
    if (known !== undefined && !windowChanged && known.retention === keep) return known.ready
    const entry = {
      windowMs: windowChanged ? windowMs : known?.windowMs,
      retention: keep,
      ready: Promise.resolve(),
    }
    const previous = known?.ready.catch(() => {}) ?? Promise.resolve()
    entry.ready = previous.then(() => this.uncut(this.syncStream(channel, entry.windowMs, known === undefined)))
    this.streams.set(channel, entry)
    entry.ready.catch(() => {
      if (this.streams.get(channel) === entry) this.streams.delete(channel)
    })
    return entry.ready
  }

  /** @internal The stream may be gone: the next use makes it again. */
  forgetStream(channel: string): void {
    this.streams.delete(channel)
  }

  /**
   * @internal When `channel`'s stream was made (undefined: it does not exist). A stream made again
   * (the server lost its data, or someone deleted it) has a new time and numbers its messages from 1
   * again: a reader that goes on after the last sequence it read of the old one would skip them.
   */
  async streamCreated(channel: string): Promise<string | undefined> {
    const info = await this.uncut(this.manager().streams.info(this.streamOf(channel))).catch((error: unknown) => {
      if (this.isNotFound(error)) return undefined
      throw error
    })
    return info?.created
  }

  /** @internal Holds back answers to `group`'s deliveries until `checked` (see `unchecked`). */
  uncheck(group: number): void {
    if (!this.unchecked.has(group)) this.unchecked.set(group, [])
  }

  /** @internal `group`'s reader has looked at its stream: the answers held back go now. */
  checked(group: number): void {
    const waiting = this.unchecked.get(group)
    if (waiting === undefined) return
    this.unchecked.delete(group)
    if (waiting !== 'drop' && waiting.length > 0 && !this.closed) this.write(waiting).catch((error: unknown) => this.sink.failed(error))
  }

  /**
   * @internal `group`'s reader stopped without having looked at its stream again: what it holds
   * is answered no more. Each answer fails as a write the server never took (after
   * `publishTimeoutMs`), and each delivery comes back to the group after its ack_wait.
   */
  uncheckedForGood(group: number): void {
    if (this.unchecked.has(group)) this.unchecked.set(group, 'drop')
  }

  /**
   * Whether `record` answers a held delivery of a group whose answers are held back: then it
   * waits with them. Throws (a write to try again) once they are answered no more.
   */
  private heldBack(record: Egress): boolean {
    if (record.kind !== 'ack' && record.kind !== 'release' && record.kind !== 'dead') return false
    const waiting = this.unchecked.get(record.group.id)
    if (waiting === undefined || this.core?.at(record.group.id, record.position) !== undefined) return false
    if (waiting === 'drop') throw new Error(`group ${record.group.name} stopped before its stream was looked at again after a disconnect`)
    waiting.push(record)
    return true
  }

  /** @internal Forgets the deliveries held for `group` (its consumer is gone: they can no longer be answered). */
  dropHeld(group: number): void {
    for (const m of this.held.get(group)?.values() ?? []) m.forget?.()
    this.held.delete(group)
  }

  private async syncStream(channel: string, windowMs: number | undefined, first: boolean): Promise<void> {
    const jsm = this.manager()
    const name = this.streamOf(channel)
    const want = this.wanted(channel, windowMs)
    let info = await jsm.streams.info(name).catch((error: unknown) => {
      if (this.isNotFound(error)) return undefined
      throw error
    })
    if (info === undefined) {
      try {
        await jsm.streams.add({
          name,
          subjects: [this.subjectOf(channel)],
          storage: this.nats.jetstream.StorageType.File,
          discard: this.nats.jetstream.DiscardPolicy.Old,
          ...want,
        })
        return
      } catch (error) {
        // Another process made it meanwhile; if not, the add's refusal is the reason (another
        // stream holding the channel's subject, limits of the account), not "no such stream",
        // which would read as a stream gone and be asked again for ever.
        info = await jsm.streams.info(name).catch((lookup: unknown) => {
          throw this.isNotFound(lookup) ? error : lookup
        })
      }
    }
    if (first && this.kept.get(channel) === undefined && windowMs === undefined) return
    const current = info.config as unknown as Record<string, unknown>
    const changes = Object.entries(want).filter(([k, v]) => current[k] !== v)
    if (changes.length === 0) return
    await jsm.streams.update(name, { ...info.config, ...want })
  }

  private manager(): JetStreamManager {
    if (this.jsm === undefined || this.closed) throw transportError('CLOSED', `transport ${this.transport} is closed`)
    return this.jsm
  }

  private pubAcks(): PubAcks {
    if (this.acks === undefined || this.closed) throw transportError('CLOSED', `transport ${this.transport} is closed`)
    return this.acks
  }

  /** @internal */
  client(): JetStreamClient {
    if (this.js === undefined || this.closed) throw transportError('CLOSED', `transport ${this.transport} is closed`)
    return this.js
  }

  /** @internal The connection (a strong namespace sends its atomic batches on it). */
  connectionOf(): NatsConnection {
    if (this.nc === undefined || this.closed) throw transportError('CLOSED', `transport ${this.transport} is closed`)
    return this.nc
  }

  /** @internal */
  managerOf(): JetStreamManager {
    return this.manager()
  }

  /** Whether the server says a stream does not exist. */
  private isStreamGone(error: unknown): boolean {
    const { JetStreamApiError, JetStreamApiCodes } = this.nats.jetstream
    return error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound
  }

  /** @internal Whether the server says a stream or consumer does not exist. */
  isNotFound(error: unknown): boolean {
    const { JetStreamApiError, JetStreamApiCodes } = this.nats.jetstream
    return error instanceof JetStreamApiError && (error.code === JetStreamApiCodes.StreamNotFound || error.code === JetStreamApiCodes.ConsumerNotFound)
  }

  /** @internal Whether the server refused a request (not a lost connection or a timeout, which are tried again). */
  isServerError(error: unknown): boolean {
    return error instanceof this.nats.jetstream.JetStreamApiError
  }

  // --- writes -------------------------------------------------------------------------------

  write(records: readonly Egress[]): Promise<number> {
    if (this.closed) return Promise.reject(transportError('CLOSED', 'this Orrery is closed'))
    // The server drops the connection's publish of a payload over its max_payload: such a write
    // would only wait out publishTimeoutMs. It is refused whole, before any of it is sent.
    for (const record of records) {
      const refusal =
        record.kind === 'publish'
          ? this.tooLarge(
              record.channel,
              record.frame.length,
              (record.dedupWindowMs > 0 ? frameIdHex(record.frame).length + 'Nats-Msg-Id: \r\n'.length : 0) + this.signatureLine,
            )
          : record.kind === 'request'
            ? this.core !== undefined
              ? this.tooLarge(record.channel, record.frame.length, this.signatureLine + DELIVERED_HEADER_BYTES, undefined, this.core.routeBytes(record.replyTo))
              : this.tooLarge(record.channel, record.frame.length, this.requestHeaderBytes(record.replyTo, record.timeoutMs) + this.signatureLine)
            : undefined
      if (refusal !== undefined) return Promise.reject(refusal)
    }
    const fitted = this.fitReplies(records)
    // Core publishes only (replies; requests with `requests: 'core'`) with nothing queued before
    // them: handed to the connection now, as the queue would, without its round of promises.
    if (!this.inFlight && this.queue.length === 0 && fitted.every((r) => r.kind === 'reply' || (r.kind === 'request' && this.core !== undefined))) {
      try {
        for (const record of fitted) this.sendCore(record)
      } catch (error) {
        return Promise.reject(error instanceof OrreryError ? error : this.refused(error))
      }
      return Promise.resolve(0)
    }
    if (!this.inFlight && this.queue.length === 0 && fitted.every((r) => r.kind === 'ack')) return this.ackNow(fitted as readonly AckEgress[])
    return this.enqueue(fitted)
  }

  /** Queues records to be written in order, each tried again until it is written or refused. */
  private enqueue(records: readonly Egress[]): Promise<number> {
    const { write, written } = this.writes.add(records, this.config.publishTimeoutMs, () =>
      transportError('TRANSPORT_UNAVAILABLE', this.timeoutMessage(), { details: { transport: this.transport } }),
    )
    markers.hold(write, this.streamKeyOf)
    this.queue.push(write)
    this.pump()
    return written
  }

  /** The channel whose stream a record is stored in (none for what is not stored: an ack, a core request, a reply). */
  private channelOf(r: Egress): string | undefined {
    return r.kind === 'publish' || (r.kind === 'request' && this.core === undefined) ? r.channel : r.kind === 'dead' ? r.deadLetter : undefined
  }

  /** The key of the markers a record waits for (see `Markers`): its stream's. */
  private readonly streamKeyOf = (r: Egress): string | undefined => {
    const channel = this.channelOf(r)
    return channel === undefined ? undefined : this.markerKey(channel)
  }

  /**
   * Acks with nothing queued before them: each answered now and all of them waited for with one
   * round trip, as the queue would, without its promises for each record (a consumer's turn
   * acks hundreds). Each delivery stays held until the server has read its ack. If that fails
   * (the connection went: nats.js drops what it had not sent), they go through the queue, which
   * sends them again once it can; the server ignores a second ack. `flushed` waits for them as
   * for queued writes; once the driver closed they fail CLOSED.
   */
  private ackNow(records: readonly AckEgress[]): Promise<number> {
    const answered: Array<[Map<string, Held>, string, Held]> = []
    try {
      for (const r of records) {
        if (this.heldBack(r) || this.core?.take(r.group.id, r.position) !== undefined) continue
        const held = this.held.get(r.group.id)
        const m = held?.get(r.position)
        if (m === undefined) continue
        m.ack()
        answered.push([held!, r.position, m])
      }
    } catch {
      return this.enqueue(records)
    }
    if (answered.length === 0) return Promise.resolve(0)
    const written = this.serverRead().then(
      () => {
        for (const [held, position, m] of answered) settled(held, position, m)
        return 0
      },
      (error: unknown) =>
        this.closed ? Promise.reject(transportError('CLOSED', `transport ${this.transport} is closed`, { cause: error })) : this.enqueue(records),
    )
    return this.writes.track(written)
  }

  /**
   * A reply over the server's max_payload cannot be sent, and its requester would wait out its
   * timeout: an error reply goes in its place (MESSAGE_TOO_LARGE naming the size and the limit, as
   * a handler error's reply would carry it), so the request fails at once, and the responder's
   * process reports it as a transport-error.
   */
  private fitReplies(records: readonly Egress[]): readonly Egress[] {
    let fitted: Egress[] | undefined
    records.forEach((record, i) => {
      if (record.kind !== 'reply') return
      const error = this.tooLarge(record.channel, record.frame.length, this.signatureLine, 'a reply on')
      if (error === undefined) return
      fitted ??= records.slice()
      fitted[i] = { ...record, frame: errorReply(record.frame, error) }
      this.sink.failed(error)
    })
    return fitted ?? records
  }

  /** The headers of a signed record (undefined unsigned), with its signature as written now. */
  private signed(record: Egress): ReturnType<NatsModules['transport']['headers']> | undefined {
    if (this.signing === undefined) return undefined
    const h = this.nats.transport.headers()
    h.set(SIGNATURE, this.signing.sign(record))
    return h
  }

  /** The bytes of a request's header lines (`<name>: <value>\r\n` each). */
  private requestHeaderBytes(replyTo: string, timeoutMs: number): number {
    return `${REPLY_TO}: ${replyTo}\r\n${TIMEOUT}: ${String(timeoutMs)}\r\n`.length
  }

  refusal(channel: string, frameBytes: number): OrreryError | undefined {
    // With the fewest headers a publish carries (a signature's, if signed; no Nats-Msg-Id): over
    // the limit so, it is over it however it is sent. One within a dedup header of the limit is
    // refused by `write`, which knows the channel's dedup window.
    return this.tooLarge(channel, frameBytes, this.signatureLine)
  }

  /**
   * MESSAGE_TOO_LARGE if a frame of `frameBytes`, with `headerLines` bytes of header lines (0:
   * none) and `ahead` bytes before it in the payload (a core request's route), is over the
   * max_payload the server announced (1 MB unless the server is set otherwise); undefined if it fits.
   */
  private tooLarge(channel: string, frameBytes: number, headerLines: number, what = 'a message to', ahead = 0): OrreryError | undefined {
    const limit = this.nc?.info?.max_payload
    if (limit === undefined || limit <= 0) return undefined
    // nats.js counts the headers in the payload: `NATS/1.0\r\n<lines>\r\n`.
    const bytes = ahead + frameBytes + (headerLines > 0 ? 'NATS/1.0\r\n\r\n'.length + headerLines : 0)
    if (bytes <= limit) return undefined
    return new OrreryError(
      'MESSAGE_TOO_LARGE',
      `${what} channel ${channel} is ${bytes} bytes, over the limit of ${limit} bytes of nats transport ${this.transport}: ` +
        "the server's max_payload is the limit on this transport (below maxMessageBytes unless the server raises it)",
      { details: { transport: this.transport, channel, bytes, limit } },
    )
  }

  private timeoutMessage(): string {
    return `nats transport ${this.transport} did not take the write within publishTimeoutMs (${this.config.publishTimeoutMs} ms)`
  }

  /**
   * Sends every queued write at once, in order (each publish is a request on the one connection:
   * JetStream stores them in the order sent). A record whose answer did not come (a lost
   * connection, a timeout) is sent again, before anything later; one the server refused fails its write.
   */
  private pump(): void {
    if (this.inFlight || this.queue.length === 0 || this.closed) return
    this.inFlight = true
    // Up to the first write still held by a marker (or that one alone, which waits for it).
    const batch = this.queue.splice(0, Math.max(1, sendable(this.queue)))
    for (const write of batch) write.sent = true
    void this.prepare(batch)
      .then(() => Promise.all(batch.map((write) => (write.settled ? [] : this.sendAll(write.records, write.deadline)))))
      .then(
        (results) => this.settle(batch, results),
        (error: unknown) => this.settle(batch, undefined, error),
      )
  }

  /** Streams made and set up, and the markers its writes were made after waited for (see `Markers.hold`), before a batch is sent. */
  private async prepare(batch: readonly PendingWrite[]): Promise<void> {
    const streams = new Map<string, number | undefined>()
    for (const write of batch) {
      if (write.settled) continue
      for (const r of write.records) {
        const channel = this.channelOf(r)
        if (channel === undefined) continue
        const window = r.kind === 'publish' && r.dedupWindowMs > 0 ? r.dedupWindowMs : undefined
        if (!streams.has(channel) || window !== undefined) streams.set(channel, window ?? streams.get(channel))
      }
    }
    const held = heldBy(batch)
    await Promise.all([...streams].map(([channel, window]) => this.ensureStream(channel, window)))
    if (held !== undefined) await held
  }

  private settle(batch: readonly PendingWrite[], results: Outcome[][] | undefined, failure?: unknown): void {
    this.inFlight = false
    const retry: PendingWrite[] = []
    batch.forEach((write, i) => {
      if (write.settled) return
      const outcome = results?.[i]
      if (outcome === undefined) {
        // The streams could not be set up: a refusal fails the write, anything else is tried again.
        if (this.isServerError(failure)) this.writes.fail(write, this.refused(failure))
        else retry.push(write)
        return
      }
      const again: Egress[] = []
      outcome.forEach((r, k) => {
        if (!(r instanceof Failed)) {
          if (r) write.duplicates++
        } else if (this.isServerError(r.reason)) this.writes.fail(write, this.refused(r.reason))
        else if (isNoStream(r.reason)) {
          // No stream listens on the subject: the server came back without it (its data lost, or
          // the stream deleted). It is made again before the record is sent again.
          const record = write.records[k]!
          const channel = record.kind === 'publish' || record.kind === 'request' ? record.channel : record.kind === 'dead' ? record.deadLetter : undefined
          if (channel !== undefined) this.forgetStream(channel)
          again.push(record)
        } else if (r.reason instanceof this.nats.transport.errors.InvalidArgumentError) {
          // nats.js refused it before sending (a payload over max_payload): sending again never helps.
          const record = write.records[k]!
          const frame = record.kind === 'publish' || record.kind === 'dead' || record.kind === 'request' ? record : undefined
          const channel = record.kind === 'dead' ? record.deadLetter : 'channel' in record ? record.channel : ''
          this.writes.fail(write, (frame && this.tooLarge(channel, frame.frame.length, 1)) ?? this.refused(r.reason))
        } else again.push(write.records[k]!)
      })
      if (write.settled) return
      if (again.length === 0) {
        this.writes.succeed(write)
        return
      }
      write.records = again
      retry.push(write)
    })
    if (retry.length > 0) {
      this.queue.unshift(...retry)
      setTimeout(() => this.pump(), RETRY_MS)
    } else this.pump()
  }

  private refused(error: unknown): OrreryError {
    const message = error instanceof Error ? error.message : String(error)
    return this.redacted(
      transportError('TRANSPORT_UNAVAILABLE', `nats transport ${this.transport} refused a write: ${message}`, {
        cause: error,
        details: { transport: this.transport },
      }),
    ) as OrreryError
  }

  /**
   * Sends a write's records; resolves, once each has its answer, with their outcomes. Publishes
   * (most of what is written) report to one sink, not a promise each: a promise, an async call and
   * an `allSettled` entry for every publish were a third of what a publish allocated.
   */
  private sendAll(records: readonly Egress[], deadline: number): Promise<Outcome[]> {
    const n = records.length
    if (n === 0) return Promise.resolve([])
    return new Promise<Outcome[]>((resolve) => {
      const outcomes = new Array<Outcome>(n)
      let remaining = n
      const sink: AckSink = {
        answer(k, duplicate, error) {
          outcomes[k] = error === undefined ? duplicate : new Failed(error)
          if (--remaining === 0) resolve(outcomes)
        },
      }
      for (let k = 0; k < n; k++) {
        const record = records[k]!
        if (record.kind === 'publish') this.publish(record, deadline, sink, k)
        else
          this.send(record, deadline).then(
            (duplicate) => sink.answer(k, duplicate),
            (error: unknown) => sink.answer(k, false, error),
          )
      }
    })
  }

  /** A publish, its answer (whether the stream dropped it as a duplicate) to `sink` as record `k`. */
  private publish(record: PublishEgress, deadline: number, sink: AckSink, k: number): void {
    try {
      const timeout = Math.max(100, Math.min(PUBLISH_ATTEMPT_MS, deadline - Date.now()))
      // Signed at each attempt: a publish sent again after an outage carries the time it is sent.
      let headers = this.signed(record)
      if (record.dedupWindowMs > 0) {
        headers ??= this.nats.transport.headers()
        headers.set(MSG_ID, frameIdHex(record.frame))
      }
      this.pubAcks().publishTo(this.subjectOf(record.channel), record.frame, headers, timeout, sink, k)
    } catch (error) {
      sink.answer(k, false, error)
    }
  }

  /** Any record but a publish: resolves to false (no duplicate). */
  private async send(record: Exclude<Egress, PublishEgress>, deadline: number): Promise<boolean> {
    if (this.heldBack(record)) return false
    const js = this.client()
    const timeout = Math.max(100, Math.min(PUBLISH_ATTEMPT_MS, deadline - Date.now()))
    switch (record.kind) {
      case 'request': {
        if (this.core !== undefined) {
          this.sendCore(record)
          return false
        }
        const h = this.signed(record) ?? this.nats.transport.headers()
        h.set(REPLY_TO, record.replyTo)
        h.set(TIMEOUT, String(record.timeoutMs))
        await this.pubAcks().publish(this.subjectOf(record.channel), record.frame, h, timeout)
        return false
      }
      case 'reply':
        this.sendCore(record)
        return false
      case 'ack':
        if (this.core?.take(record.group.id, record.position) !== undefined) return false
        return this.settleHeld(record.group.id, record.position, (m) => m.ack())
      case 'release':
        if (this.core?.at(record.group.id, record.position) !== undefined) {
          this.core.release(record.group.id, record.position, record.delayMs, this.signAgain)
          return false
        }
        return this.settleHeld(record.group.id, record.position, (m) => m.nak(record.delayMs > 0 ? Math.ceil(record.delayMs) : undefined))
      case 'dead': {
        const group = record.group.id
        this.deadLettering.set(group, (this.deadLettering.get(group) ?? 0) + 1)
        try {
          return await this.deadLetter(record, js, timeout)
        } finally {
          const left = this.deadLettering.get(group)! - 1
          if (left === 0) this.deadLettering.delete(group)
          else this.deadLettering.set(group, left)
        }
      }
    }
  }

  /** Signs a core request sent again (`attempt`: its delivery count so far); undefined unsigned. */
  private readonly signAgain = (record: Egress, attempt: number): string | undefined => this.signing?.sign(record, Date.now(), attempt)

  /** Writes a dead letter, then answers its delivery (term; a core request is forgotten). */
  private async deadLetter(record: Extract<Egress, { kind: 'dead' }>, js: JetStreamClient, timeout: number): Promise<boolean> {
    const request = this.core?.at(record.group.id, record.position)
    if (request !== undefined) {
      // Written once however often it is sent (a write tried again after an outage); held until then.
      await js.publish(this.subjectOf(record.deadLetter), record.frame, {
        msgID: `dl:rq:${frameIdHex(request.frame)}:${request.count}`,
        timeout,
        ...(this.signing === undefined ? {} : { headers: this.signed(record)! }),
      })
      this.core!.take(record.group.id, record.position)
      return false
    }
    const m = this.held.get(record.group.id)?.get(record.position)
    if (m === undefined) return false
    // The id makes two processes dead-lettering the same delivery write it once (the stream
    // time tells a stream made again, which numbers from 1 again, from the old one).
    await js.publish(this.subjectOf(record.deadLetter), record.frame, {
      msgID: `dl:${this.streamOf(record.group.channel)}:${m.seq}:${m.info.timestampNanos}`,
      timeout,
      ...(this.signing === undefined ? {} : { headers: this.signed(record)! }),
    })
    return this.settleHeld(record.group.id, record.position, (msg) => msg.term())
  }

  /**
   * Sends a reply, or a request with `requests: 'core'`: a core publish, not stored by the server
   * (a requester or responder that is gone misses it, as it would miss it anyway).
   */
  private sendCore(record: Egress): void {
    if (record.kind === 'request') {
      this.core!.send(record, this.signing?.sign(record))
      return
    }
    if (record.kind !== 'reply') throw new OrreryError('INTERNAL', `a ${record.kind} record is no core publish`)
    const nc = this.nc
    if (nc === undefined) throw transportError('CLOSED', 'this Orrery is closed')
    const headers = this.signed(record)
    nc.publish(this.replySubject(record.address), record.frame, headers === undefined ? undefined : { headers })
  }

  /**
   * Answers a held delivery, then waits until the server has read the answer. The delivery stays
   * held until then: nats.js drops what it had not sent when the connection goes, so an answer
   * lost that way is sent again when the record is (the server ignores a second one).
   */
  private async settleHeld(group: number, position: string, answer: (m: Held) => void): Promise<boolean> {
    const held = this.held.get(group)
    const m = held?.get(position)
    if (m === undefined) return false
    answer(m)
    await this.serverRead()
    settled(held!, position, m)
    return false
  }

  /** Resolves once the server has read everything sent so far: one round trip for every answer sent in this turn. */
  private serverRead(): Promise<void> {
    this.reading ??= Promise.resolve().then(() => {
      this.reading = undefined
      const nc = this.nc
      if (nc === undefined) throw transportError('CLOSED', `transport ${this.transport} is closed`)
      return this.wire === undefined ? nc.flush() : Promise.all([nc.flush(), this.wire.settled()]).then(() => {})
    })
    return this.reading
  }

  /**
   * @internal A delivery read for `group`: kept for its answer. `remade` counts the times the
   * group's stream was made again while this process read it.
   */
  hold(group: number, m: Held, remade: number): string {
    let held = this.held.get(group)
    if (held === undefined) {
      held = new Map()
      this.held.set(group, held)
    }
    // The stream sequence and the delivery count: an answer meant for one delivery never reaches a
    // later one. A stream made again numbers from 1 again: its deliveries are told from the old
    // stream's (which the core may still hold, and whose answers must not reach them) by `@remade`.
    const suffix = remade === 0 ? '' : `@${remade}`
    const count = m.info.deliveryCount
    // The server delivers a message again only once no answer to the earlier delivery reached it:
    // what is still held of that one (a dead letter the server refused, say) can settle nothing more.
    for (let k = 1; k < count; k++) {
      const before = `${m.seq}:${k}${suffix}`
      held.get(before)?.forget?.()
      held.delete(before)
    }
    const position = `${m.seq}:${count}${suffix}`
    // One at the same position came from the group's consumer before the server lost it and it was
    // made again: the new consumer delivered it again, and answers go to this delivery now.
    const before = held.get(position)
    if (before !== undefined && before !== m) before.forget?.()
    held.set(position, m)
    return position
  }

  catchUp(channel: ChannelRef, start: () => void, failed: (error: unknown) => void): () => void {
    const reader = this.mirrors.get(channel.id)
    if (reader === undefined) throw new OrreryError('INTERNAL', `no mirror of ${channel.name} to catch up with`)
    const stream = this.streamOf(channel.name)
    // The stream's last sequence as the broker sees it once the publishes to it this process made
    // before this call are written (they land before it). Publishes of this process made after
    // this call wait for the answer (see `markers`), so they land after it. Asked again after a
    // dropped connection, as the mirror's reads are (the subscriber starts once it is answered).
    const key = this.markerKey(channel.name)
    const earlier = markers.earlier(key) ?? Promise.resolve()
    return catchUpWith(
      // Asked once this process's earlier writes to the stream settled and the mirror's first look is answered (see `looked`), unless the subscription went meanwhile.
      (cancelled) =>
        earlier
          .then(() =>
            reader.looked.after(
              () =>
                this.answered(
                  channel.name,
                  () => this.ensureStream(channel.name).then(() => this.manager().streams.info(stream)),
                  () => cancelled() || reader.isStopped,
                ),
              cancelled,
            ),
          )
          .then((info) => ({ seq: info.state.last_seq, created: info.created })),
      (marker) => markers.add(key, marker),
      (marker) => reader.catchUp(marker, start, failed),
    )
  }

  /** The key of `channel`'s stream in `markers`. */
  private markerKey(channel: string): string {
    return `${this.serverKey}\u0000${this.streamOf(channel)}`
  }

  retention(channel: string, retention: BrokerRetention): void {
    this.kept.set(channel, retention)
    if (!this.closed && this.jsm !== undefined) this.ensureStream(channel).catch((error: unknown) => this.sink.failed(error))
  }

  stopping(): void {
    this.writes.watch()
  }

  async flushed(): Promise<void> {
    await this.writes.settled()
    const lost = this.writes.lost()
    if (lost !== undefined) throw lost
  }

  /** The core subject of reply address `address` (16 hex digits: a valid subject token), kept for the next reply. */
  private replySubject(address: string): string {
    let subject = this.replySubjects.get(address)
    if (subject === undefined) {
      // Requesters come and go: the kept subjects start over past a bound.
      if (this.replySubjects.size >= MAX_REPLY_SUBJECTS) this.replySubjects.clear()
      subject = `${this.config.prefix}.reply.${brokerName(address)}`
      this.replySubjects.set(address, subject)
    }
    return subject
  }

  openReplies(address: string): Promise<void> {
    this.listening ??= this.listen(address).catch((error: unknown) => {
      this.listening = undefined
      throw error
    })
    return this.listening
  }

  /**
   * Subscribes to `address` (nats.js subscribes again after a reconnect); resolves once the server
   * has it. While the connection is down the server's answer waits, as a publish does, at most
   * publishTimeoutMs: then TRANSPORT_UNAVAILABLE, and the subscription is dropped (the next
   * request makes it again).
   */
  private async listen(address: string): Promise<void> {
    const nc = this.nc
    if (nc === undefined || this.closed) throw transportError('CLOSED', 'this Orrery is closed', { details: { transport: this.transport } })
    const writer = new IngestWriter()
    const sub = nc.subscribe(this.replySubject(address), {
      callback: (error, m) => {
        if (error !== null || this.closed) return
        if (this.signing !== undefined && !this.signing.acceptReply(m.headers?.get(SIGNATURE) || undefined, address, m.data)) return
        writer.replied(m.data)
        const batch = writer.take()
        if (batch !== undefined) this.sink.ingest(batch)
      },
    })
    try {
      await this.registered("this process's reply subscription")
    } catch (error) {
      sub.unsubscribe()
      throw error
    }
  }

  /**
   * Resolves once the server has every subscription made so far. While the connection is down the
   * server's answer waits, as a publish does, at most publishTimeoutMs: then TRANSPORT_UNAVAILABLE
   * (`what` names the subscription); the caller decides whether the subscription stays.
   */
  private async registered(what: string): Promise<void> {
    const nc = this.nc
    if (nc === undefined || this.closed) throw transportError('CLOSED', 'this Orrery is closed', { details: { transport: this.transport } })
    const deadline = Date.now() + this.config.publishTimeoutMs
    for (;;) {
      let timer: ReturnType<typeof setTimeout> | undefined
      try {
        // nats.js rejects a flush pending when the connection drops ("connection disconnected");
        // one sent while it is down waits for the reconnect.
        await Promise.race([
          nc.flush(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error('no answer')), Math.max(0, deadline - Date.now()))
          }),
        ])
        return
      } catch (error) {
        if (this.closed) throw transportError('CLOSED', 'this Orrery is closed', { cause: error, details: { transport: this.transport } })
        if (Date.now() >= deadline) {
          throw transportError(
            'TRANSPORT_UNAVAILABLE',
            `nats transport ${this.transport} did not take ${what} within publishTimeoutMs (${this.config.publishTimeoutMs} ms): ${error instanceof Error ? error.message : String(error)}`,
            { cause: error, details: { transport: this.transport } },
          )
        }
        await new Promise((r) => setTimeout(r, RETRY_MS))
      } finally {
        clearTimeout(timer)
      }
    }
  }

  // --- readers ------------------------------------------------------------------------------

  openMirror(channel: ChannelRef, bound: HistoryBound): Promise<void> {
    const existing = this.mirrors.get(channel.id)
    if (existing) return existing.ready
    const reader = new MirrorReader(this, channel, bound)
    this.mirrors.set(channel.id, reader)
    // A mirror whose history could not be read is forgotten: the next subscriber opens it anew.
    reader.ready.catch(() => {
      if (this.mirrors.get(channel.id) === reader) this.mirrors.delete(channel.id)
      reader.stop()
    })
    return this.core === undefined ? reader.ready : Promise.all([reader.ready, this.core.follow(channel)]).then(() => {})
  }

  async openGroup(group: GroupRef): Promise<void> {
    if (this.groups.has(group.id)) return
    const reader = new GroupReader(this, group)
    this.groups.set(group.id, reader)
    const stopped = () => this.closed || reader.isStopped || this.groups.get(group.id) !== reader
    // Its consumer is asked again after a dropped connection (as a Redis client sends its commands
    // again), so publishes still wait for a group from 'latest' then (see `GroupStarts`).
    const open = () =>
      this.answered(
        group.channel,
        () =>
          this.ensureStream(group.channel)
            .then(() => this.ensureConsumer(group))
            .then((floor) => {
              reader.floor = floor
              return this.streamCreated(group.channel)
            })
            .then((created) => {
              reader.created = created
            }),
        stopped,
      )
    const made = this.starts.make(group, this.markerKey(group.channel), open, stopped)
    try {
      await made
    } catch (error) {
      // Deleted, stopped or closed while it opened: nothing to report.
      const quiet = stopped()
      if (this.groups.get(group.id) === reader) {
        this.groups.delete(group.id)
        // Nothing was read: nothing to hold back (a disconnect while it opened may have begun to).
        this.unchecked.delete(group.id)
      }
      if (quiet) return
      throw error
    }
    if (this.groups.get(group.id) !== reader) return
    reader.start()
    await this.core?.serve(group)
  }

  /**
   * Makes the group's durable consumer if it does not exist; sets its ack wait to this process's
   * threshold if it differs; resolves to its ack floor (the stream sequence up to which every
   * message is acked). One made again after the server lost it (or someone deleted it) starts
   * after `after` (see `GroupReader.resumeAfter`: no later than the first message not known to be
   * acked) instead of where the group started; on a stream made again (`newStream`: its numbers
   * start over, and all it holds came after the loss) at its start.
   */
  async ensureConsumer(group: GroupRef, after?: number, newStream = false): Promise<number> {
    const { AckPolicy, DeliverPolicy } = this.nats.jetstream
    const jsm = this.manager()
    const stream = this.streamOf(group.channel)
    const name = brokerName(group.name)
    const ackWait = ms(threshold(group))
    const start = newStream
      ? { deliver_policy: DeliverPolicy.All }
      : after !== undefined
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 }
        : group.start.at === 'latest'
          ? { deliver_policy: DeliverPolicy.New }
          : group.start.at === 'earliest'
            ? { deliver_policy: DeliverPolicy.All }
            : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(Math.max(0, group.start.time)).toISOString() }
    const existing = await jsm.consumers.info(stream, name).catch((error: unknown) => {
      if (this.isNotFound(error)) return undefined
      throw error
    })
    if (existing === undefined) {
      try {
        const made = await jsm.consumers.add(stream, {
          durable_name: name,
          ack_policy: AckPolicy.Explicit,
          ack_wait: ackWait,
          // The core dead-letters by the delivery count; the broker never gives up on its own.
          max_deliver: -1,
          // Every process's members together may hold any number.
          max_ack_pending: -1,
          ...start,
        })
        return made.ack_floor.stream_seq
      } catch (error) {
        // Another process made it meanwhile (with its own settings): use it.
        if (!this.isServerError(error)) throw error
      }
    }
    const info = existing ?? (await jsm.consumers.info(stream, name))
    if (info.config.ack_wait !== ackWait) await jsm.consumers.update(stream, name, { ack_wait: ackWait })
    return info.ack_floor.stream_seq
  }

  /** @internal The ack floor of `group`'s consumer now (see `ensureConsumer`). */
  async ackFloor(group: GroupRef): Promise<number> {
    return (await this.manager().consumers.info(this.streamOf(group.channel), brokerName(group.name))).ack_floor.stream_seq
  }

  /** @internal The lowest stream sequence this process holds unanswered of `group` on its stream's `remade`-th making. */
  lowestHeld(group: number, remade: number): number | undefined {
    let lowest: number | undefined
    const suffix = `@${remade}`
    for (const [position, m] of this.held.get(group) ?? []) {
      const at = position.indexOf('@')
      if ((at === -1 ? remade !== 0 : position.slice(at) !== suffix) || (lowest !== undefined && m.seq >= lowest)) continue
      lowest = m.seq
    }
    return lowest
  }

  closeGroup(group: number): void {
    this.groups.get(group)?.close()
    this.groups.delete(group)
    this.starts.drop(group)
    this.core?.unserve(group)
    this.letGoOnceWritten(group)
  }

  /**
   * Deleted `group` answers nothing more once the writes made so far have settled, its releases
   * among them (routed by the flush after the deletion, before this looks), and once no dead
   * letter of it is being written (an attempt can outlast its write's time): what it still holds
   * then is let go, or it would be kept for good. That is a delivery its reader had read but not
   * handed to the core yet when the group went (the core drops it), and an answer that could not
   * be written (the server away until `publishTimeoutMs`). It is given back to the server at once
   * (nak) where that is safe: the connection up, and no disconnect since the stream was last
   * looked at (see `unchecked`; a disconnect meanwhile marks the group, see `leaving`);
   * otherwise the server delivers it again after its ack wait. Core requests it holds are sent
   * to the group again.
   */
  private letGoOnceWritten(group: number): void {
    this.leaving.add(group)
    const letGo = (): void => {
      void this.writes.settled().then(() => {
        if (this.deadLettering.has(group) && !this.closed) {
          setTimeout(letGo, RETRY_MS)
          return
        }
        this.leaving.delete(group)
        const safe = !this.unchecked.delete(group) && this.connected
        if (this.closed) return
        this.core?.releaseAll(group, this.signAgain)
        const held = this.held.get(group)
        if (held === undefined) return
        this.held.delete(group)
        for (const m of held.values()) {
          try {
            if (safe) m.nak()
          } catch (error) {
            this.sink.failed(error)
          }
          m.forget?.()
        }
      })
    }
    later(letGo)
  }

  wake(): void {
    for (const reader of this.groups.values()) reader.wake()
    for (const reader of this.mirrors.values()) reader.wake()
  }

  /** Groups' pulls in flight end (their room is 0 from now on) and core requests are served no more. */
  drain(): void {
    this.core?.drain()
    for (const reader of this.groups.values()) reader.wake()
  }

  /** Core requests the server may still be sending (their subscriptions draining). */
  holding(): boolean {
    return this.core?.holding === true
  }

  async stopReading(): Promise<void> {
    const all: Array<MirrorReader | GroupReader> = [...this.mirrors.values(), ...this.groups.values()]
    this.core?.stopReading()
    await Promise.all(all.map((r) => r.stopAndWait()))
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    for (const r of this.mirrors.values()) r.stop()
    for (const r of this.groups.values()) r.stop()
    this.core?.stop()
    this.queue.length = 0
    this.writes.closeAll(() => ({ transport: this.transport }))
    this.held.clear()
    // What the connection still has to send goes out first; then it closes.
    const nc = this.nc
    this.nc = undefined
    this.js = undefined
    this.jsm = undefined
    this.acks?.close(transportError('CLOSED', 'this Orrery closed before the write was made'))
    this.acks = undefined
    if (nc !== undefined) void nc.drain().catch(() => nc.close().catch(() => {}))
    this.wire?.close()
    this.wire = undefined
  }

  /** @internal For readers. */
  get isClosed(): boolean {
    return this.closed
  }

  /** @internal Whether the connection is up (a mirror's reader pulls only then). */
  get isConnected(): boolean {
    return this.connected
  }

  /**
   * The wire's connection went or came back (its pulls went with it, as the connection's do), or
   * the server sent it an error (a refused permission, say), reported as the connection's are.
   */
  private wireEvent(event: string): void {
    if (this.closed) return
    try {
      if (event === 'disconnected' || event === 'closed') {
        this.wireDownSince = Date.now()
        // With the connection down too, the server went (an outage): nothing to keep away from.
        for (const w of this.groups.values()) w.wireLost(this.connected)
      } else if (event === 'connected') {
        this.wireTrouble = false
        for (const w of this.groups.values()) w.wake()
      } else if (event.startsWith('client error')) {
        // A failed attempt to connect (one every 250 ms while the server is down): the main
        // connection reports an outage itself. When the wire alone has not connected for a while
        // with the connection up (a limit of connections, say), groups do not read: said once,
        // until it connects.
        const downFor = Date.now() - this.wireDownSince
        if (this.connected && this.wire?.connected === false && !this.wireTrouble && downFor > Math.max(5_000, 2 * this.config.connectTimeoutMs)) {
          this.wireTrouble = true
          this.sink.failed(new Error(`the NATS wire cannot connect while the connection can, so groups do not read: ${event}`))
        }
      } else if (event.startsWith('server error')) {
        this.sink.failed(new Error(`the NATS wire: ${event}`))
      }
    } catch (error) {
      // Nothing may throw into the addon's callback (Node would treat it as uncaught).
      this.sink.failed(error)
    }
  }

  /**
   * @internal `answer`, or its failure once the connection goes first. A JetStream API request
   * sent before a disconnect is answered to an inbox the server forgot: nats.js would fail it only
   * after its timeout (connectTimeoutMs), and everything waiting on it would wait that long.
   */
  uncut<T>(answer: Promise<T>): Promise<T> {
    let cut: ((error: Error) => void) | undefined
    const lost = new Promise<never>((_, reject) => {
      cut = reject
      this.cuts.add(reject)
    })
    return Promise.race([answer, lost]).finally(() => this.cuts.delete(cut!))
  }

  /**
   * @internal `call` (JetStream API requests on `channel`'s stream), asked again until it is
   * answered, as a Redis read is: after a disconnect (once the connection is back), after a
   * request nats.js timed out or JetStream did not answer (a server restarting), and after the
   * stream was found gone (made again by the next `ensureStream`). Anything else (a refusal, a
   * permission violation), this transport's close, or `stopped` ends it with that error.
   */
  answered<T>(channel: string, call: () => Promise<T>, stopped: () => boolean): Promise<T> {
    return askUntilAnswered(
      {
        closed: () => this.closed,
        connected: () => this.connected,
        passing: (error) => this.isPassing(error),
        mended: (error) => {
          if (!this.isStreamGone(error)) return false
          this.forgetStream(channel)
          return true
        },
        reportAfterMs: this.config.connectTimeoutMs,
        report: (error) => this.sink.failed(error),
      },
      () => this.uncut(call()),
      stopped,
    )
  }

  /** Whether `error` is of the moment: the connection went, a request timed out, JetStream did not answer. */
  private isPassing(error: unknown): boolean {
    const { TimeoutError, RequestError } = this.nats.transport.errors
    const cause = error instanceof RequestError ? error.cause : undefined
    return (
      error instanceof ConnectionLost ||
      error instanceof TimeoutError ||
      cause instanceof TimeoutError ||
      // No answer on the API subject (nats.js names it so, and does not export its class).
      (error instanceof Error && error.name === 'JetStreamNotEnabled') ||
      (error instanceof RequestError && /connection (disconnected|closed)/.test(error.message))
    )
  }

  /** @internal The connection, for a group's own pulls. */
  connection(): NatsConnection {
    if (this.nc === undefined || this.closed) throw transportError('CLOSED', `transport ${this.transport} is closed`)
    return this.nc
  }

  /**
   * @internal The stream and subject base of the store's strong namespace `name`: `-kv-` and
   * `.kv.` where channels have `-ch-` and `.ch.`, so no channel name can reach them.
   */
  kvNamesOf(name: string): { readonly stream: string; readonly subject: string } {
    const part = brokerName(name)
    return { stream: `${this.config.prefix}-kv-${part}`, subject: `${this.config.prefix}.kv.${part}` }
  }

  /** @internal How long a write may take (the store's strong namespaces bound theirs by it). */
  get publishTimeoutMs(): number {
    return this.config.publishTimeoutMs
  }

  /** @internal The largest message the server takes (its max_payload), once connected. */
  get maxPayload(): number | undefined {
    const limit = this.nc?.info?.max_payload
    return limit === undefined || limit <= 0 ? undefined : limit
  }

  /** @internal */
  get sinkOf(): DriverSink {
    return this.sink
  }

  /** @internal How many core requests of `group` this process holds for the core's answer. */
  coreHeld(group: number): number {
    return this.core?.heldBy(group) ?? 0
  }
}

/** Where the stream stood when a `latest` subscribe reached the broker. */
interface Marker {
  /** The stream's last sequence then. */
  readonly seq: number
  /** When that stream was made (see `streamCreated`). */
  readonly created: string
}

/**
 * Follows one channel's stream into its mirror: history first, then what comes. Its consumer is an
 * ordered one of its own (ephemeral, no acks, in memory), pulled on an inbox of its own as a
 * group's is, and made again after the last sequence in the mirror whenever what it delivers may
 * have a hole: the connection went (a restarted server has lost it), a delivery sequence skipped
 * one, the server says it has no such consumer, or a pull said nothing for two heartbeats. So the
 * mirror holds each message once, in order, and reads again as soon as the server is back.
 * (nats.js's ordered consumer also makes its consumer again, but then asks the new one only for
 * what it still counted as owed by the lost one, and once that came waited for two missed
 * heartbeats before it pulled again: about 5 s after each server restart.)
 * A stream made again (the server lost its data, or it was deleted) numbers from 1 again: going on
 * after the last sequence would skip what it holds. The stream is looked at after each consumer is
 * made and before it is pulled; on a new one the mirror follows it from its start.
 */
class MirrorReader {
  readonly ready: Promise<void>
  private stopped = false
  private readonly pause = new Pause()
  /** The pull in flight. */
  private pulling: MirrorPull | undefined
  private readonly writer = new IngestWriter()
  private scheduled = false
  /** The last stream sequence added. */
  private last = 0
  /** Subscribes waiting for the mirror to reach a marker (`after`: undefined until it is known). */
  private readonly waiters = new CatchUps<Marker>()
  /** Until the history is in: the sequence it ends at, and what resolves `ready`. */
  private history: { until: number; done: () => void } | undefined
  private oldest = 0
  /** When the stream the mirror follows was made, and those it followed before. */
  private created = ''
  private readonly left = new Set<string>()
  /** The consumer pulled (undefined: none yet). */
  private consumer: string | undefined
  /** Whether `consumer` is to be made again, after `last`, before the next pull. */
  private stale = true
  /** The delivery sequence the consumer's next delivery carries. */
  private expected = 1
  /** Counts the consumers made (named `<prefix>_<n>`) and the connection's losses. */
  private made = 0
  private losses = 0
  private readonly prefix = `orrery_${Math.random().toString(36).slice(2, 10)}`

  /** The mirror's first look at the stream: markers are asked after it. */
  readonly looked = new FirstLook()

  constructor(
    private readonly driver: NatsDriver,
    private readonly channel: ChannelRef,
    private readonly bound: HistoryBound,
  ) {
    this.ready = this.open()
  }

  private get stream(): string {
    return this.driver.streamOf(this.channel.name)
  }

  get isStopped(): boolean {
    return this.stopped
  }

  private async open(): Promise<void> {
    const driver = this.driver
    const stream = this.stream
    // Asked again after a dropped connection until answered; a server refusal fails the subscribe.
    const stopped = () => this.stopped
    // Stopped meanwhile (a shutdown): nothing to open, and no subscriber's failure.
    const quiet = (error: unknown) => {
      if (this.stopped) return undefined
      throw error
    }
    const channel = this.channel.name
    const info = await driver
      .answered(channel, () => driver.ensureStream(channel).then(() => driver.managerOf().streams.info(stream)), stopped)
      .catch(quiet)
      .finally(() => this.looked.answered())
    if (info === undefined) return
    const { state } = info
    this.created = info.created
    const first = Math.max(1, state.first_seq)
    const startSeq = this.bound.maxCount > 0 ? Math.max(first, state.last_seq - this.bound.maxCount + 1) : first
    this.oldest = this.bound.maxAgeMs === Infinity ? 0 : Date.now() - this.bound.maxAgeMs
    this.last = startSeq - 1
    const inHistory = state.last_seq >= startSeq && state.messages > 0
    const history = inHistory
      ? new Promise<void>((resolve) => {
          this.history = { until: state.last_seq, done: resolve }
        })
      : undefined
    // The first consumer is made here: a stream that cannot be read fails the subscribe.
    await driver.answered(channel, () => driver.ensureStream(channel).then(() => this.renew()), stopped).catch(quiet)
    if (this.stopped) return
    void this.body().catch((error: unknown) => {
      if (!this.stopped) driver.sinkOf.failed(error)
    })
    if (history !== undefined) {
      // The last entry may have gone (its age ran out) before it was read: the stream says so.
      const check = setInterval(() => {
        if (this.history === undefined || this.stopped) return clearInterval(check)
        driver
          .managerOf()
          .streams.info(stream)
          .then((info) => {
            if (this.history !== undefined && info.created === this.created && info.state.first_seq > this.history.until) this.endHistory()
          })
          .catch(() => {})
      }, 1_000)
      await history
      clearInterval(check)
    }
    this.flush()
    this.release()
  }

  /**
   * Makes a consumer reading the stream after `last` (the one read so far is deleted, if the server
   * still has it). The stream is looked at once it is made: if that is still the stream followed,
   * so is the consumer's; if not, the mirror follows the new one from its start (`consumer` stays
   * undefined: the next turn makes one there).
   */
  private async renew(): Promise<void> {
    const driver = this.driver
    const jsm = driver.managerOf()
    const stream = this.stream
    this.drop()
    this.stale = false
    const losses = this.losses
    const { AckPolicy, DeliverPolicy } = driver.nats.jetstream
    const name = `${this.prefix}_${++this.made}`
    await driver.uncut(
      jsm.consumers.add(stream, {
        name,
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: this.last + 1,
        ack_policy: AckPolicy.None,
        max_deliver: 1,
        mem_storage: true,
        num_replicas: 1,
        // One this process could not delete (it ended, or lost the server) goes by itself.
        inactive_threshold: ms(MIRROR_INACTIVE_MS),
      }),
    )
    const created = await driver.streamCreated(this.channel.name)
    // Stopped, or the connection went meanwhile: made again on the next turn.
    if (this.stopped || losses !== this.losses || created !== this.created) void jsm.consumers.delete(stream, name).catch(() => {})
    if (this.stopped || losses !== this.losses) {
      this.stale = true
      return
    }
    if (created === this.created) {
      this.consumer = name
      this.expected = 1
      return
    }
    this.stale = true
    // Gone now: made again (ensureStream) on the next turn, and looked at then.
    if (created === undefined) return driver.forgetStream(this.channel.name)
    // Made again: all it holds came after what the mirror has; history read so far is in.
    this.left.add(this.created)
    this.created = created
    this.last = 0
    if (this.history !== undefined) this.endHistory()
    this.release()
  }

  /** Forgets the consumer pulled (deleted on the server, if it is still there). */
  private drop(): void {
    const name = this.consumer
    this.consumer = undefined
    if (name !== undefined && !this.driver.isClosed)
      void this.driver
        .managerOf()
        .consumers.delete(this.stream, name)
        .catch(() => {})
  }

  private async body(): Promise<void> {
    const driver = this.driver
    while (!this.stopped && !driver.isClosed) {
      try {
        // While the connection is down (a request then would reach the server after its inbox was
        // dropped) the reader waits to be woken.
        if (!driver.isConnected) {
          await this.pause.wait(1_000)
          continue
        }
        if (this.stale || this.consumer === undefined) {
          await driver.ensureStream(this.channel.name)
          await this.renew()
          continue
        }
        // No more than the subscribers that refuse to lose messages leave room for (see `mirrorRoom`),
        // with what the last pull brought in first (its end may still wait for `later`).
        if (this.history === undefined) this.flush()
        const room = driver.sinkOf.mirrorRoom(this.channel.id)
        if (room <= 0) {
          // Woken once they took some; at most a second later anyway.
          await this.pause.wait(1_000)
          continue
        }
        const how = await this.pull(this.consumer, Math.min(READ_COUNT, room))
        if (how !== 'over') this.stale = true
        // The server has no such consumer: made again after a pause (it may be starting).
        if (how === 'gone') await new Promise((r) => setTimeout(r, RETRY_MS))
      } catch (error) {
        if (this.stopped || driver.isClosed) break
        this.stale = true
        if (driver.isNotFound(error)) driver.forgetStream(this.channel.name)
        else if (driver.isServerError(error)) driver.sinkOf.failed(error)
        await new Promise((r) => setTimeout(r, RETRY_MS))
      }
    }
  }

  /** The connection went: the pull and the consumer with it (made again once it is back). */
  disconnected(): void {
    this.losses++
    this.stale = true
    this.pulling?.end('again')
  }

  /** The connection is back, or the subscribers' room may have grown. */
  wake(): void {
    this.pause.wake()
  }

  /**
   * Pulls at most `count` deliveries of `consumer` on an inbox of its own; resolves once the
   * pull is over: `over` (all brought, expired), or the consumer is to be made again after the last
   * sequence in the mirror (`again`: a delivery sequence skipped one, nothing heard for two
   * heartbeats, the connection gone; `gone`: the server has no such consumer, 503 or 409 Consumer
   * Deleted). A "409 Server Shutdown" does not end it: what the server still sends is read (see
   * GroupReader.pull), and the consumer is made again once the connection is back.
   */
  private pull(consumer: string, count: number): Promise<'over' | 'again' | 'gone'> {
    const nc = this.driver.connection()
    const inbox = `_INBOX.${inboxToken}.${++inboxes}`
    return new Promise((resolve) => {
      let watch: ReturnType<typeof silenceWatch> | undefined
      let sub: Subscription | undefined
      const pull: MirrorPull = {
        left: count,
        end: (how = 'over') => {
          if (this.pulling !== pull) return
          this.pulling = undefined
          watch?.stop()
          sub?.unsubscribe()
          resolve(how)
        },
      }
      // Anything heard (a delivery, a heartbeat) says the pull is alive.
      const alive = () => {
        if (watch === undefined) watch = silenceWatch(PULL_SILENT_MS, () => pull.end('again'))
        else watch.heard()
      }
      this.pulling = pull
      sub = nc.subscribe(inbox, {
        callback: (error, m) => {
          if (this.pulling !== pull) return
          // The subscription was refused (the connection reports why).
          if (error !== null) return pull.end('gone')
          const reply = m.reply
          if (reply?.startsWith('$JS.ACK.')) {
            // `$JS.ACK.<stream>.<consumer>.<delivery count>.<stream seq>.<delivery seq>.<ns>.<pending>`
            // (see `ackField`).
            const dots = ackDots(reply)
            pull.left--
            // One was lost between: read again after the last sequence in the mirror.
            if (ackField(reply, dots, 2) !== this.expected) return pull.end('again')
            this.expected++
            this.add(m, ackField(reply, dots, 1), ackField(reply, dots, 3), ackField(reply, dots, 4))
            return pull.left <= 0 ? pull.end() : alive()
          }
          const code = m.headers?.code ?? 0
          const description = m.headers?.description ?? ''
          if (code === 100 || (code === 409 && /server shutdown/i.test(description))) return alive()
          if (code === 503 || (code === 409 && /consumer deleted/i.test(description))) return pull.end('gone')
          // 408 (expired), 404, and any other 409: the pull is over; the next one follows.
          pull.end()
        },
      })
      const request = { batch: count, expires: ms(PULL_MS), idle_heartbeat: ms(PULL_HEARTBEAT_MS) }
      nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${this.stream}.${consumer}`, JSON.stringify(request), { reply: inbox })
      alive()
    })
  }

  private endHistory(): void {
    const h = this.history
    this.history = undefined
    this.flush()
    h?.done()
  }

  /** Runs `start` once every entry up to `marker` is in the mirror, and none after it; `failed` if the marker fails. */
  catchUp(marker: Promise<Marker>, start: () => void, failed: (error: unknown) => void): () => void {
    return this.waiters.add(
      marker,
      start,
      () => this.release(),
      failed,
      () => this.driver.isClosed || this.stopped,
    )
  }

  /** Whether the mirror has reached `at` (before `next`, the entry about to be added, if given). */
  private reached(at: Marker, next: number | undefined): boolean {
    // A marker on a stream the mirror has left is behind everything it reads now.
    if (this.left.has(at.created)) return true
    return at.created === this.created && (this.last >= at.seq || (next !== undefined && next > at.seq))
  }

  /**
   * Starts the waiters whose marker the mirror has reached (before `next`, the entry about to be
   * added, if given). Also while the history is read: the stream's state that history ends at may
   * have been answered after a marker (JetStream answers API requests in no set order), and this
   * process's publishes made after the marker may then be in the history: a waiter started only
   * once the history is in would miss them.
   */
  private release(next?: number): void {
    if (!this.waiters.waiting) return
    this.waiters.release(
      (after) => this.reached(after, next),
      () => this.flush(),
    )
  }

  /** Adds delivery `m`, stream sequence `seq`, stored at `nanos`, `pending` more in the stream after it. */
  private add(m: Msg, seq: number, nanos: number, pending: number): void {
    if (this.stopped) return
    if (seq <= this.last) return
    if (this.waiters.waiting) this.release(seq)
    this.last = seq
    const at = Math.floor(nanos / 1e6)
    if (at >= this.oldest) {
      const route = routeOfMsg(m)
      // A refused message (signing) is skipped: counted and reported, never in the mirror.
      const signing = this.driver.signing
      if (signing === undefined || signing.accept(m.headers?.get(SIGNATURE) || undefined, this.channel.name, route, m.data, String(seq), at))
        this.writer.live(this.channel.id, at, m.data, route)
    }
    if (this.history !== undefined && (seq >= this.history.until || pending === 0)) this.endHistory()
    else if (!this.scheduled) {
      this.scheduled = true
      later(() => {
        this.scheduled = false
        if (this.history === undefined) this.flush()
      })
    }
  }

  private flush(): void {
    const batch = this.writer.take()
    if (batch !== undefined && !this.stopped) this.driver.sinkOf.ingest(batch)
  }

  stop(): void {
    if (this.stopped) return
    this.stopped = true
    this.history?.done()
    this.history = undefined
    this.wake()
    this.pulling?.end()
    this.drop()
  }

  async stopAndWait(): Promise<void> {
    if (this.stopped) return
    this.flush()
    this.stop()
  }
}

/** One pull of a mirror's reader (see `MirrorReader.pull`). */
interface MirrorPull {
  /** How many more it may bring. */
  left: number
  /** Ends it (unsubscribed: the server drops it): `over`, or the consumer is to be made again. */
  end(how?: 'over' | 'again' | 'gone'): void
}

/** Answered delivery `m` at `position` of `held` was read by the server: let go, unless a later one took its place. */
function settled(held: Map<string, Held>, position: string, m: Held): void {
  if (held.get(position) === m) held.delete(position)
}

/** Answers `m` without waiting to hear it was read (`nak`: given back at once; `term`: never again), and lets it go. */
function answerAndLetGo(m: Held, answer: 'nak' | 'term'): void {
  if (answer === 'nak') m.nak()
  else m.term()
  m.forget?.()
}

/**
 * A delivery held for its answer: what the driver reads of it and how it answers it (a JsMsg is
 * one; a group's pull makes its own, see `GroupDelivery`).
 */
type Held = Pick<JsMsg, 'seq' | 'data' | 'headers' | 'ack' | 'nak' | 'term'> & {
  readonly info: Pick<JsMsg['info'], 'deliveryCount' | 'timestampNanos'>
  /** Lets it go: it will not be answered (again). A delivery read on the wire keeps its ack subject there until then. */
  forget?(): void
}

/**
 * A delivery of a group's pull, read from its ack subject (`$JS.ACK.<stream>.<consumer>.<delivery
 * count>.<stream seq>.<consumer seq>.<ns>.<pending>`, or with a domain and an account hash after
 * `ACK` and a token at the end) and answered on it, as JetStream's clients do. The subject is
 * read in place, not split: this runs for every delivery.
 */
class GroupDelivery implements Held {
  readonly seq: number
  readonly data: Uint8Array
  readonly headers: Held['headers']
  readonly info: Held['info']

  constructor(
    m: Msg,
    private readonly reply: string,
    private readonly nc: NatsConnection,
  ) {
    const dots = ackDots(reply)
    this.seq = ackField(reply, dots, 1)
    this.data = m.data
    this.headers = m.headers
    this.info = { deliveryCount: ackField(reply, dots, 0), timestampNanos: ackField(reply, dots, 3) }
  }

  ack(): void {
    this.nc.publish(this.reply, ACK)
  }

  nak(delayMs?: number): void {
    this.nc.publish(this.reply, delayMs ? `-NAK ${JSON.stringify({ delay: ms(delayMs) })}` : NAK)
  }

  term(): void {
    this.nc.publish(this.reply, TERM)
  }
}

/** Where the dots of the ack subject being read are (an ack subject has at most 11). */
const DOTS = new Int32Array(16)

/** Finds the dots of an ack subject (into DOTS), read in place rather than split: how many. */
function ackDots(reply: string): number {
  let dots = 0
  for (let i = reply.indexOf('.'); i !== -1 && dots < DOTS.length; i = reply.indexOf('.', i + 1)) DOTS[dots++] = i
  return dots
}

/**
 * Field `k` after the consumer name of an ack subject with `dots` dots (found by `ackDots`): 0 the
 * delivery count, 1 the stream seq, 2 the consumer seq, 3 the time in ns, 4 the pending count.
 */
function ackField(reply: string, dots: number, k: number): number {
  const at = (dots === 8 ? 4 : 6) + k
  return Number(reply.slice(DOTS[at - 1]! + 1, at < dots ? DOTS[at] : reply.length))
}

/** The answers to a delivery, encoded once (nats.js encodes a string payload at every publish). */
const answers = new TextEncoder()
const ACK = answers.encode('+ACK')
const NAK = answers.encode('-NAK')
const TERM = answers.encode('+TERM')

/** What a pull brings, on the connection or on the wire: a delivery, a status line, or its end (the wire's). */
type PullRecord = { readonly kind: 'delivery'; readonly delivery: Held } | Exclude<WireRecord, { readonly kind: 'delivery' }>

/** One pull of a group's reader, on the connection or on the wire. */
interface Pull {
  /** How many more it may bring. */
  left: number
  /** Ends it for the reader (unsubscribed: the server drops it); an error has the consumer looked up again first. */
  end(error?: unknown): void
}

/** Names each pull's inbox: `_INBOX.<this process's token>.<n>`. */
const inboxToken = `orrery_${Math.random().toString(36).slice(2, 12)}`
let inboxes = 0

/** Reads one group for this process: pulls of at most the members' room, each delivery held for its answer. */
class GroupReader {
  private stopped = false
  private loop: Promise<void> | undefined
  private readonly pause = new Pause()
  /** The pulls in flight, oldest first (at most MAX_PULLS: the next is sent while one still delivers). */
  private readonly pulls = new Set<Pull>()
  /** What ended a pull after it had resolved (the consumer is gone): the loop's to handle. */
  private lost: unknown
  /** A look at the room a turn later is scheduled (see `fit`). */
  private refitting = false
  private readonly writer = new IngestWriter()
  private scheduled = false
  private ready = true
  /** The last stream sequence read. */
  private seen = 0
  /**
   * The consumer's ack floor as last looked up (undefined: not yet): every message up to it is
   * acked. Looked up at most every FLOOR_MS while the reader reads, so a consumer made again
   * after it was lost starts no later than the first message that may still be unacked.
   */
  floor: number | undefined
  private floorAt = 0
  /** Counts the consumer's makings: a floor looked up on an earlier one is not taken. */
  private makings = 0
  /** Counts the disconnects: a look at the stream that one interrupted is made again. */
  private disconnects = 0
  /** When the stream this reader reads was made (see `streamCreated`). */
  created: string | undefined
  /** How many times the stream was made again while this reader read it. */
  private remade = 0
  private closed = false
  /** Until when (ms since the epoch) pulls go over the connection rather than the wire (see `wireLost`). */
  private connectionUntil = 0

  get isStopped(): boolean {
    return this.stopped
  }

  /** The engine's wire, if pulls go over it now. */
  private get wire(): Wire | undefined {
    return Date.now() < this.connectionUntil ? undefined : this.driver.wire
  }

  /** Whether a pull can go: the connection is up, and the wire's if pulls go over it. */
  private get canPull(): boolean {
    return this.driver.isConnected && (this.wire?.connected ?? true)
  }

  /**
   * The wire's connection went: its pulls end. Gone while the connection is up (`alone`), pulls go
   * over the connection for twice the group's threshold (past the ack wait of what it had
   * brought): async-nats drops its connection on a header it cannot parse (a value that is not
   * UTF-8, a line with no colon: other clients can write them); the server hands that message out
   * again after its ack wait, and nats.js reads it.
   */
  wireLost(alone: boolean): void {
    if (alone) this.connectionUntil = Date.now() + 2 * threshold(this.group) + 1_000
    this.disconnected()
    this.wake()
  }

  /** The wire's drop was an outage's (the connection went right after it): pulls go over the wire once it is back. */
  wireBack(): void {
    this.connectionUntil = 0
  }

  constructor(
    private readonly driver: NatsDriver,
    private readonly group: GroupRef,
  ) {}

  start(): void {
    this.loop = this.body().catch((error: unknown) => {
      if (!this.stopped) this.driver.sinkOf.failed(error)
    })
  }

  /**
   * Room may have changed. A pull that may still bring more than the members can take now (a
   * member left or paused) is ended: what they gave back must not come back here.
   */
  wake(): void {
    this.pause.wake()
    this.fit(true)
  }

  /**
   * Ends the newest pulls while what they may bring is over the members' room. Core requests in
   * members' hands come and go with every round trip: while the members have room, those held
   * count as room, or a pull would be ended and made again for every batch of requests. Members
   * with no room that hold core requests are most often busy answering them, their room back
   * within the turn: they are looked at again a turn later (`patient`) before anything is ended.
   * Members still without room then (paused) could take nothing a pull brings.
   */
  private fit(patient: boolean): void {
    if (this.pulls.size === 0) return
    const room = this.driver.sinkOf.groupRoom(this.group.id)
    const held = this.driver.coreHeld(this.group.id)
    const fits = room + (room > 0 ? held : 0)
    let left = this.left()
    if (left <= fits) return
    if (patient && room === 0 && held > 0) {
      if (!this.refitting) {
        this.refitting = true
        later(() => {
          this.refitting = false
          this.fit(false)
        })
      }
      return
    }
    for (const pull of [...this.pulls].reverse()) {
      if (left <= fits) break
      left -= pull.left
      pull.end()
    }
  }

  /** What the pulls in flight may still bring. */
  private left(): number {
    let left = 0
    for (const pull of this.pulls) left += pull.left
    return left
  }

  /**
   * The connection went: the pulls in flight went with it (the loop pulls again once it is back).
   * The server may come back without its data: the stream is looked at again before the next
   * pull, and answers to what this process holds wait until then (see `NatsDriver.unchecked`).
   */
  disconnected(): void {
    for (const pull of [...this.pulls]) pull.end()
    // A reader stopped (a shutdown under way) answers nothing more itself: its releases go as they
    // are. One not started yet holds nothing, and its opening looks at the stream anyway.
    if (this.stopped || this.loop === undefined) return
    this.disconnects++
    this.ready = false
    this.driver.uncheck(this.group.id)
  }

  private async body(): Promise<void> {
    const driver = this.driver
    const stream = driver.streamOf(this.group.channel)
    const name = brokerName(this.group.name)
    while (!this.stopped && !driver.isClosed) {
      try {
        if (!this.ready) {
          // Looked at once the connection is back (woken by the reconnect).
          if (!driver.isConnected) {
            await this.pause.wait(1_000)
            continue
          }
          const disconnects = this.disconnects
          await driver.ensureStream(this.group.channel)
          const created = await driver.streamCreated(this.group.channel)
          if (created === undefined) {
            // Gone since this process last made it: made again on the next turn.
            driver.forgetStream(this.group.channel)
            continue
          }
          // A stream made again numbers from 1 again: going on after `seen` would skip what it holds.
          const newStream = this.created !== undefined && created !== this.created
          if (newStream) {
            this.seen = 0
            this.remade++
            driver.dropHeld(this.group.id)
          }
          this.makings++
          this.floor = await driver.ensureConsumer(this.group, newStream ? undefined : this.resumeAfter(), newStream)
          this.floorAt = Date.now()
          this.created = created
          // Another disconnect meanwhile: the server may have lost its data since: looked at again.
          if (disconnects !== this.disconnects) continue
          this.ready = true
          driver.checked(this.group.id)
        }
        this.lookAtFloor(driver)
        if (this.lost !== undefined) {
          const lost = this.lost
          this.lost = undefined
          throw lost
        }
        // What was read goes in first: the members' room counts it then.
        this.flush()
        const room = driver.sinkOf.groupRoom(this.group.id) - this.left()
        // Without room, with MAX_PULLS in flight, or while the connection is down (a pull sent
        // then would reach the server after its inbox was dropped), the reader waits to be woken.
        if (room <= 0 || this.pulls.size >= MAX_PULLS || !this.canPull) {
          await this.pause.wait(1_000)
          continue
        }
        await this.pull(stream, name, Math.min(room, READ_COUNT))
      } catch (error) {
        for (const pull of [...this.pulls]) pull.end()
        this.lost = undefined
        this.flush()
        if (this.stopped || driver.isClosed) break
        // Whatever failed, the consumer is looked up (and made again if the server lost it) before
        // the next pull: a pull on a consumer that is gone only ever says "no responders".
        this.ready = false
        if (driver.isNotFound(error)) driver.forgetStream(this.group.channel)
        else if (driver.isServerError(error)) driver.sinkOf.failed(error)
        await new Promise((r) => setTimeout(r, RETRY_MS))
      }
    }
  }

  /**
   * Where a consumer made again starts (after which stream sequence): its ack floor as last looked
   * up, or the first message this process still holds unanswered, or the last it read, whichever
   * is first. Not after the last read: messages other processes held unacked, and those this
   * process holds (whose nak or lease end must bring them back), lie between the floor and it,
   * and a consumer that starts past them never delivers them again. The cost: what was acked
   * since the floor was last looked up is delivered once more. Undefined (the group's own start)
   * when nothing is known.
   */
  private resumeAfter(): number | undefined {
    const lowest = this.driver.lowestHeld(this.group.id, this.remade)
    const known = [this.floor, this.seen > 0 ? this.seen : undefined, lowest === undefined ? undefined : lowest - 1].filter((n) => n !== undefined)
    return known.length === 0 ? undefined : Math.min(...known)
  }

  /** Looks the consumer's ack floor up again if it is older than FLOOR_MS (in the background). */
  private lookAtFloor(driver: NatsDriver): void {
    if (Date.now() - this.floorAt < FLOOR_MS || !driver.isConnected) return
    this.floorAt = Date.now()
    const making = this.makings
    driver.ackFloor(this.group).then(
      (floor) => {
        if (making === this.makings) this.floor = floor
      },
      () => {
        // Gone or unreachable: a pull says so, and the consumer is looked up then.
      },
    )
  }

  /**
   * Pulls at most `count` deliveries on an inbox of its own; resolves once the pull is over (all
   * brought, expired, nothing heard for two heartbeats, the connection gone, or the members' room
   * fell below what it may still bring: `wake`), or once it brought half of them, so the next
   * pull is on its way while it brings the rest (the server answers a consumer's pulls in turn).
   * Rejects when the consumer is not there (503, 409 Consumer Deleted); learnt after it resolved,
   * that is kept for the loop (`lost`). A "409 Server Shutdown" does not end it: the server goes
   * on delivering to the pull until JetStream has stopped, and counts those deliveries as made,
   * so a client that stops listening there (nats.js's fetch does) loses them until their
   * ack_wait (the visibility timeout and a tenth, 33 s by default) has passed. It is listened to
   * until the connection goes.
   */
  private pull(stream: string, consumer: string, count: number): Promise<void> {
    const subject = `$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`
    const request = JSON.stringify({ batch: count, expires: ms(PULL_MS), idle_heartbeat: ms(PULL_HEARTBEAT_MS) })
    const wire = this.wire
    return new Promise<void>((resolve, reject) => {
      let watch: ReturnType<typeof silenceWatch> | undefined
      let endPull: (() => void) | undefined
      let settled = false
      const pull: Pull = {
        left: count,
        end: (error?: unknown) => {
          if (!this.pulls.delete(pull)) return
          watch?.stop()
          endPull?.()
          if (!settled) {
            settled = true
            if (error === undefined) resolve()
            else reject(error)
          } else {
            // The loop may be waiting for room this pull no longer claims, or for its error.
            if (error !== undefined) this.lost = error
            this.pause.wake()
          }
        },
      }
      // Anything heard (a delivery, a heartbeat) says the pull is alive.
      const alive = () => {
        if (watch === undefined) watch = silenceWatch(PULL_SILENT_MS, () => pull.end())
        else watch.heard()
      }
      const take = (r: PullRecord) => {
        if (!this.pulls.has(pull)) {
          // Brought after the pull ended (a disconnect, or room that went): the wire gives it
          // back at once rather than leaving it to its ack wait.
          if (r.kind === 'delivery' && wire !== undefined) answerAndLetGo(r.delivery, 'nak')
          return
        }
        if (r.kind === 'delivery') {
          pull.left--
          this.add(r.delivery)
          if (pull.left <= 0) return pull.end()
          if (!settled && pull.left <= count / 2) {
            settled = true
            resolve()
          }
          return alive()
        }
        if (r.kind === 'ended') return pull.end()
        const { code, description } = r
        // 100: a heartbeat; 409 Server Shutdown: deliveries may still come (see above).
        if (code === 100 || (code === 409 && /server shutdown/i.test(description))) return alive()
        // 503: no consumer answers the pull; 409 Consumer Deleted: it was deleted.
        if (code === 503 || (code === 409 && /consumer deleted/i.test(description)))
          return pull.end(new Error(`the pull of group ${this.group.name} was answered ${code} ${description}`))
        // 408 (expired), 404, and any other 409: the pull is over; the next one follows.
        pull.end()
      }
      const failed = (error: unknown) => {
        if (this.pulls.has(pull)) pull.end(error)
      }
      this.pulls.add(pull)
      endPull = wire === undefined ? this.pullOnConnection(subject, request, take, failed) : wire.pull(subject, request, take, failed)
      alive()
    })
  }

  /** Sends a pull on the connection, with an inbox of its own for what it brings; returns its end. */
  private pullOnConnection(subject: string, request: string, take: (r: PullRecord) => void, failed: (error: unknown) => void): () => void {
    const nc = this.driver.connection()
    const inbox = `_INBOX.${inboxToken}.${++inboxes}`
    const sub = nc.subscribe(inbox, {
      callback: (error, m) => {
        if (error !== null) return failed(error)
        const reply = m.reply
        if (reply?.startsWith('$JS.ACK.')) return take({ kind: 'delivery', delivery: new GroupDelivery(m, reply, nc) })
        take({ kind: 'status', code: m.headers?.code ?? 0, description: m.headers?.description ?? '' })
      },
    })
    nc.publish(subject, request, { reply: inbox })
    return () => sub.unsubscribe()
  }

  private add(m: Held): void {
    if (this.closed) {
      // The group is gone here: what its last pull still brings goes back to the broker at once.
      answerAndLetGo(m, 'nak')
      return
    }
    if (m.seq > this.seen) this.seen = m.seq
    const route = routeOfMsg(m)
    const signing = this.driver.signing
    const at = Math.floor(m.info.timestampNanos / 1e6)
    if (signing !== undefined && !signing.accept(m.headers?.get(SIGNATURE) || undefined, this.group.channel, route, m.data, String(m.seq), at)) {
      // Refused (counted and reported): the consumer stops delivering it, instead of for ever.
      answerAndLetGo(m, 'term')
      return
    }
    const position = this.driver.hold(this.group.id, m, this.remade)
    this.writer.group(this.group.id, m.info.deliveryCount, position, m.data, route)
    if (!this.scheduled) {
      this.scheduled = true
      later(() => {
        this.scheduled = false
        this.flush()
      })
    }
  }

  private flush(): void {
    const batch = this.writer.take()
    if (batch !== undefined) this.driver.sinkOf.ingest(batch)
  }

  /** The group was deleted in this process: stops, and gives back what still comes. */
  close(): void {
    this.closed = true
    this.stop()
  }

  stop(): void {
    this.stopped = true
    this.wake()
    for (const pull of [...this.pulls]) pull.end()
    // Stopped before it looked at the stream again: its answers could reach a new stream's messages.
    if (this.ready) this.driver.checked(this.group.id)
    else this.driver.uncheckedForGood(this.group.id)
  }

  async stopAndWait(): Promise<void> {
    if (this.stopped) return
    this.stop()
    const done = this.loop ?? Promise.resolve()
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([
      done,
      new Promise((r) => {
        timer = setTimeout(r, 1_000)
      }),
    ])
    clearTimeout(timer)
    this.flush()
  }
}
