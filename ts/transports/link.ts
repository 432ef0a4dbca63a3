/**
 * The per-Orrery wiring between the bus facade and its transports' drivers: which channels and
 * groups are bound to which driver, egress drained after each flush and each publish and handed
 * to the drivers, ingest handed back to the core. Only an Orrery made with `transports` has one,
 * so an unbound Orrery's hot paths never reach this module.
 */
import type { BusCore, OpenNatsWire } from '../engines/backend.js'
import { DEFAULTS, FRAME, GROUP_STATS } from '../engines/manifest.js'
import { CONTROL_GROUP, DEAD_LETTER_SUFFIX } from '../bus/options.js'
import type { FrameWriter } from '../frame.js'
import { type ErrorCode, failureOf, isOrreryError, OrreryError } from '../errors.js'
import { type Capability, type CapabilitySet, TRANSPORT_CAPABILITIES, type TransportKind, unsupported } from './capabilities.js'
import type { CheckedKafkaOptions, CheckedNatsOptions, CheckedRedisOptions, CheckedTransport, CheckedTransports } from './config.js'
import type { Driver, DriverSink, Egress, GroupRef, GroupStart, Refused } from './driver.js'
import { DurableDisk } from './durable.js'
import { forEachEgress, IngestWriter, REMOTE } from './records.js'
import { type RefusalReport, RefusalReports } from './refusal-reports.js'

export type { RefusalReport } from './refusal-reports.js'

/** What the link needs of its bus. */
export interface TransportHost {
  readonly core: BusCore
  now(): number
  scheduleFlush(): void
  noteDeadline(): void
  /** A failure no caller waits for: reported on the bus's events. */
  failed(transport: string, error: unknown): void
  /** The request with reply token `token` could not be written: it fails with `error` at once. */
  requestFailed(token: number, error: unknown): void
  /** The channel of this bus's open request with reply token `token` (a refused reply is counted there). */
  requestChannel(token: number): string | undefined
  /** Messages a transport's `signing` refused: reported on the bus's events (at most once per interval per transport and reason). */
  refused(report: RefusalReport): void
  /** A transport's server is reachable again after an outage of `downMs` (reported as a transport-error when it began). */
  restored(transport: string, downMs: number): void
}

/**
 * What a graceful stop (`orrery.shutdown()`) could do. Either way the Orrery is closed after it
 * and nothing of its transports stays open; what was not handed back returns to the other
 * processes once its visibility timeout has passed, as after `close()`.
 */
export interface ShutdownOutcome {
  /** Whether every transport stopped reading, handed back what this process held and settled every write in time. */
  readonly graceful: boolean
  /**
   * What did not: a TRANSPORT_UNAVAILABLE per step a transport could not finish, `details`
   * naming the `transport` and the `step` (`stop-reading`, `hand-back`, `writes`).
   */
  readonly errors: readonly OrreryError[]
}

/** How often a draining shutdown looks whether its groups' members are done. */
const DRAIN_POLL_MS = 25
const MEMBERS = GROUP_STATS.indexOf('members')
const BACKLOG = GROUP_STATS.indexOf('backlog')
const PENDING = GROUP_STATS.indexOf('pending')

const GRACEFUL: ShutdownOutcome = Object.freeze({ graceful: true, errors: Object.freeze([]) as readonly OrreryError[] })

/** How long a stop waits for a transport at each step: its publishTimeoutMs and a second. */
function boundOf(t: CheckedTransport): number {
  return 'publishTimeoutMs' in t.options ? t.options.publishTimeoutMs + 1_000 : 1_000
}

/** Waits for `step` of transport(s) `name` at most `ms`; a failure or the bound passing is added to `errors`. */
async function within(step: Promise<unknown>, ms: number, name: string, what: string, errors: OrreryError[]): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const said = { 'stop-reading': 'stop reading', 'hand-back': 'hand back what this process held', writes: 'settle its writes' }[what] ?? what
  try {
    await Promise.race([
      step,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new OrreryError('TRANSPORT_UNAVAILABLE', `did not end within ${ms} ms (the server unreachable?)`)), ms)
      }),
    ])
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error)
    const transport = isOrreryError(error) && typeof error.details['transport'] === 'string' ? error.details['transport'] : name
    errors.push(
      new OrreryError('TRANSPORT_UNAVAILABLE', `transport ${transport} could not ${said} at shutdown: ${why}`, {
        cause: error,
        details: { transport, step: what },
      }),
    )
  } finally {
    clearTimeout(timer)
  }
}

/** What `bus.binding(channel)` tells. */
export interface ChannelBinding {
  readonly transport: string
  readonly kind: TransportKind
  readonly capabilities: CapabilitySet
}

/** A channel bound to a driver. */
export interface BoundChannel {
  readonly id: number
  readonly name: string
  readonly transport: CheckedTransport
  readonly driver: Driver
  /** Set once the mirror's history is in: subscribers start at once. */
  mirrored: boolean
  mirror: Promise<void> | undefined
  /** The local retention (bounds the history a mirror reads). */
  maxCount: number
  maxAgeMs: number
}

