/**
 * The Redis Streams driver, on node-redis (`redis` on npm, an optional peer dependency loaded
 * when a redis transport is configured). A bound channel is the stream `<prefix>ch:<name>`, one
 * entry per frame (field `f`; a request adds `r`, its reply address, and `t`, its timeout);
 * groups are the stream's consumer groups, this process reading as one consumer; its readers are
 * in redis-readers.ts. Replies go by `PUBLISH` to `<prefix>reply:<address>`, which the
 * requester's process listens to on a connection of its own. With `signing`, each entry adds `s`,
 * its signature, and a reply starts with its signature (a length byte, then the text). The driver
 * only moves bytes: what a delivery means stays in the core.
 */
import { OrreryError } from '../errors.js'
import { catchUpWith, GroupStarts, holdUntil, Markers, sendable, serversKey } from './catch-up.js'
import type { CheckedRedisOptions } from './config.js'
import type { BrokerRetention, ChannelRef, Driver, DriverSink, Egress, GroupRef, HistoryBound } from './driver.js'
import { IngestWriter } from './records.js'
import { compareIds, type Entry, GroupReader, limited, MirrorReader, type Reader, RETRY_MS } from './redis-readers.js'
import { Signing } from './signing.js'
import { frameIdHex, type PendingWrite, threshold, transportError, Writes } from './writes.js'

/**
 * A Lua script of the driver and how many of its arguments are keys. Every script goes whole
 * (`EVAL`), never by its hash: with `EVALSHA`, a server that lost its scripts (a restart) refuses
 * the command, which would then be sent again behind the commands after it, which another
 * connection's `EVAL` may have let through first.
 */
interface Script {
  readonly source: string
  readonly keys: number
}

/** The few node-redis calls the driver makes. */
export interface Connection {
  connect(): Promise<unknown>
  sendCommand(args: ReadonlyArray<string | Buffer>, options?: object): Promise<unknown>
  duplicate(): Connection
  withAbortSignal(signal: AbortSignal): Connection
  on(event: string, listener: (...args: unknown[]) => void): unknown
  subscribe(channel: string, listener: (message: Buffer) => void, bufferMode: true): Promise<void>
  destroy(): void
  readonly isReady: boolean
  readonly isOpen: boolean
}

/** The part of the `redis` module the driver uses. */
export interface RedisModule {
  createClient(options: object): Connection
  RESP_TYPES: { BLOB_STRING: number }
  ErrorReply: abstract new (...args: never[]) => Error
}

/** Loads node-redis; missing, it is TRANSPORT_UNAVAILABLE saying how to install it. */
export async function loadRedis(transport?: string): Promise<RedisModule> {
  // A specifier bundlers do not follow: browsers never load it, and a missing package is a
  // refusal at create, not a build error.
  const specifier = 'redis'
  try {
    return (await import(/* @vite-ignore */ specifier)) as RedisModule
  } catch (cause) {
    throw transportError(
      'TRANSPORT_UNAVAILABLE',
      `${transport === undefined ? 'a redis transport' : `redis transport ${transport}`} needs node-redis: npm i redis`,
      {
        cause,
        details: transport === undefined ? {} : { transport },
      },
    )
  }
}

/** Markers of `latest` subscribes not answered yet, by server and stream. */
const markers = new Markers()

/**
 * Refusals of a server that is starting, busy or failing over: the write is not done, and is
 * tried again (until publishTimeoutMs) like one a dropped connection lost.
 */
const TRANSIENT = /^(LOADING|BUSY|TRYAGAIN|READONLY|MASTERDOWN|CLUSTERDOWN|UNBLOCKED)\b/

/** Sets a key for the dedup window and appends only if it was not set: one publish, once per window across processes. */
const DEDUP_SCRIPT = `local ok
if ARGV[1] == '0' then ok = redis.call('SET', KEYS[2], '1', 'NX') else ok = redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) end
if not ok then return false end
return redis.call('XADD', KEYS[1], unpack(ARGV, 2))`

/**
 * Appends a run of publishes to one stream (KEYS[1]) in one command (sent whole, see `Script`).
 * ARGV[1] is 1 (each entry its frame) or 2 (its frame, then its signature), ARGV[2] the
 * stream's MAXLEN ('' for none), the entries after. Stops at the first refusal: {written, refusal
 * or false, the first entry's id if one was written}.
 * @internal Exported for the transports benchmark, which has redis-benchmark run it.
 */
export const APPEND_ALL_SCRIPT = `local per, cap, n, first = tonumber(ARGV[1]), ARGV[2], 0, false
for i = 3, #ARGV, per do
  local r
  if cap == '' then
    if per == 1 then r = redis.pcall('XADD', KEYS[1], '*', 'f', ARGV[i]) else r = redis.pcall('XADD', KEYS[1], '*', 'f', ARGV[i], 's', ARGV[i + 1]) end
  elseif per == 1 then r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', 'f', ARGV[i])
  else r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', 'f', ARGV[i], 's', ARGV[i + 1]) end
  if type(r) == 'table' and r.err then return {n, r.err, first} end
  if n == 0 then first = r end
  n = n + 1
end
return {n, false, first}`

/**
 * The fence of every settlement (ARGV: group, consumer, id): -1 when another consumer holds the
 * entry now (this process's lease ran out and another took it over), 0 when nobody does (acked
 * or trimmed already); otherwise the settlement runs.
 */
const OWNED = `local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p[1] == nil then return 0 end
if p[1][2] ~= ARGV[2] then return -1 end
`

/** Forgets a delivery this consumer holds. */
const ACK_SCRIPT = `${OWNED}return redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])`

/**
 * Acks each of a group's deliveries (ARGV[5]...) that this consumer (ARGV[2]) holds with one
 * XACK: those it holds are found by one XPENDING over the run's range (ARGV[3] to ARGV[4], up to
 * 4 entries an id), any other is looked at alone. OWNED's answer for each, in order.
 */
const ACK_ALL_SCRIPT = `local held, acks, out = {}, {}, {}
for _, e in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[4], 4 * #ARGV, ARGV[2])) do held[e[1]] = true end
for i = 5, #ARGV do
  local id, answer = ARGV[i], 1
  if not held[id] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    if p[1] == nil then answer = 0 elseif p[1][2] ~= ARGV[2] then answer = -1 end
  end
  if answer == 1 then acks[#acks + 1] = id end
  out[#out + 1] = answer
end
if #acks > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(acks)) end
return out`

