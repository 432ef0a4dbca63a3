/**
 * The Redis Streams driver, on node-redis (`redis` on npm, an optional peer dependency loaded
 * when a redis transport is configured). A bound channel is the stream `<prefix>ch:<name>`, one
 * entry per frame (field `f`); groups are the stream's consumer groups, this process reading as
 * one consumer. The driver only moves bytes: what a delivery means stays in the core.
 */
import { OrreryError } from '../errors.js'
import { LAYOUT as FRAME } from '../frame.js'
import type { CheckedRedisOptions } from './config.js'
import type { BrokerRetention, ChannelRef, Driver, DriverSink, Egress, GroupRef, HistoryBound } from './driver.js'
import { IngestWriter } from './records.js'

/** A Lua script of the driver, run as node-redis runs scripts (EVALSHA, EVAL when the server lacks it). */
type ScriptCall = (...args: Array<string | Buffer>) => Promise<unknown>

/** The driver's scripts, as methods of each connection. */
interface Scripts {
  dedupAdd: ScriptCall
  ackOwned: ScriptCall
  releaseOwned: ScriptCall
  deadOwned: ScriptCall
  leaveGroup: ScriptCall
}

/** The few node-redis calls the driver makes. */
interface Connection extends Scripts {
  connect(): Promise<unknown>
  sendCommand(args: ReadonlyArray<string | Buffer>, options?: object): Promise<unknown>
  duplicate(): Connection
  on(event: string, listener: (...args: unknown[]) => void): unknown
  destroy(): void
  readonly isReady: boolean
  readonly isOpen: boolean
}

/** The part of the `redis` module the driver uses. */
export interface RedisModule {
  createClient(options: object): Connection
  RESP_TYPES: { BLOB_STRING: number }
  defineScript(script: { SCRIPT: string; NUMBER_OF_KEYS: number; parseCommand: (...args: never[]) => void; transformReply: (reply: never) => unknown }): object
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

function transportError(
  code: 'TRANSPORT_UNAVAILABLE' | 'TRANSPORT_AUTH' | 'CLOSED',
  message: string,
  options: { cause?: unknown; details?: Record<string, unknown> } = {},
): OrreryError {
  return new OrreryError(code, message, options)
}

/**
 * Markers of `latest` subscribes not answered yet, by server and stream, across every Orrery of
 * this process: a publish to that stream waits for them, so a publish made after a subscribe
 * (in this process) is after its marker on the broker too.
 */
const markers = new Map<string, Set<Promise<unknown>>>()

/** Compares two stream entry ids (`<ms>-<seq>`). */
function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number)
  const [bm = 0, bs = 0] = b.split('-').map(Number)
  return am - bm || as - bs
}

/**
 * Refusals of a server that is starting, busy or failing over: the write is not done, and is
 * tried again (until publishTimeoutMs) like one a dropped connection lost.
 */
const TRANSIENT = /^(LOADING|BUSY|TRYAGAIN|READONLY|MASTERDOWN|CLUSTERDOWN)\b/

/** Entries read per call, at most. */
const READ_COUNT = 256
/** How long a blocking read waits before it is issued again (it returns early with entries, or when unblocked). */
const BLOCK_MS = 5_000
/** Pause before a failed read is tried again (node-redis reconnects meanwhile). */
const RETRY_MS = 200

/** Sets a key for the dedup window and appends only if it was not set: one publish, once per window across processes. */
const DEDUP_SCRIPT = `local ok
if ARGV[1] == '0' then ok = redis.call('SET', KEYS[2], '1', 'NX') else ok = redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) end
if not ok then return false end
return redis.call('XADD', KEYS[1], unpack(ARGV, 2))`

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

/** Sets the idle time (ARGV[4]) of a delivery this consumer holds: reclaimable by anyone once it passes the threshold. */
const RELEASE_SCRIPT = `${OWNED}return #redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')`

/** Moves a delivery this consumer holds to the dead-letter stream (KEYS[2]): written only if the group let go of it. */
const DEAD_SCRIPT = `${OWNED}if redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'f', ARGV[4])
return 1`

/**
 * Removes this consumer (ARGV[2]) from a group (ARGV[1]) if it holds nothing: removing a consumer
 * drops its pending entries, which would lose them. 1 when removed.
 */