/** Makes a driver for a transport of kind `redis` (the module is loaded only then). */
export type DriverFactory = (options: CheckedRedisOptions, sink: DriverSink, transport: string) => Promise<Driver>

const DEAD_LETTER = '.dead-letter'
/** Transport kinds that stay in this process: a run-time binding for other processes refuses them. */
const LOCAL_KINDS: readonly string[] = ['memory', 'durable']

/** Broker positions are ASCII (Redis entry ids), and so are reply addresses. */
const POSITION = new TextDecoder()

/** A group this process reads from a broker, and its opening (see `Transports.openGroup`). */
interface RemoteGroup {
  readonly ref: GroupRef
  readonly driver: Driver
  opened: Promise<void>
  deleted?: boolean
}

/** Consecutive publishes or requests for one driver, written as one write (in batch order). */
interface Run {
  readonly requests: boolean
  readonly records: Egress[]
}

/** The reply token a request's frame carries. */
function replyToken(frame: Uint8Array): number {
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(FRAME.offReply, true)
}

async function redisDriver(options: CheckedRedisOptions, sink: DriverSink, transport: string): Promise<Driver> {
  const { loadRedis, RedisDriver } = await import('./redis.js')
  return new RedisDriver(await loadRedis(transport), options, sink, transport)
}

async function natsDriver(options: CheckedNatsOptions, sink: DriverSink, transport: string, openWire: OpenNatsWire | undefined): Promise<Driver> {
  const { loadNats, NatsDriver } = await import('./nats.js')
  return new NatsDriver(await loadNats(options.servers, transport), options, sink, transport, openWire)
}

async function kafkaDriver(options: CheckedKafkaOptions, sink: DriverSink, transport: string): Promise<Driver> {
  const { loadKafka, KafkaDriver } = await import('./kafka.js')
  return new KafkaDriver(await loadKafka(transport), options, sink, transport)
}

/** 64 random bits as 16 hex digits: two processes never share one in practice. */
export function newProcessId(): string {
  let id = ''
  for (const b of globalThis.crypto.getRandomValues(new Uint8Array(8))) id += b.toString(16).padStart(2, '0')
  return id
}

export class Transports {
  private host: TransportHost | undefined
  private readonly drivers = new Map<number, Driver>()
  /** Channels bound to a driver, by local id. */
  private readonly bound = new Map<number, BoundChannel>()
  /** Channels bound to a `memory` transport: local, named only for `binding`. */
  private readonly local = new Map<number, CheckedTransport>()
  /**
   * Reply addresses opened on each driver, once it carried a request; writes to a driver wait
   * for its listener, so no reply to a request written there can come before it listens.
   */
  private readonly replies = new Map<Driver, Promise<void>>()
  /** Drivers whose reply listener is up: their writes go out at once. */
  private readonly listening = new Set<Driver>()
  /** Remote groups by core id (kept after a delete: its releases are still drained). */
  private readonly groups = new Map<number, RemoteGroup>()
  private closed = false
  /** Whether groups that could not be opened are opened again (until the bus stops). */
  private opening = true
  /** The timers of those attempts. */
  private readonly retries = new Set<ReturnType<typeof setTimeout>>()
  /** The durable transport's file, when one is configured (opened at `attach`). */
  private disk: DurableDisk | undefined
  /** Channels kept on disk (by local id): a publish to one waits for its commit. */
  private readonly durable = new Set<number>()
  /** Bindings made at run time (`bindAtRunTime`), by pattern: consulted before the configured ones. */
  private readonly runtime = new Map<string, CheckedTransport>()
  /** Every name interned here, with the transport it was bound to (undefined: unbound). */
  private readonly interned = new Map<string, CheckedTransport | undefined>()
  /**
   * This Orrery's address on its transports, made once per link: 16 random hex digits. Replies
   * to its requests are sent to it, and the shared registry stamps its events with it.
   */
  readonly processId: string = newProcessId()
  /** What signing refused, by channel name. */
  private readonly refusals = new Map<string, { signature: number; replay: number }>()
  /** Refusals on their way to the bus's events (a window per transport and reason). */
  private readonly refusalReports = new RefusalReports((report) => {
    if (!this.closed) this.host?.refused(report)
  })

  private constructor(private readonly config: CheckedTransports) {}

  /**
   * Connects every transport; on any failure, closes those that connected and throws the first
   * failure. `openNatsWire`: the engine's NATS wire, if it has one (see nats-wire.ts).
   */
  static async open(config: CheckedTransports, openNatsWire?: OpenNatsWire, makeRedis: DriverFactory = redisDriver): Promise<Transports> {
    const link = new Transports(config)
    const made = await Promise.allSettled(
      config.transports.map(async (t) => {
        if (t.options.kind === 'memory' || t.options.kind === 'durable') return
        const sink = link.sinkFor(t.name)
        const driver =
          t.options.kind === 'nats'
            ? await natsDriver(t.options, sink, t.name, openNatsWire)
            : t.options.kind === 'kafka'
              ? await kafkaDriver(t.options, sink, t.name)
              : await makeRedis(t.options, sink, t.name)
        link.drivers.set(t.id, driver)
        await driver.connect()
      }),
    )
    const failure = made.find((r) => r.status === 'rejected')
    if (failure) {
      link.close()
      throw failure.reason
    }
    return link
  }