/** Sets the idle time (ARGV[4]) of a delivery this consumer holds: reclaimable by anyone once it passes the threshold. */
const RELEASE_SCRIPT = `${OWNED}return #redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')`

/**
 * Moves a delivery this consumer holds (OWNED checked it, and nothing runs between) to the
 * dead-letter stream (KEYS[2]); ARGV[5], when given, is its signature. Written first: a script
 * stopped by an error keeps what it did before, so a refused XADD (the key holds no stream)
 * after the XACK would have lost the entry; this way it stays pending.
 */
const DEAD_SCRIPT = `${OWNED}if ARGV[5] then redis.call('XADD', KEYS[2], '*', 'f', ARGV[4], 's', ARGV[5]) else redis.call('XADD', KEYS[2], '*', 'f', ARGV[4]) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1`

/**
 * Removes this consumer (ARGV[2]) from a group (ARGV[1]) if it holds nothing: removing a consumer
 * drops its pending entries, which would lose them. 1 when removed.
 */
const LEAVE_SCRIPT = `if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) >= 0 and 1 or 0`

const DEDUP: Script = { source: DEDUP_SCRIPT, keys: 2 }
const ACK: Script = { source: ACK_SCRIPT, keys: 1 }
const RELEASE: Script = { source: RELEASE_SCRIPT, keys: 1 }
const DEAD: Script = { source: DEAD_SCRIPT, keys: 2 }
const LEAVE: Script = { source: LEAVE_SCRIPT, keys: 1 }

/** The most publishes (or acks) one command carries: a script holds the server for its whole run. */
const RUN_MAX = 1024

type PublishEgress = Extract<Egress, { kind: 'publish' }>
type AckEgress = Extract<Egress, { kind: 'ack' }>

/**
 * A `latest` subscribe's marker, asked in the write pipeline (see `catchUp`): the newest entry of
 * the channel's stream, read on the connection that writes, after the writes queued before it
 * and before those queued after it.
 */
interface MarkerAsk {
  readonly kind: 'marker'
  readonly channel: string
  /** The subscription or its mirror went: it is not asked. */
  readonly gone: () => boolean
  /** Its answer: the id of the stream's newest entry ('0-0' if none). */
  readonly answer: (id: string) => void
  /**
   * Set while the mirror holds what it reads for it (see `markersKnown`): from when it is sent
   * until it is answered, or until nothing sent with or after it is unanswered (see `answered`).
   */
  handled?: (() => void) | undefined
}

/** What the driver queues: the core's egress records, and markers asked in order with them. */
type Queued = Egress | MarkerAsk

/** Batches of publishes and acks the driver sends before the ones before them are answered. */
const PIPELINE_DEPTH = 4

/**
 * Whether a write may go out before the batches sent earlier are answered: publishes without a
 * dedup window and acks, whose retry after a failure keeps their order (see `pump`).
 */
function pipelined(write: PendingWrite<Queued>): boolean {
  return write.records.every((r) => (r.kind === 'publish' && r.dedupWindowMs === 0) || r.kind === 'ack' || r.kind === 'marker')
}

/** The stream entry id just before `id` (`<ms>-<seq>`): a start from which `id` is read next. */
function idBefore(id: string): string {
  const dash = id.indexOf('-')
  const ms = BigInt(id.slice(0, dash))
  const seq = BigInt(id.slice(dash + 1))
  if (seq > 0n) return `${ms}-${seq - 1n}`
  return ms > 0n ? `${ms - 1n}-18446744073709551615` : '0-0'
}

/** Puts a write being retried back in `queue` in the order it was first written, ahead of anything written later. */
function requeue(queue: PendingWrite<Queued>[], write: PendingWrite<Queued>): void {
  const index = queue.findIndex((w) => w.order > write.order)
  queue.splice(index === -1 ? queue.length : index, 0, write)
}

/** A refusal the server gave inside one of the driver's scripts (a record of a run it could not write). */
class Refused extends Error {}

/** A record's outcome when it was not written: why. */
class Failed {
  constructor(readonly reason: unknown) {}
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/** A signed reply as published: its signature's length (one byte), the signature, the frame. */
function signedReply(signature: string, frame: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(1 + signature.length + frame.length)
  out[0] = signature.length
  out.write(signature, 1, 'latin1')
  out.set(frame, 1 + signature.length)
  return out
}

/** The signature and frame of a reply as published (undefined signature: too short to hold one). */
function openReply(message: Buffer): { signature: string | undefined; frame: Buffer } {
  const len = message.length > 0 ? message[0]! : 0
  if (len === 0 || message.length < 1 + len) return { signature: undefined, frame: message }
  return { signature: message.toString('latin1', 1, 1 + len), frame: message.subarray(1 + len) }
}

export class RedisDriver implements Driver {
  private main: Connection | undefined
  private closed = false
  /** Set once the first connection was made: from then on drops are reconnected. */
  private connected = false
  private readonly queue: PendingWrite<Queued>[] = []
  /** Batches sent and not answered yet. */
  private inFlight = 0
  /** Of those, batches holding anything but publishes and acks (nothing else goes out beside them). */
  private soloOut = 0
  /** Set by a failed record: nothing more goes out until every batch out has been answered. */
  private draining = false
  /** Set by a failed record or a dropped connection: one batch out at a time until one is written whole. */
  private probing = false
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  /** What the first held write waits for, once the pump waits for it (see `Markers.hold`). */
  private waitingOn: Promise<unknown> | undefined
  /** The abort signals of each batch sent behind others and not answered yet (see `through`). */
  private readonly unanswered = new Set<AbortController[]>()
  /** While `pump` sends a batch behind others: its commands' abort signals. */
  private aborts: AbortController[] | undefined
  private readonly kept = new Map<string, BrokerRetention>()
  /** Timers holding entries nacked with a delay past the threshold. */
  private readonly holds = new Set<ReturnType<typeof setTimeout>>()
  /** Every write not settled yet: `flushed` waits for them, `close` fails them. */
  private readonly writes = new Writes<Queued>(markers, (r) => this.streamKeyOf(r))
  private serverKeyMade: string | undefined
  /** The handling of the batches sent, in the order sent (see `pump`). */
  private answering: Promise<void> = Promise.resolve()
  /** Markers that go again, holding their mirror while batches sent after them are unanswered (see `answered`). */
  private readonly reasking = new Set<PendingWrite<Queued>>()
  /** Markers sent and not handled yet, by channel name (see `markersKnown`). */
  private readonly markersOut = new Map<string, Map<MarkerAsk, Promise<void>>>()
  /** Groups from 'latest' being made, which publishes wait for. */
  private readonly starts = new GroupStarts(markers)
  private readonly mirrors = new Map<number, MirrorReader>()
  /** The connection listening at this process's reply address, once a request was sent. */
  private listener: Connection | undefined
  private listening: Promise<void> | undefined
  private readonly groups = new Map<number, GroupReader>()
  private readonly options: { typeMapping: object }
  /** This process's consumer name in every group. */
  readonly consumer: string
  /**
   * Settlements (acks, releases, dead letters) dropped because another consumer held the entry
   * by then: this process's lease had run out and another process took the entry over.
   */
  fencedSettles = 0
  /** @internal The transport's signing (undefined: messages go unsigned and nothing is checked). */
  readonly signing: Signing | undefined