const LEAVE_SCRIPT = `if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) >= 0 and 1 or 0`

/** The scripts as node-redis defines them (`keys` first, then arguments; replies as they come). */
function scripts(redis: RedisModule): Record<keyof Scripts, object> {
  const define = (SCRIPT: string, keys: number) =>
    redis.defineScript({
      SCRIPT,
      NUMBER_OF_KEYS: keys,
      parseCommand: (parser: { pushKey(key: string): void; push(...args: Array<string | Buffer>): void }, ...args: Array<string | Buffer>) => {
        for (let i = 0; i < keys; i++) parser.pushKey(args[i] as string)
        parser.push(...args.slice(keys))
      },
      transformReply: (reply: unknown) => reply,
    })
  return {
    dedupAdd: define(DEDUP_SCRIPT, 2),
    ackOwned: define(ACK_SCRIPT, 1),
    releaseOwned: define(RELEASE_SCRIPT, 1),
    deadOwned: define(DEAD_SCRIPT, 2),
    leaveGroup: define(LEAVE_SCRIPT, 1),
  }
}

/** A broker entry: id and fields (`f` holds the frame). */
type Entry = [Buffer, Array<Buffer> | null]

/** A write not yet acknowledged: its records still to write, in order. */
interface PendingWrite {
  records: Egress[]
  duplicates: number
  resolve(duplicates: number): void
  reject(error: unknown): void
  timer: ReturnType<typeof setTimeout> | undefined
  settled: boolean
}

/** Whether a retention count limits anything (0, like Infinity, is no limit in Orrery). */
function limited(bound: number | undefined): bound is number {
  return bound !== undefined && bound > 0 && Number.isFinite(bound)
}

/** The broker's delivery threshold for a group: a little over its visibility timeout. */
function threshold(group: GroupRef): number {
  return Math.ceil(group.visibilityMs + Math.max(1000, group.visibilityMs / 10))
}

/** A frame's id bytes as hex (the dedup key): the first metadata string. */
function frameIdHex(frame: Uint8Array): string {
  const len = frame[FRAME.headerLen] ?? 0
  return Buffer.from(frame.buffer, frame.byteOffset + FRAME.headerLen + 1, len).toString('hex')
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/** The broker time of an entry id (`<ms>-<n>`). */
function idTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')))
}

function frameOf(fields: Array<Buffer> | null): Buffer | undefined {
  if (fields === null) return undefined
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]!.length === 1 && fields[i]![0] === 0x66) return fields[i + 1]
  return undefined
}

export class RedisDriver implements Driver {
  private main: Connection | undefined
  private closed = false
  /** Set once the first connection was made: from then on drops are reconnected. */
  private connected = false
  private readonly queue: PendingWrite[] = []
  private inFlight = false
  private readonly kept = new Map<string, BrokerRetention>()
  /** Timers holding entries nacked with a delay past the threshold. */
  private readonly holds = new Set<ReturnType<typeof setTimeout>>()
  /** Every write not settled yet (what `flushed` waits for). */
  private readonly unsettled = new Set<Promise<number>>()
  /** The same writes, queued or in flight: `close` fails them all. */
  private readonly writes = new Set<PendingWrite>()
  private readonly mirrors = new Map<number, MirrorReader>()
  private readonly groups = new Map<number, GroupReader>()
  private readonly options: { typeMapping: object }
  private readonly scripts: Record<keyof Scripts, object>
  /** This process's consumer name in every group. */
  readonly consumer: string
  /**
   * Settlements (acks, releases, dead letters) dropped because another consumer held the entry
   * by then: this process's lease had run out and another process took the entry over.
   */
  fencedSettles = 0

  constructor(
    private readonly redis: RedisModule,
    private readonly config: CheckedRedisOptions,
    private readonly sink: DriverSink,
    private readonly transport: string,
  ) {
    this.options = { typeMapping: { [redis.RESP_TYPES.BLOB_STRING]: Buffer } }
    this.scripts = scripts(redis)
    const pid = typeof process === 'object' ? process.pid : 0
    this.consumer = `${pid}-${Math.random().toString(36).slice(2, 10)}`
  }