  private sinkFor(transport: string): DriverSink {
    const memberRoom = (group: number): number => this.room(transport, (core) => core.groupRoom(group), 'UNKNOWN_GROUP')
    return {
      ingest: (batch) => {
        const host = this.host
        if (host === undefined || this.closed) return
        try {
          host.core.ingest(batch, host.now())
        } catch (error) {
          host.failed(transport, error)
          return
        }
        host.noteDeadline()
        host.scheduleFlush()
      },
      // A group deleted meanwhile has no room; any other failure is reported.
      // None while draining: groups read nothing new, their members finish what was read.
      groupRoom: (group) => (this.draining ? 0 : memberRoom(group)),
      memberRoom,
      mirrorRoom: (channel) => this.room(transport, (core) => core.mirrorRoom(channel)),
      failed: (error) => this.host?.failed(transport, error),
      refused: (refused) => this.refused(transport, refused),
      connection: (up, cause) => this.connection(transport, up, cause),
    }
  }

  /**
   * How much a group's or a mirror's local side can take now (`read` asks the core): 0 once
   * closed, and 0 when the core fails, which is reported unless its code is `quiet`.
   */
  private room(transport: string, read: (core: BusCore) => number, quiet?: ErrorCode): number {
    const host = this.host
    if (host === undefined || this.closed) return 0
    try {
      return read(host.core)
    } catch (error) {
      if (quiet === undefined || !isOrreryError(error, quiet)) host.failed(transport, error)
      return 0
    }
  }

  /** Since when each transport's server has been unreachable. */
  private readonly down = new Map<string, number>()

  /**
   * A transport's connection went or came back: the outage is one transport-error when it
   * begins, and one transport-restored when it ends, however often the client retries between.
   */
  private connection(transport: string, up: boolean, cause: unknown): void {
    const host = this.host
    if (host === undefined || this.closed) return
    const since = this.down.get(transport)
    if (!up) {
      if (since !== undefined) return
      this.down.set(transport, Date.now())
      const why = cause instanceof Error ? cause.message : cause === undefined ? '' : String(cause)
      host.failed(
        transport,
        new OrreryError(
          'TRANSPORT_UNAVAILABLE',
          `transport ${transport} lost its connection to the server${why === '' ? '' : ` (${why})`}: writes wait for it up to publishTimeoutMs, readers go on once it is back (a transport-restored event says when)`,
          { cause, details: { transport, outage: true } },
        ),
      )
      return
    }
    if (since === undefined) return
    this.down.delete(transport)
    host.restored(transport, Date.now() - since)
  }

  /** Counts a refused message on its channel and reports it (refusal-reports.ts: at once, or with the others at the end of its window). */
  private refused(transport: string, refused: Refused): void {
    const host = this.host
    if (host === undefined || this.closed) return
    const channel = refused.channel ?? (refused.replyToken === undefined ? undefined : host.requestChannel(refused.replyToken))
    if (channel !== undefined) {
      let counts = this.refusals.get(channel)
      if (counts === undefined) {
        counts = { signature: 0, replay: 0 }
        this.refusals.set(channel, counts)
      }
      counts[refused.reason]++
    }
    this.refusalReports.add(transport, refused.reason, channel, refused.detail)
  }

  /** What signing refused of `channel` in this process. */
  refusalsOf(channel: string): { readonly signatureRefused: number; readonly replayRefused: number } {
    const counts = this.refusals.get(channel)
    return { signatureRefused: counts?.signature ?? 0, replayRefused: counts?.replay ?? 0 }
  }

  /** @internal The bus this link serves. */
  attach(host: TransportHost): void {
    this.host = host
    // Before any channel is used: the durable channels come back from the file first.
    for (const t of this.config.transports) if (t.options.kind === 'durable') this.disk = DurableDisk.open(host.core, t.name, t.options)
  }