  constructor(
    private readonly redis: RedisModule,
    private readonly config: CheckedRedisOptions,
    private readonly sink: DriverSink,
    private readonly transport: string,
  ) {
    this.options = { typeMapping: { [redis.RESP_TYPES.BLOB_STRING]: Buffer } }
    this.signing = config.signing === undefined ? undefined : new Signing(config.signing, (r) => sink.refused?.(r))
    const pid = typeof process === 'object' ? process.pid : 0
    this.consumer = `${pid}-${Math.random().toString(36).slice(2, 10)}`
  }

  private key(channel: string): string {
    return `${this.config.keyPrefix}ch:${channel}`
  }

  /** Runs one of the driver's scripts on the main connection. */
  private script(script: Script, args: Array<string | Buffer>): Promise<unknown> {
    return this.command(['EVAL', script.source, String(script.keys), ...args])
  }

  /**
   * The connection a command goes through: while `pump` sends a batch behind others, through an
   * abort signal of its own (one per command: a signal takes only a few listeners quietly).
   */
  private through(): Connection {
    const main = this.main!
    if (this.aborts === undefined) return main
    const abort = new AbortController()
    this.aborts.push(abort)
    return main.withAbortSignal(abort.signal)
  }

  /** Runs a fenced settlement: resolves true when it was applied, false when the entry was not this consumer's. */
  private settle(script: Script, args: Array<string | Buffer>): Promise<boolean> {
    return this.script(script, args).then((reply) => {
      if (Number(reply) >= 0) return Number(reply) > 0
      this.fencedSettles++
      return false
    })
  }

  /** Sends one command on the main connection, binary replies as Buffers. */
  command<T>(args: ReadonlyArray<string | Buffer>): Promise<T> {
    if (this.main === undefined || this.closed)
      return Promise.reject(transportError('CLOSED', `transport ${this.transport} is closed`, { details: { transport: this.transport } }))
    return this.through().sendCommand(args, this.options) as Promise<T>
  }

  /**
   * Sends a read on the main connection, and again after a dropped connection (node-redis holds
   * it until it has reconnected), until it is answered: an outage is reported by the main
   * connection, not by what was reading. A server refusal, this transport's close or `stopped`
   * ends it with that error.
   */
  async read<T>(args: ReadonlyArray<string | Buffer>, stopped: () => boolean = () => false): Promise<T> {
    for (;;) {
      try {
        return await this.command<T>(args)
      } catch (error) {
        if (this.closed || stopped() || this.isServerError(error)) throw error
        await new Promise((r) => setTimeout(r, RETRY_MS))
        // Ended while it waited: not sent once more (node-redis would hold it for the reconnect).
        if (this.closed || stopped()) throw error
      }
    }
  }

  /** A new connection: errors are the reconnecting client's own business, so they are only watched. */
  private newConnection(): Connection {
    const { url, username, password, tls, connectTimeoutMs } = this.config
    const secure = tls !== undefined && tls !== false
    const client = this.redis.createClient({
      // node-redis refuses (with the URL, password and all, in its message) a TLS option that
      // disagrees with the URL's scheme: the scheme follows the checked option.
      url: secure === url.startsWith('rediss:') ? url : secure ? `rediss:${url.slice('redis:'.length)}` : `redis:${url.slice('rediss:'.length)}`,
      RESP: 2,
      // No per-command timer (node-redis's default 5 s only bounds a command waiting for a
      // reconnect, and costs a timer per command): publishTimeoutMs bounds writes, BLOCK reads.
      commandOptions: { timeout: 0 },
      ...(username === undefined ? {} : { username }),
      ...(password === undefined ? {} : { password }),
      socket: {
        connectTimeout: connectTimeoutMs,
        // The first connection fails at once (create reports it); later drops reconnect with backoff.
        reconnectStrategy: (retries: number) => (this.connected ? Math.min(50 * 2 ** Math.min(retries, 6), 2_000) : false),
        // Node's tls.connect settings, as given.
        ...(secure ? { ...tls, tls: true as const } : {}),
      },
    })
    client.on('error', () => {})
    return client
  }