  private key(channel: string): string {
    return `${this.config.keyPrefix}ch:${channel}`
  }

  /** Runs one of the driver's scripts on the main connection. */
  private script(name: keyof Scripts, args: Array<string | Buffer>): Promise<unknown> {
    if (this.main === undefined || this.closed)
      return Promise.reject(transportError('CLOSED', `transport ${this.transport} is closed`, { details: { transport: this.transport } }))
    return this.main[name](...args)
  }

  /** Runs a fenced settlement: resolves true when it was applied, false when the entry was not this consumer's. */
  private settle(name: 'ackOwned' | 'releaseOwned' | 'deadOwned', args: Array<string | Buffer>): Promise<boolean> {
    return this.script(name, args).then((reply) => {
      if (Number(reply) >= 0) return Number(reply) > 0
      this.fencedSettles++
      return false
    })
  }

  /** Sends one command on the main connection, binary replies as Buffers. */
  command<T>(args: ReadonlyArray<string | Buffer>): Promise<T> {
    if (this.main === undefined || this.closed)
      return Promise.reject(transportError('CLOSED', `transport ${this.transport} is closed`, { details: { transport: this.transport } }))
    return this.main.sendCommand(args, this.options) as Promise<T>
  }

  /** A new connection: errors are the reconnecting client's own business, so they are only watched. */
  private newConnection(): Connection {
    const { url, username, password, tls, connectTimeoutMs } = this.config
    const client = this.redis.createClient({
      url,
      RESP: 2,
      scripts: this.scripts,
      // No per-command timer (node-redis's default 5 s only bounds a command waiting for a
      // reconnect, and costs a timer per command): publishTimeoutMs bounds writes, BLOCK reads.
      commandOptions: { timeout: 0 },
      ...(username === undefined ? {} : { username }),
      ...(password === undefined ? {} : { password }),
      socket: {
        connectTimeout: connectTimeoutMs,
        // The first connection fails at once (create reports it); later drops reconnect with backoff.
        reconnectStrategy: (retries: number) => (this.connected ? Math.min(50 * 2 ** Math.min(retries, 6), 2_000) : false),
        ...(tls ? { tls: true } : {}),
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
    return transportError('TRANSPORT_UNAVAILABLE', `${where} is unreachable at ${this.config.url.replace(/\/\/[^@/]*@/, '//')}: ${message}`, {
      cause: error,
      details: { transport: this.transport },
    })
  }

  // --- writes -------------------------------------------------------------------------------

  write(records: readonly Egress[]): Promise<number> {
    if (this.closed) return Promise.reject(transportError('CLOSED', 'this Orrery is closed', { details: this.where(records) }))
    let write: PendingWrite | undefined
    const written = new Promise<number>((resolve, reject) => {
      write = { records: [...records], duplicates: 0, resolve, reject, timer: undefined, settled: false }
    })
    const w = write!
    w.timer = setTimeout(
      () => this.fail(w, transportError('TRANSPORT_UNAVAILABLE', this.timeoutMessage(), { details: this.where(w.records) })),
      this.config.publishTimeoutMs,
    )
    this.queue.push(w)
    this.writes.add(w)
    this.unsettled.add(written)
    const forget = () => void this.unsettled.delete(written)
    written.then(forget, forget)
    this.pump()
    return written
  }

  /** What a write's error names: this transport and the channel(s) its records write to. */
  private where(records: readonly Egress[]): { transport: string; channel?: string } {
    const channels = new Set(records.map((r) => (r.kind === 'publish' ? r.channel : r.group.channel)))
    return channels.size === 0 ? { transport: this.transport } : { transport: this.transport, channel: [...channels].join(', ') }
  }

  private timeoutMessage(): string {
    return `redis transport ${this.transport} did not take the write within publishTimeoutMs (${this.config.publishTimeoutMs} ms)`
  }

  private fail(write: PendingWrite, error: unknown): void {
    if (write.settled) return
    write.settled = true
    this.writes.delete(write)
    clearTimeout(write.timer)
    write.reject(error)
  }

  private succeed(write: PendingWrite): void {
    if (write.settled) return
    write.settled = true
    this.writes.delete(write)
    clearTimeout(write.timer)
    write.resolve(write.duplicates)
  }

  /**
   * Sends every queued write at once (node-redis pipelines what is sent in one turn), in order.
   * A record refused by a dropped connection is sent again, before anything later, once the
   * client reconnected; one the server refused fails its write.
   */
  private pump(): void {
    if (this.inFlight || this.queue.length === 0 || this.closed) return
    if (markers.size > 0) {
      const wait = this.markersBefore(this.queue)
      if (wait !== undefined) {
        this.inFlight = true
        void wait.then(() => {
          this.inFlight = false
          this.pump()
        })
        return
      }
    }
    this.inFlight = true
    const batch = this.queue.splice(0)
    const sends: Array<Array<Promise<unknown>>> = batch.map((write) => (write.settled ? [] : write.records.map((record) => this.send(record))))
    void Promise.all(sends.map((list) => Promise.allSettled(list))).then((results) => {
      this.inFlight = false
      const retry: PendingWrite[] = []
      results.forEach((outcome, i) => {
        const write = batch[i]!
        if (write.settled) return
        const again: Egress[] = []
        outcome.forEach((r, k) => {
          if (r.status === 'fulfilled') {
            if (r.value === null && write.records[k]!.kind === 'publish') write.duplicates++
          } else if (r.reason instanceof this.redis.ErrorReply && !TRANSIENT.test(r.reason.message)) {
            this.fail(
              write,
              transportError('TRANSPORT_UNAVAILABLE', `redis transport ${this.transport} refused a write: ${r.reason.message}`, {
                cause: r.reason,
                details: this.where([write.records[k]!]),
              }),
            )
          } else again.push(write.records[k]!)
        })
        if (write.settled) return
        if (again.length === 0) {
          this.succeed(write)
          return
        }
        write.records = again
        retry.push(write)
      })
      if (retry.length > 0) {
        this.queue.unshift(...retry)
        setTimeout(() => this.pump(), RETRY_MS)
      } else this.pump()
    })
  }

  /** The command(s) for one record; resolves to null for a publish the dedup window dropped. */
  private send(record: Egress): Promise<unknown> {
    switch (record.kind) {
      case 'publish': {
        const key = this.key(record.channel)
        const keep = this.kept.get(record.channel)
        const xadd: Array<string | Buffer> = []
        // 0 (like Infinity) is no limit in Orrery: `MAXLEN ~ 0` would empty the stream.
        if (limited(keep?.maxCount)) xadd.push('MAXLEN', '~', String(keep!.maxCount))
        xadd.push('*', 'f', asBuffer(record.frame))
        const maxAgeMs = keep?.maxAgeMs
        if (maxAgeMs !== undefined && Number.isFinite(maxAgeMs))
          void this.command(['XTRIM', key, 'MINID', '~', String(Math.max(0, Date.now() - maxAgeMs))]).catch(() => {})
        if (record.dedupWindowMs === 0) return this.command(['XADD', key, ...xadd])
        const window = record.dedupWindowMs === Infinity ? '0' : String(Math.max(1, Math.ceil(record.dedupWindowMs)))
        const dedupKey = `${this.config.keyPrefix}dd:${record.channel}:${frameIdHex(record.frame)}`
        return this.script('dedupAdd', [key, dedupKey, window, ...xadd])
      }
      // Settlements act only on an entry this consumer still holds (see OWNED).
      case 'ack':
        return this.settle('ackOwned', [this.key(record.group.channel), record.group.name, this.consumer, record.position])
      case 'release': {
        const { group, position, delayMs } = record
        const limit = threshold(group)
        const idle = Math.max(0, limit - Math.ceil(delayMs))
        const done = this.settle('releaseOwned', [this.key(group.channel), group.name, this.consumer, position, String(idle)])
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
        return this.settle('deadOwned', [
          this.key(record.group.channel),
          this.key(record.deadLetter),
          record.group.name,
          this.consumer,
          record.position,
          asBuffer(record.frame),
        ])
    }
  }

  catchUp(channel: ChannelRef, start: () => void): () => void {
    const reader = this.mirrors.get(channel.id)
    if (reader === undefined) throw new OrreryError('INTERNAL', `no mirror of ${channel.name} to catch up with`)
    const key = this.key(channel.name)
    // The stream's newest entry as the broker sees it now. Publishes of other Orrery instances
    // of this process made after this call wait for the answer (see `markers`), so they land
    // after it; this instance's own go after it on the same connection.
    const marker = this.command<Entry[]>(['XREVRANGE', key, '+', '-', 'COUNT', '1']).then((entries) =>
      entries.length === 0 ? '0-0' : entries[0]![0].toString('latin1'),
    )
    const markerKey = `${this.config.url}\u0000${key}`
    const pending = markers.get(markerKey) ?? new Set<Promise<unknown>>()
    markers.set(markerKey, pending)
    pending.add(marker)
    const forget = () => {
      pending.delete(marker)
      if (pending.size === 0 && markers.get(markerKey) === pending) markers.delete(markerKey)
    }
    marker.then(forget, forget)
    return reader.catchUp(marker, start)
  }

  /** Resolves once this process's markers on the keys `records` publish to are answered (undefined: none pending). */
  private markersBefore(records: readonly PendingWrite[]): Promise<unknown> | undefined {
    const waits: Promise<unknown>[] = []
    for (const write of records)
      for (const record of write.records) {
        if (record.kind !== 'publish') continue
        const set = markers.get(`${this.config.url}\u0000${this.key(record.channel)}`)
        if (set !== undefined) for (const m of set) waits.push(m)
      }
    return waits.length === 0 ? undefined : Promise.allSettled(waits)
  }

  /** Keeps resetting an entry's idle time for `ms` more, then lets it become reclaimable one threshold later. */
  private holdFor(group: GroupRef, position: string, ms: number): void {
    const step = Math.max(1, Math.min(ms, threshold(group) / 2))
    const timer = setTimeout(() => {
      this.holds.delete(timer)
      if (this.closed) return
      void this.settle('releaseOwned', [this.key(group.channel), group.name, this.consumer, position, '0']).then(
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

  async flushed(): Promise<void> {
    await Promise.allSettled([...this.unsettled])
    // The end of a shutdown (reading stopped, what was held handed back, writes done): this
    // consumer leaves each group it read, unless it still holds entries there.
    if (this.readingStopped) await this.leaveGroups()
  }

  /** Groups this process read (by stream and name), left at shutdown. */
  private readonly joined = new Map<string, GroupRef>()
  private readingStopped = false

  private async leaveGroups(): Promise<void> {
    const groups = [...this.joined.values()]
    this.joined.clear()
    // A group gone (NOGROUP) or a server gone leaves nothing to do.
    await Promise.allSettled(groups.map((g) => this.script('leaveGroup', [this.key(g.channel), g.name, this.consumer])))
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
    try {
      await this.createGroup(group)
    } catch (error) {
      this.groups.delete(group.id)
      // Cut by this Orrery's own stop: not a failure.
      if (this.closed) return
      throw error
    }
    if (this.groups.get(group.id) === reader) {
      this.joined.set(`${group.channel}\u0000${group.name}`, group)
      reader.start()
    }
  }

  /** @internal Creates the group on the broker (and its stream); one that exists is left as it is. */
  async createGroup(group: GroupRef, from?: string): Promise<void> {
    // A group delivers the entries after its id: from time T starts past the last id before T.
    const time = group.start.at === 'time' ? Math.floor(group.start.time) : 0
    const start = group.start.at === 'latest' ? '$' : group.start.at === 'earliest' || time <= 0 ? '0' : `${time - 1}-18446744073709551615`
    try {
      await this.command(['XGROUP', 'CREATE', this.key(group.channel), group.name, from ?? start, 'MKSTREAM'])
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('BUSYGROUP'))) throw error
    }
  }

  closeGroup(group: number): void {
    this.groups.get(group)?.stop()
    this.groups.delete(group)
  }

  wake(): void {
    for (const reader of this.groups.values()) reader.wake()
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
    for (const timer of this.holds) clearTimeout(timer)
    this.holds.clear()
    for (const write of [...this.writes])
      this.fail(write, transportError('CLOSED', 'this Orrery closed before the write was made', { details: this.where(write.records) }))
    this.main?.destroy()
    this.main = undefined
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

  /** @internal */
  keyOf(channel: string): string {
    return this.key(channel)
  }
}

/**
 * A loop of blocking reads on a connection of its own (a blocking command would hold up every
 * other command on a shared one). `stopAndWait` unblocks the read in flight, so what it brought
 * is still handed over.
 */
abstract class Reader {
  protected conn: Connection | undefined
  protected stopped = false
  private clientId: string | undefined
  private loop: Promise<void> | undefined
  protected readonly writer = new IngestWriter()

  constructor(protected readonly driver: RedisDriver) {}

  protected run(): void {
    this.loop = this.body().catch((error) => {
      if (!this.stopped) this.driver.sinkOf.failed(error)
    })
  }

  private async body(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.conn === undefined) {
          // Kept before it connects: a reader stopped meanwhile destroys it (a connect that keeps
          // retrying would otherwise hold the process open).
          const conn = this.driver.readerConnection()
          this.conn = conn
          await conn.connect()
        }
        if (this.stopped) break
        await this.step()
      } catch (error) {
        if (this.stopped || this.driver.isClosed) break
        // A connection that gave up (not one reconnecting) is replaced.
        if (this.conn !== undefined && !this.conn.isOpen) {
          this.conn.destroy()
          this.conn = undefined
        }
        if (this.driver.isServerError(error) && !(await this.recover(error))) this.driver.sinkOf.failed(error)
        await new Promise((r) => setTimeout(r, RETRY_MS))
      }
    }
    this.conn?.destroy()
    this.conn = undefined
  }

  /** One blocking read, with this connection's id asked first (in the same round trip) for `stopAndWait`. */
  protected blocking<T>(args: ReadonlyArray<string>): Promise<T> {
    const conn = this.conn!
    void conn.sendCommand(['CLIENT', 'ID']).then(
      (id) => {
        this.clientId = String(id)
      },
      () => {},
    )
    return conn.sendCommand(args, this.driver.binaryOptions) as Promise<T>
  }

  protected abstract step(): Promise<void>

  /** Mends what a server refusal says is missing; true when it did (the read is then tried again). */
  protected recover(_error: unknown): Promise<boolean> {
    return Promise.resolve(false)
  }

  protected ingest(): void {
    const batch = this.writer.take()
    if (batch !== undefined) this.driver.sinkOf.ingest(batch)
  }

  stop(): void {
    this.stopped = true
    this.conn?.destroy()
    this.conn = undefined
  }

  async stopAndWait(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.clientId !== undefined) await this.driver.command(['CLIENT', 'UNBLOCK', this.clientId]).catch(() => {})
    const done = this.loop ?? Promise.resolve()
    // A read the server does not unblock (an old server, a dropped connection) is cut after 1 s.
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([done, new Promise((r) => (timer = setTimeout(r, 1_000)))])
    clearTimeout(timer)
    this.stop()
  }
}

/** Follows one channel's stream into its mirror: history first, then what comes. */
class MirrorReader extends Reader {
  readonly ready: Promise<void>
  private last = '0-0'
  /** Subscribes waiting for the mirror to reach a marker (`after`: undefined until it is known). */
  private readonly waiters: Array<{ after: string | undefined; start: () => void }> = []

  /** Runs `start` once every entry up to `marker` is in the mirror, and none after it. */
  catchUp(marker: Promise<string>, start: () => void): () => void {
    const waiter: { after: string | undefined; start: () => void } = { after: undefined, start }
    this.waiters.push(waiter)
    marker.then(
      (id) => {
        waiter.after = id
        this.release()
      },
      (error: unknown) => {
        this.cancel(waiter)
        // Cut by this Orrery's own stop: the subscriber starts on a closed bus, which ends it.
        if (this.driver.isClosed || this.stopped) start()
        else this.driver.sinkOf.failed(error)
      },
    )
    return () => this.cancel(waiter)
  }

  private cancel(waiter: { after: string | undefined; start: () => void }): void {
    const i = this.waiters.indexOf(waiter)
    if (i >= 0) this.waiters.splice(i, 1)
  }

  /** Starts the waiters whose marker the mirror has reached (before `next`, the entry about to be added, if given). */
  private release(next?: string): void {
    if (this.waiters.length === 0) return
    const due = this.waiters.filter(
      (w) => w.after !== undefined && (compareIds(this.last, w.after) >= 0 || (next !== undefined && compareIds(next, w.after) > 0)),
    )
    if (due.length === 0) return
    // What is read so far goes in first: the subscription starts after it.
    this.ingest()
    for (const w of due) {
      this.cancel(w)
      w.start()
    }
  }

  constructor(
    driver: RedisDriver,
    private readonly channel: ChannelRef,
    bound: HistoryBound,
  ) {
    super(driver)
    // Sent now, on the main connection: a publish made after the subscribe is sent after this
    // read, so it is not history but comes through the blocking read.
    const key = driver.keyOf(channel.name)
    const min = Number.isFinite(bound.maxAgeMs) ? `${Math.max(0, Math.floor(Date.now() - bound.maxAgeMs))}-0` : '-'
    const count = limited(bound.maxCount) ? ['COUNT', String(bound.maxCount)] : []
    this.ready = driver.command<Entry[]>(['XREVRANGE', key, '+', min, ...count]).then(
      (entries) => {
        for (let i = entries.length - 1; i >= 0; i--) this.add(entries[i]!)
        this.ingest()
        this.release()
        this.run()
      },
      (error: unknown) => {
        // Cut by this Orrery's own stop: nothing failed, and the bus (closed by then) ends its
        // subscribers instead of reporting the disconnect as theirs.
        if (driver.isClosed || this.stopped) return
        throw error
      },
    )
  }

  private add(entry: Entry): void {
    const id = entry[0].toString('latin1')
    if (this.waiters.length > 0) this.release(id)
    this.last = id
    const frame = frameOf(entry[1])
    if (frame !== undefined) this.writer.live(this.channel.id, idTime(id), frame)
  }

  protected async step(): Promise<void> {
    const key = this.driver.keyOf(this.channel.name)
    const reply = await this.blocking<Array<[Buffer, Entry[]]> | null>([
      'XREAD',
      'COUNT',
      String(READ_COUNT),
      'BLOCK',
      String(BLOCK_MS),
      'STREAMS',
      key,
      this.last,
    ])
    if (reply === null) return
    for (const [, entries] of reply) for (const entry of entries) this.add(entry)
    this.ingest()
    this.release()
  }
}

/** Reads one group for this process: new entries as room allows, and entries idle past the threshold from any consumer. */
class GroupReader extends Reader {
  private waiting: (() => void) | undefined
  private reclaimTimer: ReturnType<typeof setInterval> | undefined
  private soon: ReturnType<typeof setTimeout> | undefined
  private reclaiming = false
  /**
   * A reclaim is due (its period passed, or the last one took all it asked for): the next read
   * with room reclaims first. Otherwise a busy reader, whose room is taken by new entries the
   * moment it frees, would leave what a dead process held waiting behind the whole backlog.
   */
  private due = false

  constructor(
    driver: RedisDriver,
    private readonly group: GroupRef,
  ) {
    super(driver)
  }

  start(): void {
    this.run()
    const every = Math.max(50, Math.min(this.group.visibilityMs / 2, 1000))
    this.reclaimTimer = setInterval(() => {
      this.due = true
      this.reclaim()
    }, every)
    // Housekeeping: it must not keep the process alive on its own.
    ;(this.reclaimTimer as { unref?: () => void }).unref?.()
  }

  wake(): void {
    const w = this.waiting
    this.waiting = undefined
    w?.()
  }

  /** Runs the reclaim once `delayMs` passed (a released entry becomes reclaimable then). */
  reclaimSoon(delayMs: number): void {
    if (this.soon !== undefined) return
    this.soon = setTimeout(() => {
      this.soon = undefined
      this.reclaim()
    }, Math.max(0, delayMs) + 1)
  }

  protected async step(): Promise<void> {
    if (this.due) {
      this.reclaim()
      // Still due when it could not start (no room yet).
      if (this.reclaimRun !== undefined) this.due = false
    }
    // Entries idle past the threshold go before new ones: the read waits for the reclaim.
    if (this.reclaimRun !== undefined) {
      await this.reclaimRun
      return
    }
    // What a reclaim in flight asked for is spoken for.
    const room = this.driver.sinkOf.groupRoom(this.group.id) - this.claiming
    if (room <= 0) {
      // Woken when room may have been made; at most a second later anyway.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.waiting = undefined
          resolve()
        }, 1_000)
        this.waiting = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      return
    }
    const { name, channel } = this.group
    const key = this.driver.keyOf(channel)
    const count = Math.min(room, READ_COUNT)
    const reply = await this.blocking<Array<[Buffer, Entry[]]> | null>([
      'XREADGROUP',
      'GROUP',
      name,
      this.driver.consumer,
      'COUNT',
      String(count),
      'BLOCK',
      String(BLOCK_MS),
      'STREAMS',
      key,
      '>',
    ])
    if (reply === null) return
    for (const [, entries] of reply) for (const entry of entries) this.add(entry, 1)
    this.ingest()
  }

  /**
   * Deliveries a reclaim in flight asked for: the blocking read leaves them out. (A reclaim does
   * not leave out what a blocking read asked for, which may wait for seconds: the two may bring
   * more than the room, which then waits here for a member.)
   */
  private claiming = 0

  /** A server that lost its data (restarted without it) lost the group too: it is made again. */
  protected override async recover(error: unknown): Promise<boolean> {
    if (!(error instanceof Error && error.message.startsWith('NOGROUP'))) return false
    // From the last entry this process was given ('$' when none): what was acked is not replayed.
    await this.driver.createGroup(this.group, this.lastRead ?? '$')
    return true
  }

  private add(entry: Entry, count: number): void {
    const id = entry[0].toString('latin1')
    if (this.lastRead === undefined || compareIds(id, this.lastRead) > 0) this.lastRead = id
    const frame = frameOf(entry[1])
    if (frame !== undefined) {
      this.writer.group(this.group.id, count, id, frame)
      return
    }
    // Not Orrery's (no frame), or deleted: the group forgets it instead of reclaiming it forever.
    void this.driver.command(['XACK', this.driver.keyOf(this.group.channel), this.group.name, id]).catch(() => {})
  }

  /** The newest entry id this reader was given. */
  private lastRead: string | undefined

  /** Takes entries idle past the threshold (another process died holding them, or one was released). */
  private reclaim(): void {
    if (this.stopped || this.reclaiming || this.driver.isClosed) return
    const room = this.driver.sinkOf.groupRoom(this.group.id)
    if (room <= 0) return
    this.reclaiming = true
    const claiming = Math.min(room, READ_COUNT)
    this.claiming = claiming
    const { name, channel } = this.group
    const key = this.driver.keyOf(channel)
    const idle = String(threshold(this.group))
    this.reclaimRun = this.driver
      .command<Array<[Buffer, Buffer, number, number]>>(['XPENDING', key, name, 'IDLE', idle, '-', '+', String(claiming)])
      .then(async (pending) => {
        if (pending.length === 0 || this.stopped) return
        const counts = new Map<string, number>()
        for (const [id, , , count] of pending) counts.set(id.toString('latin1'), Number(count))
        const claimed = await this.driver.command<Array<Entry | null>>(['XCLAIM', key, name, this.driver.consumer, idle, ...counts.keys()])
        // Claimed during a shutdown, they still go in: the shutdown then hands them back.
        if (this.driver.isClosed) return
        for (const entry of claimed) {
          if (entry === null) continue
          this.add(entry, (counts.get(entry[0].toString('latin1')) ?? 0) + 1)
        }
        this.ingest()
        // All it asked for was idle: more may be.
        if (pending.length >= claiming) this.due = true
      })
      .catch((error) => {
        if (!this.stopped && this.driver.isServerError(error)) this.driver.sinkOf.failed(error)
      })
      .finally(() => {
        this.claiming = 0
        this.reclaiming = false
        this.reclaimRun = undefined
      })
  }

  /** A reclaim in flight (a shutdown waits for it: what it claims is handed back). */
  private reclaimRun: Promise<void> | undefined

  override async stopAndWait(): Promise<void> {
    clearInterval(this.reclaimTimer)
    await super.stopAndWait()
    await this.reclaimRun
  }

  override stop(): void {
    clearInterval(this.reclaimTimer)
    clearTimeout(this.soon)
    this.wake()
    super.stop()
  }
}