  /** A channel interned for the first time: bound before anything else touches it, if a binding matches. */
  intern(name: string, id: number): void {
    const transport = this.ruleFor(name)
    this.interned.set(name, transport)
    if (transport === undefined) {
      // Read back from the durable file, though no binding names it any more: still on disk.
      if (this.disk?.isDurable(id)) this.durable.add(id)
      return
    }
    if (transport.kind === 'durable') {
      // A local channel, kept on disk (a channel read back from the file is durable already).
      this.disk!.makeDurable(id)
      this.durable.add(id)
      this.local.set(id, transport)
      return
    }
    if (transport.kind === 'memory') {
      this.local.set(id, transport)
      return
    }
    const core = this.host!.core
    core.bind(id, transport.id)
    this.track(id, name, transport)
    // The core bound the dead-letter channel along with it: its PUBLISH records (a subscriber's
    // expired messages) must find it here even if this process never names it.
    if (!name.endsWith(DEAD_LETTER)) {
      const deadLetter = `${name}${DEAD_LETTER}`
      let dl: number | undefined
      try {
        dl = core.channel(deadLetter)
      } catch {
        // A name too long for a dead-letter channel has none (the core binds none either).
      }
      if (dl !== undefined) this.track(dl, deadLetter, transport)
    }
  }

  /** The transport a run-time binding, else a configured one, sends `name` to (a dead letter follows its channel). */
  private ruleFor(name: string): CheckedTransport | undefined {
    for (const [pattern, transport] of this.runtime) {
      const prefix = pattern.endsWith('*') ? pattern.slice(0, -1) : undefined
      const own = name.endsWith(DEAD_LETTER) ? name.slice(0, -DEAD_LETTER.length) : undefined
      if (prefix === undefined ? name === pattern || own === pattern : name.startsWith(prefix)) return transport
    }
    return this.config.rules.match(name)
  }

  /**
   * Binds channels from now on, as `bindings` would have at create: each pattern an exact name or
   * a prefix ending in `*`, all to the transport named `transport` (`option` names what the caller
   * was given, for errors). Checked whole first, nothing bound on a refusal (`INVALID_OPTION`): an
   * unknown or `memory` transport; a channel a pattern covers that is in use already, unbound or
   * bound elsewhere; a configured binding that sends what a pattern covers elsewhere. A run-time
   * binding wins over a narrower configured one; binding a pattern again to the same transport is
   * a no-op.
   */
  bindAtRunTime(patterns: readonly string[], transport: string, option: string): void {
    const target = this.config.transports.find((t) => t.name === transport)
    const refuse = (why: string) => {
      throw new OrreryError('INVALID_OPTION', `${option} ${why}`, { details: { option, value: transport } })
    }
    if (target === undefined)
      refuse(
        `must name a transport of \`transports\` (${this.config.transports.map((t) => t.name).join(', ') || 'none given'}), not ${JSON.stringify(transport)}`,
      )
    // A memory or durable transport is this process's own: no other process reaches it.
    if (LOCAL_KINDS.includes(target!.kind)) refuse(`names transport ${transport}, a ${target!.kind} transport: other processes cannot reach it`)
    for (const pattern of patterns) {
      const prefix = pattern.endsWith('*') ? pattern.slice(0, -1) : undefined
      const earlier = this.runtime.get(pattern)
      if (earlier !== undefined && earlier !== target) refuse(`binds ${pattern} to ${transport}, bound to ${earlier.name} at run time already`)
      const configured = this.config.rules.match(prefix ?? pattern)
      if (configured !== undefined && configured !== target) refuse(`binds ${pattern} to ${transport}, but \`bindings\` send it to ${configured.name}`)
      for (const [name, bound] of this.interned) {
        if (bound === target || !(prefix === undefined ? name === pattern : name.startsWith(prefix))) continue
        refuse(
          bound === undefined
            ? `binds ${pattern} to ${transport}, but channel ${name} is in use already, unbound (make the binding before anything uses its channels)`
            : `binds ${pattern} to ${transport}, but channel ${name} is bound to ${bound.name}`,
        )
      }
    }
    for (const pattern of patterns) this.runtime.set(pattern, target!)
  }

  /**
   * @internal The transport named `name` (undefined: none), with its driver (none for a memory or
   * durable transport): what the store's shared namespaces talk to the broker through.
   */
  transportNamed(
    name: string,
  ): { readonly name: string; readonly kind: TransportKind; readonly driver: Driver | undefined; readonly signed: boolean } | undefined {
    const t = this.config.transports.find((c) => c.name === name)
    return t === undefined
      ? undefined
      : { name: t.name, kind: t.kind, driver: this.drivers.get(t.id), signed: 'signing' in t.options && t.options.signing !== undefined }
  }

  /** @internal The names of the configured transports, for errors that list them. */
  configuredNames(): string[] {
    return this.config.transports.map((t) => t.name)
  }

  private track(id: number, name: string, transport: CheckedTransport): void {
    if (this.bound.has(id)) return
    this.bound.set(id, {
      id,
      name,
      transport,
      driver: this.drivers.get(transport.id)!,
      mirrored: false,
      mirror: undefined,
      maxCount: DEFAULTS.retentionMaxCount,
      maxAgeMs: DEFAULTS.retentionMaxAgeMs,
    })
  }

  /** Whether the channel with this id is kept on disk (its publishes wait for the commit). */
  isDurable(id: number): boolean {
    return this.durable.has(id)
  }