  async connect(): Promise<void> {
    const client = this.newConnection()
    this.main = client
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      // A server that accepts the connection but never answers is caught here too.
      await Promise.race([
        client.connect().then(() => client.sendCommand(['PING'])),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within connectTimeoutMs (${this.config.connectTimeoutMs} ms)`)), this.config.connectTimeoutMs)
        }),
      ])
      this.connected = true
      // The main connection tells the outages (readers' connections go and come with it): once
      // when it goes, once when node-redis has it ready again.
      client.on('error', (error: unknown) => {
        // The connection dropped: what it had written fails with it, and what it had not written
        // yet is taken back too (node-redis would send it first once reconnected, ahead of an
        // earlier batch's retry).
        for (const aborts of this.unanswered) for (const abort of aborts) abort.abort()
        this.probing = true
        if (!this.closed && client.isReady === false) this.sink.connection?.(false, error)
      })
      client.on('ready', () => {
        if (!this.closed) this.sink.connection?.(true)
      })
    } catch (error) {
      this.main = undefined
      client.destroy()
      throw this.connectError(error)
    } finally {
      clearTimeout(timer)
    }
  }

  private connectError(error: unknown): OrreryError {
    const message = error instanceof Error ? error.message : String(error)
    const where = `redis transport ${this.transport}`
    if (/WRONGPASS|NOAUTH|NOPERM|\bAUTH\b|invalid password|invalid username/.test(message))
      return transportError('TRANSPORT_AUTH', `${where} refused the credentials: ${message}`, { cause: error, details: { transport: this.transport } })
    // The server is there; the URL's database number is past its `databases` setting (16 by default).
    if (/DB index is out of range/i.test(message)) {
      const option = `transports.${this.transport}.url`
      const database = new URL(this.config.url).pathname.slice(1)
      return new OrreryError(
        'INVALID_OPTION',
        `${option} names database ${database}, which the server does not have (its databases setting, 16 by default): ${message}`,
        {
          cause: error,
          details: { option, transport: this.transport, value: Number(database) },
        },
      )
    }
    return transportError('TRANSPORT_UNAVAILABLE', `${where} is unreachable at ${this.config.url.replace(/\/\/[^@/]*@/, '//')}: ${message}`, {
      cause: error,
      details: { transport: this.transport },
    })
  }

  // --- writes -------------------------------------------------------------------------------

  write(records: readonly Egress[]): Promise<number> {
    if (this.closed) return Promise.reject(transportError('CLOSED', 'this Orrery is closed', { details: this.where(records) }))
    const { write, written } = this.writes.add(records, this.config.publishTimeoutMs, (w) => {
      // The writes behind it may go now, if it was held (see `pump`).
      queueMicrotask(() => this.pump())
      return transportError('TRANSPORT_UNAVAILABLE', this.timeoutMessage(), { details: this.where(w.records) })
    })
    markers.hold(write, this.streamKeyOf, this.writes)
    this.queue.push(write)
    this.pump()
    return written
  }

  /** The key of the markers a record waits for (see `Markers`): its stream's, for what is stored in one. */
  private readonly streamKeyOf = (record: Queued): string | undefined =>
    record.kind === 'publish' || record.kind === 'request'
      ? this.markerKey(record.channel)
      : record.kind === 'dead'
        ? this.markerKey(record.deadLetter)
        : undefined

  private markerKey(channel: string): string {
    return `${this.serverKey}\u0000${this.key(channel)}`
  }

  /** The server and database of the markers' keys (see `serversKey`): `host:port/db`. */
  private get serverKey(): string {
    if (this.serverKeyMade === undefined) {
      const url = new URL(this.config.url)
      this.serverKeyMade = `${serversKey([url.host], 6379)}/${url.pathname.replace(/^\//, '') || '0'}`
    }
    return this.serverKeyMade
  }

  /** What a write's error names: this transport and the channel(s) its records write to. */
  private where(records: readonly Queued[]): { transport: string; channel?: string } {
    const channels = new Set(records.map((r) => ('channel' in r ? r.channel : r.group.channel)))
    return channels.size === 0 ? { transport: this.transport } : { transport: this.transport, channel: [...channels].join(', ') }
  }

  private timeoutMessage(): string {
    return `redis transport ${this.transport} did not take the write within publishTimeoutMs (${this.config.publishTimeoutMs} ms)`
  }

  /**
   * Sends every queued write at once (node-redis pipelines what is sent in one turn), in order.
   * While the connection is up, batches of publishes and acks alone go out without waiting for
   * the replies to the ones before (at most PIPELINE_DEPTH at once); anything else waits for
   * them. A record refused by a dropped connection is sent again, once every batch out has been
   * answered and the client reconnected, in the order it was first written, before anything
   * later; one the server refused fails its write.
   */
  private pump(): void {
    if (this.queue.length === 0 || this.closed || this.retryTimer !== undefined) return
    if (
      this.inFlight > 0 &&
      (this.draining || this.probing || this.soloOut > 0 || this.inFlight >= PIPELINE_DEPTH || !this.main?.isReady || !this.queue.every(pipelined))
    )
      return
    this.draining = false
    // Up to the first write still held by a marker; that one waits for it (unless it is a marker
    // whose subscription went: nothing waits for that one, nor do the writes behind it).
    let free = sendable(this.queue)
    while (free < this.queue.length && this.dropGoneMarker(this.queue[free]!)) {
      this.queue.splice(free, 1)
      free = sendable(this.queue)
    }
    if (free === 0) {
      // Pumped again once it may go (a retry put ahead of it meanwhile is sent by the next pump).
      const after = this.queue.find((w) => !w.settled && w.after !== undefined)!.after!
      if (this.waitingOn !== after) {
        this.waitingOn = after
        void after.then(() => {
          if (this.waitingOn === after) this.waitingOn = undefined
          this.pump()
        })
      }
      return
    }
    const live = this.queue.splice(0, free).filter((write) => !write.settled && !this.dropGoneMarker(write))
    // Only writes settled already (their time ran out) were ahead of the held one: on to it.
    if (live.length === 0) return this.pump()
    const behind = this.cutAfterMarker(live)
    if (behind !== -1) this.queue.unshift(...live.splice(behind))
    for (const write of live) write.sent = true
    const solo = !live.every(pipelined)
    const probe = this.probing
    this.inFlight++
    if (solo) this.soloOut++
    // A batch sent behind others can be taken back if the connection drops before writing it.
    const aborts: AbortController[] | undefined = this.inFlight > 1 ? [] : undefined
    if (aborts !== undefined) this.unanswered.add(aborts)
    this.aborts = aborts
    const records = live.flatMap((write) => write.records)
    let runs: Array<Promise<unknown[]>>
    try {
      runs = this.sendAll(records)
    } catch (error) {
      // A fault of Orrery's: the batch fails, rather than hold the queue for good.
      runs = [Promise.resolve(records.map(() => new Failed(new Refused(String(error)))))]
    } finally {
      this.aborts = undefined
    }
    // Handled in the order sent (a batch's runs may settle a turn before an earlier batch's), so
    // a marker's answer is judged once every write sent before it is.
    const outcomes = Promise.all(runs)
    let counted = false
    this.answering = this.answering
      .then(() => outcomes)
      .then((runs) => {
        counted = true
        this.answered(live, runs, aborts, solo, probe)
      })
      .catch((error: unknown) => {
        if (!counted) this.uncount(aborts, solo)
        this.gaveUp(live, error)
      })
  }

  /** Takes a batch answered (or given up) off the batches out. */
  private uncount(aborts: AbortController[] | undefined, solo: boolean): void {
    if (aborts !== undefined) this.unanswered.delete(aborts)
    this.inFlight--
    if (solo) this.soloOut--
  }

  /**
   * Once nothing sent is unanswered, the markers going again let their mirrors go: each is asked
   * again before any later write is sent, so it is at or before them.
   */
  private letGoOfMarkers(): void {
    if (this.inFlight > 0 || this.reasking.size === 0) return
    for (const marker of this.reasking) (marker.records[0] as MarkerAsk).handled?.()
    this.reasking.clear()
  }

  /**
   * A fault of Orrery's while handling a batch: what it left unsettled fails, markers let their
   * mirror go, the fault is reported and the batches after it are still handled.
   */
  private gaveUp(live: readonly PendingWrite<Queued>[], error: unknown): void {
    for (const write of live) {
      const first = write.records[0]
      if (first?.kind === 'marker') {
        this.reasking.delete(write)
        first.handled?.()
      }
      this.writes.fail(
        write,
        new OrreryError('INTERNAL', `redis transport ${this.transport} could not handle a write's answer: ${String(error)}`, { cause: error }),
      )
    }
    this.letGoOfMarkers()
    try {
      this.sink.failed(error)
    } catch {}
    queueMicrotask(() => this.pump())
  }

  /** Settles (or queues again) the writes of a batch sent by `pump`, from its runs' outcomes. */
  private answered(live: readonly PendingWrite<Queued>[], runs: unknown[][], aborts: AbortController[] | undefined, solo: boolean, probe: boolean): void {
    this.uncount(aborts, solo)
    const outcomes = runs.length === 1 ? runs[0]! : runs.flat()
    let at = 0
    let failed = false
    for (const write of live) {
      const from = at
      at += write.records.length
      // What was written passes the markers going again (even a write that failed for its caller
      // meanwhile, or was refused in part: what was stored is read).
      if (this.reasking.size > 0) this.passing(write, outcomes, from)
      if (write.settled) continue
      const again: Queued[] = []
      for (let k = 0; k < write.records.length && !write.settled; k++) {
        const outcome = outcomes[from + k]
        const record = write.records[k]!
        if (outcome instanceof Failed) {
          if (!this.isRefusal(outcome.reason)) again.push(record)
          else {
            const reason = outcome.reason as Error
            this.writes.fail(
              write,
              transportError('TRANSPORT_UNAVAILABLE', `redis transport ${this.transport} refused a write: ${reason.message}`, {
                cause: reason,
                details: this.where([record]),
              }),
            )
          }
        } else if (record.kind !== 'marker') {
          if (outcome === null && record.kind === 'publish') write.duplicates++
        }
        // A marker goes again behind a write to its stream made before it that goes again (a
        // server refusing writes for a while, the publishes after a refused one in an append
        // run): that write lands after this answer, which is then not the subscriber's start.
        else if (this.earlierAgain(record.channel, write.order)) again.push(record)
        else record.answer(outcome as string)
        if (record.kind === 'marker') {
          // One that goes again holds its mirror while what was sent after it may still store a
          // later write to its stream (see `passing`).
          if (again.at(-1) === record) this.reasking.add(write)
          else record.handled?.()
        }
      }
      if (write.settled) continue
      if (again.length === 0) {
        this.writes.succeed(write)
        continue
      }
      write.records = again
      requeue(this.queue, write)
      failed = true
    }
    this.letGoOfMarkers()
    // One batch at a time until one sent alone is written whole: a server refusing for a while
    // (loading its data after a restart, busy, failing over) could take a batch sent behind a
    // refused one.
    if (failed) this.probing = true
    else if (probe) this.probing = false
    if (failed) {
      // Nothing more goes out until every batch out has been answered (their failures join
      // the queue in order) and RETRY_MS has passed.
      this.draining = true
      this.retryTimer ??= setTimeout(() => {
        this.retryTimer = undefined
        this.pump()
      }, RETRY_MS)
    }
    this.pump()
  }

  /** A server's refusal of a write that trying again would not change. */
  private isRefusal(reason: unknown): boolean {
    return (reason instanceof this.redis.ErrorReply || reason instanceof Refused) && !TRANSIENT.test(reason.message)
  }

  /**
   * The commands for `records`, sent in their order; each run of records answered by one Promise
   * of its records' outcomes (never rejected: a failure is a `Failed`). A run of publishes to one
   * stream is appended by one command and a run of acks in one group settled by one: one round
   * of parsing and one reply on the server instead of one per record.
   */
  private sendAll(records: readonly Queued[]): Array<Promise<unknown[]>> {
    const runs: Array<Promise<unknown[]>> = []
    let i = 0
    while (i < records.length) {
      const first = records[i]!
      let end = i + 1
      if (first.kind === 'publish' && first.dedupWindowMs === 0) {
        while (end < records.length && end - i < RUN_MAX) {
          const next = records[end]!
          if (next.kind !== 'publish' || next.dedupWindowMs !== 0 || next.channel !== first.channel) break
          end++
        }
        if (end - i > 1) runs.push(this.appendRun(records.slice(i, end) as PublishEgress[]))
      } else if (first.kind === 'ack') {
        while (end < records.length && end - i < RUN_MAX) {
          const next = records[end]!
          if (next.kind !== 'ack' || next.group.id !== first.group.id) break
          end++
        }
        if (end - i > 1) runs.push(this.ackRun(records.slice(i, end) as AckEgress[]))
      }
      if (first.kind === 'marker') runs.push(this.askMarker(first))
      else if (end - i === 1)
        runs.push(
          this.send(first).then(
            (value) => [value],
            (reason: unknown) => [new Failed(reason)],
          ),
        )
      i = end
    }
    return runs
  }

  /** Reads a marker (the stream's newest entry) in the pipeline: its id, or why it failed. */
  private askMarker(ask: MarkerAsk): Promise<unknown[]> {
    if (ask.handled === undefined) this.holdMirror(ask)
    return this.command<Entry[]>(['XREVRANGE', this.key(ask.channel), '+', '-', 'COUNT', '1']).then(
      (entries) => [entries.length === 0 ? '0-0' : entries[0]![0].toString('latin1')],
      (reason: unknown) => [new Failed(reason)],
    )
  }

  /** Holds what `channel`'s mirror reads until `ask.handled()` (see `markersKnown`). */
  private holdMirror(ask: MarkerAsk): void {
    const out = this.markersOut.get(ask.channel) ?? new Map<MarkerAsk, Promise<void>>()
    this.markersOut.set(ask.channel, out)
    out.set(
      ask,
      new Promise<void>((resolve) => {
        ask.handled = () => {
          ask.handled = undefined
          out.delete(ask)
          if (out.size === 0 && this.markersOut.get(ask.channel) === out) this.markersOut.delete(ask.channel)
          resolve()
        }
      }),
    )
  }

  /**
   * @internal Settles once the markers of `channel` out now (sent, their answer not handled yet)
   * are handled; undefined when none is out. A mirror reads on a connection of its own: what a
   * read brought may be past such a marker, so it holds it until the marker is known (a marker
   * sent later is asked after the read and is at or past what it brought).
   */
  markersKnown(channel: string): Promise<void> | undefined {
    const out = this.markersOut.get(channel)
    return out === undefined ? undefined : Promise.all(out.values()).then(() => {})
  }

  /** Whether a write to `channel`'s stream made before `order` goes again (is in the queue). */
  private earlierAgain(channel: string, order: number): boolean {
    const key = this.markerKey(channel)
    return this.queue.some((w) => !w.settled && w.order < order && w.records.some((r) => this.streamKeyOf(r) === key))
  }

  /**
   * A write made after a marker that goes again was stored (`outcomes` from `from`; the first
   * entry id of a run of appends, or of a lone append, is its outcome): the marker, asked again,
   * would be past it and its subscriber would miss it. It is answered at once with the id just
   * before that write's (its subscriber may also get the earlier write it went again behind,
   * written after: once more than it should, never one less).
   */
  private passing(write: PendingWrite<Queued>, outcomes: readonly unknown[], from: number): void {
    for (let k = 0; k < write.records.length; k++) {
      const record = write.records[k]!
      const outcome = outcomes[from + k]
      if (record.kind === 'marker' || !(outcome instanceof Uint8Array)) continue
      const key = this.streamKeyOf(record)
      for (const marker of [...this.reasking]) {
        const ask = marker.records[0] as MarkerAsk
        if (marker.order > write.order || this.markerKey(ask.channel) !== key) continue
        this.reasking.delete(marker)
        ask.answer(idBefore(Buffer.from(outcome).toString('latin1')))
        this.writes.succeed(marker)
        ask.handled?.()
      }
    }
  }

  /**
   * Where `batch` ends so that no write that a retry could not write twice (a publish with a dedup
   * window, a fenced dead letter) goes out with a marker of its stream before it: both taken by
   * the server as the connection dropped, the marker asked again would be past the write, whose
   * retry appends nothing. -1 when it need not. Such a write waits for the marker's answer.
   */
  private cutAfterMarker(batch: readonly PendingWrite<Queued>[]): number {
    // Made at the first marker: most batches have none.
    let keys: Set<string> | undefined
    for (let i = 0; i < batch.length; i++) {
      const write = batch[i]!
      const first = write.records[0]
      if (first?.kind === 'marker') {
        keys ??= new Set()
        keys.add(this.markerKey(first.channel))
      } else if (keys !== undefined && !pipelined(write)) {
        const marked = keys
        if (write.records.some((r) => marked.has(this.streamKeyOf(r) ?? ''))) return i
      }
    }
    return -1
  }

  /** Settles a marker's write whose subscription went before it was sent (nothing waits for it); true if it did. */
  private dropGoneMarker(write: PendingWrite<Queued>): boolean {
    const record = write.records[0]
    if (record?.kind !== 'marker' || !record.gone()) return false
    this.reasking.delete(write)
    this.writes.succeed(write)
    record.handled?.()
    return true
  }

  /** Appends publishes to one channel with one command: each one's outcome, in order. */
  private appendRun(run: readonly PublishEgress[]): Promise<unknown[]> {
    const channel = run[0]!.channel
    const signing = this.signing
    const args: Array<string | Buffer> = ['EVAL', APPEND_ALL_SCRIPT, '1', this.key(channel), signing === undefined ? '1' : '2', this.cap(channel)]
    // Signed at each attempt: a write retried after an outage carries the time it is written.
    for (const record of run) {
      args.push(asBuffer(record.frame))
      if (signing !== undefined) args.push(signing.sign(record))
    }
    this.trimByAge(channel)
    return this.command<[number, Buffer | null, Buffer?]>(args).then(
      ([written, refusal, first]) => {
        // The first entry's id (see `passing`); the others are written after it.
        const outcomes = new Array<unknown>(run.length).fill(1)
        if (written > 0) outcomes[0] = first
        if (written === run.length) return outcomes
        // Those after a refusal were not tried: sent again (their write fails with the refusal).
        const notTried = new Failed(new Error('not tried after a refusal'))
        for (let k = written; k < run.length; k++) outcomes[k] = k === written ? new Failed(new Refused(refusal?.toString() ?? 'refused')) : notTried
        return outcomes
      },
      (reason: unknown) => new Array<unknown>(run.length).fill(new Failed(reason)),
    )
  }

  /** Acks deliveries of one group with one command: each one's outcome, in order. */
  private ackRun(run: readonly AckEgress[]): Promise<unknown[]> {
    const { group } = run[0]!
    let lo = run[0]!.position
    let hi = lo
    for (const { position } of run) {
      if (compareIds(position, lo) < 0) lo = position
      else if (compareIds(position, hi) > 0) hi = position
    }
    const args = ['EVAL', ACK_ALL_SCRIPT, '1', this.key(group.channel), group.name, this.consumer, lo, hi]
    for (const record of run) args.push(record.position)
    return this.command<number[]>(args).then(
      (answers) =>
        (answers as number[]).map((answer) => {
          if (Number(answer) >= 0) return Number(answer) > 0
          this.fencedSettles++
          return false
        }),
      (reason: unknown) => new Array<unknown>(run.length).fill(new Failed(reason)),
    )
  }

  /** The command(s) for one record; resolves to null for a publish the dedup window dropped. */
  private send(record: Egress): Promise<unknown> {
    switch (record.kind) {
      case 'publish': {
        const key = this.key(record.channel)
        // Signed at each attempt: a write retried after an outage carries the time it is written.
        const fields = this.signing === undefined ? ['f', asBuffer(record.frame)] : ['f', asBuffer(record.frame), 's', this.signing.sign(record)]
        const xadd = this.xadd(record.channel, fields)
        if (record.dedupWindowMs === 0) return this.command(['XADD', key, ...xadd])
        const window = record.dedupWindowMs === Infinity ? '0' : String(Math.max(1, Math.ceil(record.dedupWindowMs)))
        const dedupKey = `${this.config.keyPrefix}dd:${record.channel}:${frameIdHex(record.frame)}`
        return this.script(DEDUP, [key, dedupKey, window, ...xadd])
      }
      case 'request': {
        // Infinity (wait for ever) is written as 'Infinity', which reads back as Infinity.
        const fields = ['f', asBuffer(record.frame), 'r', record.replyTo, 't', String(record.timeoutMs)]
        if (this.signing !== undefined) fields.push('s', this.signing.sign(record))
        return this.command(['XADD', this.key(record.channel), ...this.xadd(record.channel, fields)])
      }
      case 'reply': {
        const message = this.signing === undefined ? asBuffer(record.frame) : signedReply(this.signing.sign(record), record.frame)
        return this.command(['PUBLISH', this.replyChannel(record.address), message])
      }
      // Settlements act only on an entry this consumer still holds (see OWNED).
      case 'ack':
        return this.settle(ACK, [this.key(record.group.channel), record.group.name, this.consumer, record.position])
      case 'release': {
        const { group, position, delayMs } = record
        const limit = threshold(group)
        const idle = Math.max(0, limit - Math.ceil(delayMs))
        const done = this.settle(RELEASE, [this.key(group.channel), group.name, this.consumer, position, String(idle)])
        void done.then(
          (applied) => {
            if (!applied) return
            // Reclaimable after the delay: a delay past the threshold keeps the entry held here
            // (its idle time reset) until only the threshold is left.
            if (delayMs > limit) this.holdFor(group, position, delayMs - limit)
            this.groups.get(group.id)?.reclaimSoon(delayMs)
          },
          () => {},
        )
        return done
      }
      case 'dead':
        return this.settle(DEAD, [
          this.key(record.group.channel),
          this.key(record.deadLetter),
          record.group.name,
          this.consumer,
          record.position,
          asBuffer(record.frame),
          ...(this.signing === undefined ? [] : [this.signing.sign(record)]),
        ])
    }
  }

  /** XADD's arguments after the key for an entry of `fields` on `channel`, trimmed as its retention says. */
  private xadd(channel: string, fields: Array<string | Buffer>): Array<string | Buffer> {
    const cap = this.cap(channel)
    const xadd: Array<string | Buffer> = cap === '' ? [] : ['MAXLEN', '~', cap]
    xadd.push('*', ...fields)
    this.trimByAge(channel)
    return xadd
  }

  /** The MAXLEN of `channel`'s stream as its retention says ('' for none). */
  private cap(channel: string): string {
    const maxCount = this.kept.get(channel)?.maxCount
    // 0 (like Infinity) is no limit in Orrery: `MAXLEN ~ 0` would empty the stream.
    return limited(maxCount) ? String(maxCount) : ''
  }

  /** Drops entries older than `channel`'s retention keeps, if it has an age limit. */
  private trimByAge(channel: string): void {
    const maxAgeMs = this.kept.get(channel)?.maxAgeMs
    if (maxAgeMs !== undefined && Number.isFinite(maxAgeMs))
      void this.command(['XTRIM', this.key(channel), 'MINID', '~', String(Math.max(0, Date.now() - maxAgeMs))]).catch(() => {})
  }

  /** The pub/sub channel of reply address `address`. */
  private replyChannel(address: string): string {
    return `${this.config.keyPrefix}reply:${address}`
  }

  openReplies(address: string): Promise<void> {
    this.listening ??= this.listen(address).catch((error: unknown) => {
      this.listening = undefined
      throw error
    })
    return this.listening
  }

  /** Subscribes a connection of its own to `address`: each message is a reply, ingested at once. */
  private async listen(address: string): Promise<void> {
    if (this.closed) throw transportError('CLOSED', `transport ${this.transport} is closed`, { details: { transport: this.transport } })
    const conn = this.newConnection()
    this.listener = conn
    const writer = new IngestWriter()
    // Closed while it connected or subscribed: node-redis does not stop a connection still being
    // made (close's destroy came too early), so it is ended here, or it would keep the process.
    const ifClosed = () => {
      if (this.closed) throw new Error('closed while listening began')
    }
    try {
      await conn.connect()
      ifClosed()
      // node-redis subscribes again by itself after a reconnect.
      await conn.subscribe(
        this.replyChannel(address),
        (message) => {
          if (this.closed) return
          if (this.signing !== undefined) {
            const { signature, frame } = openReply(message)
            if (!this.signing.acceptReply(signature, address, frame)) return
            writer.replied(frame)
          } else writer.replied(message)
          const batch = writer.take()
          if (batch !== undefined) this.sink.ingest(batch)
        },
        true,
      )
      ifClosed()
    } catch (error) {
      if (this.listener === conn) this.listener = undefined
      // Even once destroyed: a destroy during the connect leaves the socket it then opens.
      try {
        conn.destroy()
      } catch {}
      if (this.closed) throw transportError('CLOSED', `transport ${this.transport} is closed`, { details: { transport: this.transport } })
      throw this.connectError(error)
    }
  }

  catchUp(channel: ChannelRef, start: () => void, failed: (error: unknown) => void): () => void {
    const reader = this.mirrors.get(channel.id)
    if (reader === undefined) throw new OrreryError('INTERNAL', `no mirror of ${channel.name} to catch up with`)
    const markerKey = this.markerKey(channel.name)
    // The stream's newest entry, read in this driver's write pipeline: the server runs one
    // connection's commands in order, so this process's publishes queued before the subscribe
    // land before the marker, and those queued after it land after it, without waiting for its
    // answer (a write that failed goes again in the order it was made, the marker too). Those of
    // another Orrery of the process are on another connection: the marker is asked once the ones
    // made before it are written, and the ones made after it wait for its answer (`markers`).
    const ask = (cancelled: () => boolean) =>
      new Promise<string>((resolve, reject) => {
        if (this.closed) return reject(transportError('CLOSED', `transport ${this.transport} is closed`, { details: { transport: this.transport } }))
        const marker: MarkerAsk = { kind: 'marker', channel: channel.name, gone: () => cancelled() || reader.isStopped, answer: resolve }
        const { write, written } = this.writes.ask([marker])
        // Answered: `resolve` ran first. Settled unanswered: it was dropped, its subscription gone.
        written.then(() => reject(new Error('the subscription went before its marker was asked')), reject)
        const others = markers.earlier(markerKey, this.writes)
        if (others !== undefined) holdUntil(write, others)
        this.queue.push(write)
        this.pump()
      })
    return catchUpWith(
      ask,
      (marker) => {
        const forget = markers.add(markerKey, marker, this.writes)
        return () => {
          forget()
          // A marker still queued goes unasked now, and lets the writes behind it go.
          queueMicrotask(() => this.pump())
        }
      },
      (marker) => reader.catchUp(marker, start, failed),
    )
  }

  /** Keeps resetting an entry's idle time for `ms` more, then lets it become reclaimable one threshold later. */
  private holdFor(group: GroupRef, position: string, ms: number): void {
    const step = Math.max(1, Math.min(ms, threshold(group) / 2))
    const timer = setTimeout(() => {
      this.holds.delete(timer)
      if (this.closed) return
      void this.settle(RELEASE, [this.key(group.channel), group.name, this.consumer, position, '0']).then(
        (applied) => {
          if (applied && ms > step) this.holdFor(group, position, ms - step)
        },
        () => {},
      )
    }, step)
    // A delayed retry is no reason to keep a process alive: if it ends, the broker redelivers.
    ;(timer as { unref?: () => void }).unref?.()
    this.holds.add(timer)
  }

  retention(channel: string, retention: BrokerRetention): void {
    this.kept.set(channel, retention)
  }

  stopping(): void {
    this.writes.watch()
  }

  async flushed(): Promise<void> {
    await this.writes.settled()
    // The end of a shutdown (reading stopped, what was held handed back, writes done): this
    // consumer leaves each group it read, unless it still holds entries there.
    if (this.readingStopped) await this.leaveGroups()
    const lost = this.writes.lost()
    if (lost !== undefined) throw lost
  }

  /** Groups this process read (by stream and name), left at shutdown. */
  private readonly joined = new Map<string, GroupRef>()
  private readingStopped = false

  private async leaveGroups(): Promise<void> {
    const groups = [...this.joined.values()]
    this.joined.clear()
    // A group gone (NOGROUP) or a server gone leaves nothing to do. With the connection down the
    // command would wait in node-redis's offline queue for ever (no command timeout): the
    // consumer then stays in the group, holding nothing, as one that died would.
    if (!this.isReady) return
    await Promise.allSettled(groups.map((g) => this.script(LEAVE, [this.key(g.channel), g.name, this.consumer])))
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
    return reader.ready
  }

  async openGroup(group: GroupRef): Promise<void> {
    if (this.groups.has(group.id)) return
    const reader = new GroupReader(this, group)
    this.groups.set(group.id, reader)
    // Closed meanwhile (deleted, or its bus stopping): not made (see `GroupStarts`).
    const gone = () => this.closed || this.groups.get(group.id) !== reader
    const made = this.starts.make(group, this.markerKey(group.channel), () => this.createGroup(group, undefined, gone), gone)
    try {
      await made
      await reader.look()
    } catch (error) {
      // Cut by this Orrery's own stop, or the group's close: not a failure.
      if (gone()) return
      this.groups.delete(group.id)
      throw error
    }
    if (this.groups.get(group.id) === reader) {
      this.joined.set(`${group.channel}\u0000${group.name}`, group)
      reader.start()
    }
  }

  /** @internal Creates the group on the broker (and its stream); one that exists is left as it is. */
  async createGroup(group: GroupRef, from?: string, stopped?: () => boolean): Promise<void> {
    // A group delivers the entries after its id: from time T starts past the last id before T.
    const time = group.start.at === 'time' ? Math.floor(group.start.time) : 0
    const start = group.start.at === 'latest' ? '$' : group.start.at === 'earliest' || time <= 0 ? '0' : `${time - 1}-18446744073709551615`
    try {
      // Sent again after a dropped connection (one that was made before it dropped is BUSYGROUP then).
      await this.read(['XGROUP', 'CREATE', this.key(group.channel), group.name, from ?? start, 'MKSTREAM'], stopped)
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('BUSYGROUP'))) throw error
    }
  }

  claim(group: number, minIdle: number, max: number): void {
    this.groups.get(group)?.claim(minIdle, max)
  }

  closeGroup(group: number): void {
    this.groups.get(group)?.stop()
    this.groups.delete(group)
    this.starts.drop(group)
  }

  wake(): void {
    for (const reader of this.groups.values()) reader.wake()
    for (const reader of this.mirrors.values()) reader.wake()
  }

  /** Groups' blocking reads end: with no room from now on, their readers read nothing new. */
  drain(): void {
    for (const reader of this.groups.values()) void reader.unblock()
  }

  async stopReading(): Promise<void> {
    this.readingStopped = true
    const all: Reader[] = [...this.mirrors.values(), ...this.groups.values()]
    await Promise.all(all.map((r) => r.stopAndWait()))
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    for (const r of this.mirrors.values()) r.stop()
    for (const r of this.groups.values()) r.stop()
    this.queue.length = 0
    clearTimeout(this.retryTimer)
    for (const timer of this.holds) clearTimeout(timer)
    this.holds.clear()
    this.writes.closeAll((write) => this.where(write.records))
    this.reasking.clear()
    // Their answers will not be handled: nothing holds a mirror for them.
    for (const out of [...this.markersOut.values()]) for (const ask of [...out.keys()]) ask.handled?.()
    this.main?.destroy()
    this.main = undefined
    this.listener?.destroy()
    this.listener = undefined
  }

  /** @internal Whether the server refused a command (not a dropped connection or a starting server, which are retried). */
  isServerError(error: unknown): boolean {
    // A server starting or failing over is an outage, not a refusal: the read is tried again.
    return error instanceof this.redis.ErrorReply && !TRANSIENT.test(error.message)
  }

  /** @internal For readers. */
  get isClosed(): boolean {
    return this.closed
  }

  /** @internal A blocking connection of a reader's own. */
  readerConnection(): Connection {
    return this.newConnection()
  }

  /** @internal */
  get sinkOf(): DriverSink {
    return this.sink
  }

  /** @internal */
  get binaryOptions(): object {
    return this.options
  }

  /** @internal How long a write may take (the store's strong namespaces bound theirs by it). */
  get publishTimeoutMs(): number {
    return this.config.publishTimeoutMs
  }

  /** @internal Whether the main connection is up (a command sent now is not held in an offline queue). */
  get isReady(): boolean {
    return this.main?.isReady === true && !this.closed
  }

  /** @internal The prefix of every key this transport writes (the store's strong namespaces put theirs under it). */
  get keyPrefix(): string {
    return this.config.keyPrefix
  }

  /** @internal */
  keyOf(channel: string): string {
    return this.key(channel)
  }
}