  /**
   * Throws what `channel`'s driver would certainly refuse of the frame `frames` holds from
   * `start`, before it crosses into the core (see `Driver.refusal`).
   */
  refuse(channel: BoundChannel, frames: FrameWriter, start: number): void {
    const refusal = channel.driver.refusal?.(channel.name, frames.size - start)
    if (refusal !== undefined) throw refusal
  }

  /** The bound channel with this id, if it is bound to a driver. */
  find(id: number): BoundChannel | undefined {
    return this.bound.get(id)
  }

  /** What `bus.binding` tells of a channel. */
  binding(id: number): ChannelBinding | undefined {
    const t = this.bound.get(id)?.transport ?? this.local.get(id)
    return t === undefined ? undefined : { transport: t.name, kind: t.kind, capabilities: TRANSPORT_CAPABILITIES[t.kind] }
  }

  /** The name of `channel`'s transport when it signs (undefined: unbound, or unsigned). */
  signedTransport(channel: string): string | undefined {
    const t = this.interned.get(channel)
    return t !== undefined && 'signing' in t.options && t.options.signing !== undefined ? t.name : undefined
  }

  /** CAPABILITY_UNSUPPORTED unless `channel`'s backend can do `capability`. */
  require(channel: BoundChannel, capability: Capability): void {
    const { kind, name } = channel.transport
    if (!TRANSPORT_CAPABILITIES[kind][capability]) throw unsupported(capability, channel.name, name, kind)
  }

  /** Retention set on a bound channel: what the broker keeps, and how much history a mirror reads. */
  configure(channel: BoundChannel, retention: { maxCount?: unknown; maxBytes?: unknown; maxAgeMs?: unknown }, maxCount: number, maxAgeMs: number): void {
    if (retention.maxBytes !== undefined) this.require(channel, 'retention.maxBytes')
    channel.maxCount = maxCount
    channel.maxAgeMs = maxAgeMs
    channel.driver.retention(channel.name, {
      maxCount: retention.maxCount === undefined ? undefined : maxCount,
      maxAgeMs: retention.maxAgeMs === undefined || maxAgeMs === Infinity ? undefined : maxAgeMs,
      // Checked by the bus before (a whole number), and refused before here where the backend lacks it.
      maxBytes: typeof retention.maxBytes === 'number' ? retention.maxBytes : undefined,
    })
  }

  /** Opens `channel`'s mirror (once); resolves when its history is in the local log. */
  mirror(channel: BoundChannel): Promise<void> {
    channel.mirror ??= channel.driver.openMirror({ id: channel.id, name: channel.name }, { maxCount: channel.maxCount, maxAgeMs: channel.maxAgeMs }).then(
      () => {
        channel.mirrored = true
        this.host?.scheduleFlush()
      },
      (error: unknown) => {
        // The next subscriber tries again.
        channel.mirror = undefined
        throw error
      },
    )
    return channel.mirror
  }

  /**
   * Calls `start` when the mirror of `channel` (opening) holds what the broker had at this call
   * and nothing after: a `latest` subscriber made then sees exactly what the broker took later.
   * A broker that refuses to say where the stream ends calls `failed`.
   */
  catchUp(channel: BoundChannel, start: () => void, failed: (error: unknown) => void): () => void {
    return channel.driver.catchUp({ id: channel.id, name: channel.name }, start, failed)
  }

  /**
   * A group made on a bound channel: created on the broker and read for this process (once per
   * group). One that cannot be opened (the broker unreachable longer than its client waits) is
   * reported once and opened again, 1 s later and then at most every 30 s, until it is, or until
   * the group is deleted or the bus stops: its members are fed once the broker is back.
   * `attached` rejects meanwhile, and resolves once it is open.
   */
  openGroup(channel: BoundChannel, id: number, name: string, start: GroupStart, visibilityMs: number): void {
    const existing = this.groups.get(id)
    if (existing !== undefined && existing.deleted !== true) return
    const ref: GroupRef = { id, name, channel: channel.name, start, visibilityMs }
    const transport = channel.transport.name
    const open = (): Promise<void> =>
      channel.driver.openGroup(ref).catch((error: unknown) => {
        throw failureOf(error, 'TRANSPORT_UNAVAILABLE', `transport ${transport} could not open group ${name} on channel ${channel.name}`, {
          transport,
          channel: channel.name,
          group: name,
        })
      })
    const entry: RemoteGroup = { ref, driver: channel.driver, opened: open() }
    this.groups.set(id, entry)
    const retry = (attempt: Promise<void>, waitMs: number, reported: boolean): void => {
      attempt.then(
        () => {
          entry.opened = attempt
          // Opened once the bus began to stop (or the group was deleted): it reads nothing more.
          if (!this.opening || entry.deleted === true) entry.driver.closeGroup(id)
        },
        (error: unknown) => {
          if (!this.opening) return
          if (!reported) this.host?.failed(transport, error)
          const timer = setTimeout(() => {
            this.retries.delete(timer)
            if (!this.opening || entry.deleted === true || this.groups.get(id) !== entry) return
            retry(open(), Math.min(30_000, waitMs * 2), true)
          }, waitMs)
          // The next attempt must not keep the process alive (a shutdown stops them anyway).
          ;(timer as { unref?: () => void }).unref?.()
          this.retries.add(timer)
        },
      )
    }
    retry(entry.opened, 1_000, false)
  }

  /**
   * Settles once what this process reads of `channel` (its mirror, its groups) is on the broker:
   * rejects with the first that could not be opened.
   */
  async attached(channel: BoundChannel): Promise<void> {
    const opening: Promise<void>[] = []
    if (channel.mirror !== undefined) opening.push(channel.mirror)
    for (const g of this.groups.values()) if (g.ref.channel === channel.name && g.deleted !== true) opening.push(g.opened)
    await Promise.all(opening).catch((error: unknown) => {
      // A client's own error (a refusal by the broker) is said of this channel, with a code.
      const details = { transport: channel.transport.name, channel: channel.name }
      throw failureOf(error, 'TRANSPORT_UNAVAILABLE', `transport ${details.transport} could not attach channel ${details.channel}`, details)
    })
  }

  /**
   * A remote group was deleted here: this process stops reading it (the broker keeps it). Its
   * releases are routed by the flush the deletion scheduled (a microtask); then it is forgotten,
   * or every group ever deleted would stay here (and one made later in the same slot of the core,
   * whose id comes round again after 4,096 deletions, would never be opened).
   */
  groupDeleted(id: number): void {
    const g = this.groups.get(id)
    if (g === undefined) return
    g.deleted = true
    g.driver.closeGroup(id)
    setTimeout(() => {
      if (this.groups.get(id) === g) this.groups.delete(id)
    }, 0)
  }

  /**
   * `group.claim` on remote group `id`, after this process's own members: the broker hands this
   * process up to `max` entries other processes hold idle for `minIdle` ms (the backend has `claim`).
   */
  claimRemote(id: number, minIdle: number, max: number): void {
    const g = this.groups.get(id)
    if (g === undefined || g.deleted === true || max <= 0) return
    g.driver.claim?.(id, minIdle, max)
  }

  /** Members' room may have grown: readers waiting for room read again. */
  wake(): void {
    for (const driver of this.drivers.values()) driver.wake()
  }

  /**
   * After a publish that may have made egress: hands it to the drivers. Resolves with how many
   * publishes the brokers dropped as duplicates; undefined when there was no egress.
   */
  afterPublish(durable = false): Promise<number> | undefined {
    const batch = this.host!.core.drainEgress()
    const writing = batch === undefined ? undefined : this.route(batch)
    // A publish to a durable channel is done once its turn's commit is on disk.
    const written = durable ? this.disk?.written() : undefined
    if (written === undefined) return writing
    return writing === undefined ? written.then(() => 0) : Promise.all([writing, written]).then(([duplicates]) => duplicates)
  }

  /**
   * Writes what settles deliveries; its failures are reported, never a publisher's (a graceful
   * stop, which waits for them, passes `settling` and gets them there instead).
   */
  private settle(parts: Map<Driver, Egress[]>, settling?: Promise<unknown>[]): void {
    for (const [driver, records] of parts) {
      const written = driver.write(records)
      if (settling !== undefined) settling.push(written)
      else
        written.catch((error: unknown) => {
          if (!isOrreryError(error, 'CLOSED')) this.host?.failed(this.transportNames(), error)
        })
    }
  }

  /** After a flush: egress made by acks, nacks, leases and departures goes out, and readers may read. */
  afterFlush(): void {
    const host = this.host!
    const batch = host.core.drainEgress()
    if (batch !== undefined) {
      this.route(batch).catch((error: unknown) => {
        if (!isOrreryError(error, 'CLOSED')) host.failed(this.transportNames(), error)
      })
    }
    this.wake()
    // What the turn changed on durable channels (deliveries, acks) is committed when it ends.
    this.disk?.submitSoon()
  }

  private transportNames(): string {
    return this.config.transports.map((t) => t.name).join(', ')
  }

  /**
   * Splits an egress batch by driver, in order, and writes each part. Publishes, requests and
   * settlements (acks, releases, dead letters, replies) are separate writes: the returned Promise
   * is the publishes' (a refused ack must not fail a publish that was written, which its caller
   * would repeat); a request that could not be written fails at once; a reply to this process's
   * own request is ingested here, without a round trip to the broker.
   */
  private route(batch: Uint8Array, settling?: Promise<unknown>[]): Promise<number> {
    const runs = new Map<Driver, Run[]>()
    const settles = new Map<Driver, Egress[]>()
    const add = (driver: Driver, record: Egress, requests: boolean) => {
      const list = runs.get(driver)
      const last = list?.[list.length - 1]
      if (last !== undefined && last.requests === requests) last.records.push(record)
      else if (list) list.push({ requests, records: [record] })
      else runs.set(driver, [{ requests, records: [record] }])
    }
    const settle = (driver: Driver, record: Egress) => {
      const list = settles.get(driver)
      if (list) list.push(record)
      else settles.set(driver, [record])
    }
    let own: IngestWriter | undefined
    forEachEgress(batch, (kind, id, value, pos, frame, route) => {
      if (kind === REMOTE.publish || kind === REMOTE.request || kind === REMOTE.reply) {
        const channel = this.bound.get(id)
        if (channel === undefined) {
          this.host?.failed(this.transportNames(), new OrreryError('INTERNAL', `a message for channel id ${id}, bound to no transport here, was not written`))
        } else if (kind === REMOTE.publish) {
          add(channel.driver, { kind: 'publish', channel: channel.name, dedupWindowMs: value, frame }, false)
        } else if (kind === REMOTE.request) {
          add(channel.driver, { kind: 'request', channel: channel.name, replyTo: this.processId, timeoutMs: value, frame }, true)
        } else {
          const address = POSITION.decode(route)
          if (address === this.processId) {
            own ??= new IngestWriter()
            own.replied(frame)
          } else settle(channel.driver, { kind: 'reply', channel: channel.name, address, frame })
        }
        return
      }
      const group = this.groups.get(id)
      if (!group) {
        this.host?.failed(this.transportNames(), new OrreryError('INTERNAL', `a settlement for group id ${id}, read from no transport here, was not written`))
        return
      }
      const position = POSITION.decode(pos)
      if (kind === REMOTE.ack) settle(group.driver, { kind: 'ack', group: group.ref, position })
      else if (kind === REMOTE.release) settle(group.driver, { kind: 'release', group: group.ref, position, delayMs: value })
      else if (kind === REMOTE.dead) settle(group.driver, { kind: 'dead', group: group.ref, position, deadLetter: `${group.ref.channel}${DEAD_LETTER}`, frame })
    })
    if (settles.size > 0) this.settle(settles, settling)
    if (own !== undefined) this.ingestOwn(own)
    if (runs.size === 0) return Promise.resolve(0)
    const written: Promise<number>[] = []
    for (const [driver, list] of runs) written.push(this.writeRuns(driver, list))
    if (written.length === 1) return written[0]!
    return Promise.all(written).then((d) => d.reduce((a, b) => a + b, 0))
  }

  /**
   * Writes one driver's runs in order; resolves with the publishes' duplicates. The first request
   * on a driver opens this process's reply address there first, and every write to it waits
   * until then.
   */
  private writeRuns(driver: Driver, list: Run[]): Promise<number> {
    const send = (): Promise<number> => {
      const published: Promise<number>[] = []
      for (const run of list) {
        const writing = driver.write(run.records)
        if (!run.requests) published.push(writing)
        else writing.catch((error: unknown) => this.requestsFailed(run.records, error))
      }
      if (published.length === 0) return Promise.resolve(0)
      return published.length === 1 ? published[0]! : Promise.all(published).then((d) => d.reduce((a, b) => a + b, 0))
    }
    if (this.listening.has(driver)) return send()
    let opening = this.replies.get(driver)
    if (opening === undefined) {
      if (!list.some((run) => run.requests)) return send()
      const open = driver.openReplies?.(this.processId) ?? Promise.reject(new OrreryError('INTERNAL', 'this transport cannot listen for replies'))
      opening = open.then(() => {
        this.listening.add(driver)
      })
      this.replies.set(driver, opening)
    }
    return opening.then(send, (error: unknown) => {
      // The listener can be tried again by the next request.
      if (this.replies.get(driver) === opening) this.replies.delete(driver)
      for (const run of list) if (run.requests) this.requestsFailed(run.records, error)
      const rest = list.filter((run) => !run.requests)
      if (rest.length === 0) return 0
      list = rest
      return send()
    })
  }

  /**
   * Requests that could not be written fail at once (their reply could never come), and the core
   * forgets them (an UNSENT record each): one that waits for ever must not stay open there.
   */
  private requestsFailed(records: readonly Egress[], error: unknown): void {
    const host = this.host
    if (host === undefined) return
    const unsent = new IngestWriter()
    for (const record of records) {
      if (record.kind !== 'request') continue
      const token = replyToken(record.frame)
      unsent.unsent(token)
      host.requestFailed(token, error)
    }
    const batch = unsent.take()
    if (batch === undefined || this.closed) return
    try {
      host.core.ingest(batch, host.now())
    } catch (error) {
      if (!isOrreryError(error, 'CLOSED')) host.failed(this.transportNames(), error)
    }
  }

  /** Replies to this process's own requests, answered here: ingested as the broker would have brought them. */
  private ingestOwn(writer: IngestWriter): void {
    const host = this.host
    const batch = writer.take()
    if (host === undefined || batch === undefined) return
    try {
      host.core.ingest(batch, host.now())
    } catch (error) {
      host.failed(this.transportNames(), error)
      return
    }
    host.scheduleFlush()
  }

  /**
   * A graceful stop: readers stop (what they read still comes in), every remote group lets go
   * of what this process holds (released to the broker, so others take it at once), and every
   * write is waited for. Each step waits for a transport at most its publishTimeoutMs and a
   * second (a broker that is down is not waited for longer than a publish would wait): what did
   * not end in time is in the outcome. `close` follows. A `close` meanwhile ends it where it is.
   */
  async shutdown(): Promise<ShutdownOutcome> {
    if (this.closed) return GRACEFUL
    this.stopOpening()
    const errors: OrreryError[] = []
    const cut = (): ShutdownOutcome => ({ graceful: false, errors })
    const drivers = this.driversWithBounds()
    this.stopBegan(drivers)
    await Promise.all(drivers.map((d) => within(d.driver.stopReading(), d.bound, d.name, 'stop-reading', errors)))
    if (this.closed) return cut()
    const host = this.host
    if (host !== undefined) {
      for (const id of this.groups.keys()) {
        try {
          host.core.deleteGroup(id)
        } catch {
          // Deleted already.
        }
      }
      const batch = host.core.drainEgress()
      const bound = Math.max(0, ...drivers.map((d) => d.bound))
      if (batch !== undefined) {
        // The releases are waited for here (route() hands settlements' failures to the events).
        const settling: Promise<unknown>[] = []
        const routed = this.route(batch, settling)
        await within(Promise.all([routed, ...settling]), bound, this.transportNames(), 'hand-back', errors)
        if (this.closed) return cut()
      }
    }
    await Promise.all(drivers.map((d) => within(d.driver.flushed(), d.bound, d.name, 'writes', errors)))
    await this.disk?.written()?.catch(() => {})
    if (this.closed) return cut()
    // What signing refused since the last reports is told before the bus closes.
    this.refusalReports.flush()
    return errors.length === 0 ? GRACEFUL : { graceful: false, errors }
  }

  /** Writes that run out of time from now on make the stop not graceful (see `Driver.stopping`). */
  private stopBegan(drivers: ReadonlyArray<{ driver: Driver }>): void {
    for (const { driver } of drivers) driver.stopping()
  }

  /** Each transport's driver, with how long a stop waits for it at each step. */
  private driversWithBounds(): Array<{ name: string; driver: Driver; bound: number }> {
    return this.config.transports.flatMap((t) => {
      const driver = this.drivers.get(t.id)
      return driver === undefined ? [] : [{ name: t.name, driver, bound: boundOf(t) }]
    })
  }

  /**
   * Whether members of this process's remote groups hold work, or have some left to take of
   * what was read, or a driver holds some for them (a release on its way to a Kafka reader). A
   * group without members here does not count (what a mesh that stopped, or a member that left,
   * gave back went to the broker), nor the control's dead-letter keeper (it holds what it shows
   * until it is settled).
   */
  private busy(): boolean {
    const host = this.host
    if (host === undefined || this.closed) return false
    for (const driver of this.drivers.values()) if (driver.holding?.() === true) return true
    for (const [id, g] of this.groups) {
      if (g.deleted === true || (g.ref.name === CONTROL_GROUP && g.ref.channel.endsWith(DEAD_LETTER_SUFFIX))) continue
      let stats: ArrayLike<number>
      try {
        stats = host.core.groupStats(id)
      } catch {
        continue
      }
      if (stats[MEMBERS]! > 0 && (stats[PENDING]! > 0 || stats[BACKLOG]! > 0)) return true
    }
    return false
  }

  /**
   * Lets the members of this process's remote groups finish what it holds: from now on their
   * readers see no room and each driver ends the reads it has waiting on the broker (`Driver.drain`),
   * so nothing new is read for them (the connections, subscriptions and consumers stay: a Kafka
   * consumer keeps its place in the group while it holds work of it; subscribers and shared
   * namespaces keep reading).
   * Resolves once they are done (`busy` no more), at `deadline`, or at a close. `flush` (the
   * bus's) is called before each look, so what members settled has reached the drivers (a
   * release Kafka hands out again from here) and their acks are written as they come.
   */
  async drain(deadline: number, flush: () => void): Promise<void> {
    if (this.closed) return
    this.draining = true
    const drivers = this.driversWithBounds()
    this.stopBegan(drivers)
    for (const { name, driver } of drivers) {
      try {
        driver.drain?.()
      } catch (error) {
        this.host?.failed(name, error)
      }
    }
    for (;;) {
      flush()
      if (!this.busy() || Date.now() >= deadline) return
      await new Promise((r) => setTimeout(r, Math.min(DRAIN_POLL_MS, Math.max(0, deadline - Date.now()))))
    }
  }

  /** Set by `drain`: groups' readers see no room. */
  private draining = false

  private stopOpening(): void {
    this.opening = false
    for (const timer of this.retries) clearTimeout(timer)
    this.retries.clear()
  }

  /** Drops every connection at once. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.stopOpening()
    this.refusalReports.close()
    this.disk?.close()
    for (const driver of this.drivers.values()) driver.close()
  }
}
