/**
 * The Redis driver's readers: each a loop of blocking reads on a connection of its own, handing
 * what it reads to the core as ingest records. A mirror follows a channel's stream; a group
 * reader takes a consumer group's new entries as its members have room, and reclaims entries
 * idle past the broker threshold.
 */
import type { ChannelRef, GroupRef, HistoryBound } from './driver.js'
import { IngestWriter, type Route, routeOf } from './records.js'
import { threshold } from './writes.js'
import type { Connection, RedisDriver } from './redis.js'
import { CatchUps } from './catch-up.js'
import { Pause } from './pause.js'

/**
 * Compares two stream entry ids (`<ms>-<seq>`, a missing seq 0) by their numbers. It runs for
 * every entry read and twice for every ack of a run, so it reads the digits in place: splitting
 * the ids made a third of a consumer's time.
 */
export function compareIds(a: string, b: string): number {
  const ad = a.indexOf('-')
  const bd = b.indexOf('-')
  return (
    digits(a, 0, ad < 0 ? a.length : ad) - digits(b, 0, bd < 0 ? b.length : bd) ||
    (ad < 0 ? 0 : digits(a, ad + 1, a.length)) - (bd < 0 ? 0 : digits(b, bd + 1, b.length))
  )
}

/** The number the decimal digits of `s` from `from` to `to` write. */
function digits(s: string, from: number, to: number): number {
  let n = 0
  for (let i = from; i < to; i++) n = n * 10 + s.charCodeAt(i) - 48
  return n
}

/** Entries read per call, at most. */
export const READ_COUNT = 1024
/** How long a blocking read waits before it is issued again (it returns early with entries, or when unblocked). */
export const BLOCK_MS = 5_000
/** Pause before a failed read is tried again (node-redis reconnects meanwhile). */
export const RETRY_MS = 200

/**
 * A broker entry: id and fields (`f` holds the frame; a request has `r`, its reply address, and
 * `t`, its timeout in ms; a signed one `s`, its signature).
 */
export type Entry = [Buffer, Array<Buffer> | null]

/** Whether a retention count limits anything (0, like Infinity, is no limit in Orrery). */
export function limited(bound: number | undefined): bound is number {
  return bound !== undefined && bound > 0 && Number.isFinite(bound)
}

/** The broker time of an entry id (`<ms>-<n>`). */
export function idTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')))
}

export function frameOf(fields: Array<Buffer> | null): Buffer | undefined {
  return field(fields, 0x66)
}

/** An entry's signature (its field `s`), if it has one. */
export function signatureOf(fields: Array<Buffer> | null): string | undefined {
  return field(fields, 0x73)?.toString('latin1')
}

/** The value of the one-letter field `letter` (a char code). */
function field(fields: Array<Buffer> | null, letter: number): Buffer | undefined {
  if (fields === null) return undefined
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]!.length === 1 && fields[i]![0] === letter) return fields[i + 1]
  return undefined
}

/** A request entry's route (its fields `r` and `t`); undefined for a plain message. */
export function entryRoute(fields: Array<Buffer> | null): Route | undefined {
  // Plain messages carry the frame alone: no scan for fields they do not have.
  if (fields === null || fields.length <= 2) return undefined
  return routeOf(field(fields, 0x72)?.toString('latin1'), field(fields, 0x74)?.toString('latin1'))
}

/**
 * A loop of blocking reads on a connection of its own (a blocking command would hold up every
 * other command on a shared one). `stopAndWait` unblocks the read in flight, so what it brought
 * is still handed over.
 */
export abstract class Reader {
  protected conn: Connection | undefined
  protected stopped = false
  private clientId: string | undefined
  private loop: Promise<void> | undefined
  protected readonly writer = new IngestWriter()
  /** Where the loop waits for room (a group's members', a mirror's subscribers'), woken by `wake`. */
  protected readonly pause = new Pause()

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
          // Stopped while it connected: node-redis leaves the socket a destroy during the connect
          // did not stop open, so it is destroyed again now.
          if (this.stopped) {
            try {
              conn.destroy()
            } catch {}
            break
          }
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

  /** Whether this reader was stopped (what it still reads then ends). */
  get isStopped(): boolean {
    return this.stopped
  }

  /** Room may have grown: a read waiting for it goes now. */
  wake(): void {
    this.pause.wake()
  }

  /**
   * Ends the blocking read in flight, if any (it returns empty; one that has brought entries
   * already is not affected), so the loop looks at its room again.
   */
  unblock(): Promise<void> {
    // Only on a live connection: while it is down the command would wait in the offline queue
    // for ever (no command timeout), and the read it would unblock is cut with its socket anyway.
    if (this.clientId === undefined || !this.driver.isReady) return Promise.resolve()
    return this.driver.command(['CLIENT', 'UNBLOCK', this.clientId]).then(
      () => {},
      () => {},
    )
  }

  stop(): void {
    this.stopped = true
    this.pause.wake()
    this.conn?.destroy()
    this.conn = undefined
  }

  async stopAndWait(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.pause.wake()
    await this.unblock()
    const done = this.loop ?? Promise.resolve()
    // A read the server does not unblock (an old server, a dropped connection) is cut after 1 s.
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([done, new Promise((r) => (timer = setTimeout(r, 1_000)))])
    clearTimeout(timer)
    this.stop()
  }
}

/** Follows one channel's stream into its mirror: history first, then what comes. */
export class MirrorReader extends Reader {
  readonly ready: Promise<void>
  private last = '0-0'
  /** Subscriptions waiting for the mirror to reach an entry id. */
  private readonly waiters = new CatchUps<string>()

  /** Runs `start` once every entry up to `marker` is in the mirror, and none after it; `failed` if the marker fails. */
  catchUp(marker: Promise<string>, start: () => void, failed: (error: unknown) => void): () => void {
    return this.waiters.add(
      marker,
      start,
      () => this.release(),
      failed,
      () => this.driver.isClosed || this.stopped,
    )
  }

  /** Starts the waiters whose marker the mirror has reached (before `next`, the entry about to be added, if given). */
  private release(next?: string): void {
    if (!this.waiters.waiting) return
    this.waiters.release(
      (after) => compareIds(this.last, after) >= 0 || (next !== undefined && compareIds(next, after) > 0),
      () => this.ingest(),
    )
  }

  constructor(
    driver: RedisDriver,
    private readonly channel: ChannelRef,
    bound: HistoryBound,
  ) {
    super(driver)
    // Sent now, on the main connection: a publish made after the subscribe is sent after this
    // read, so it is not history but comes through the blocking read. A dropped connection sends
    // it again once node-redis has reconnected, as the blocking reads are (what was published
    // meanwhile may then come as history: the mirror has it once either way).
    const key = driver.keyOf(channel.name)
    const min = Number.isFinite(bound.maxAgeMs) ? `${Math.max(0, Math.floor(Date.now() - bound.maxAgeMs))}-0` : '-'
    const count = limited(bound.maxCount) ? ['COUNT', String(bound.maxCount)] : []
    const sentAt = Date.now()
    this.ready = driver
      .read<Entry[]>(['XREVRANGE', key, '+', min, ...count], () => this.stopped)
      .then(
        async (entries) => {
          // As for every read (see `step`): after a dropped connection, a marker asked again may
          // be answered before this read is, and be behind what it brought.
          const known = this.driver.markersKnown(this.channel.name)
          if (known !== undefined) await known
          for (let i = entries.length - 1; i >= 0; i--) this.add(entries[i]!)
          // The newest entry came with the history (or there was none at all): what is read from
          // here on was appended after the history was asked for. (An empty history bounded by age
          // says nothing of older entries, which the next read may bring: the first read that ends
          // the stream tells instead.)
          if (entries.length > 0 || min === '-') this.emptyAt = sentAt
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

  /**
   * When this mirror last read to the stream's end (this host's clock, taken as the read was
   * sent): every entry it reads later was appended after that. Signing checks it, since an entry
   * id is chosen by its writer and is no proof of when it was written.
   */
  private emptyAt: number | undefined

  private add(entry: Entry, appendedAfter?: number): void {
    const id = entry[0].toString('latin1')
    if (this.waiters.waiting) this.release(id)
    this.last = id
    const frame = frameOf(entry[1])
    if (frame === undefined) return
    const route = entryRoute(entry[1])
    // A refused entry (signing) is skipped: counted and reported, never in the mirror.
    const signing = this.driver.signing
    if (signing !== undefined && !signing.accept(signatureOf(entry[1]), this.channel.name, route, frame, id, idTime(id), { appendedAfter })) return
    this.writer.live(this.channel.id, idTime(id), frame, route)
  }

  protected async step(): Promise<void> {
    // No more than the subscribers that refuse to lose messages leave room for (see `mirrorRoom`).
    const room = this.driver.sinkOf.mirrorRoom(this.channel.id)
    if (room <= 0) {
      // Woken once they took some; at most a second later anyway.
      await this.pause.wait(1_000)
      return
    }
    const count = Math.min(READ_COUNT, room)
    const key = this.driver.keyOf(this.channel.name)
    const sentAt = Date.now()
    const reply = await this.blocking<Array<[Buffer, Entry[]]> | null>(['XREAD', 'COUNT', String(count), 'BLOCK', String(BLOCK_MS), 'STREAMS', key, this.last])
    // A subscribe's marker is asked on the main connection, in the write pipeline: what this read
    // brought may be past one whose answer has not come yet. It goes in once that one is known, so
    // each subscriber starts at its own.
    const known = this.driver.markersKnown(this.channel.name)
    if (known !== undefined) await known
    let read = 0
    const after = this.emptyAt
    if (reply !== null)
      for (const [, entries] of reply) {
        read += entries.length
        for (const entry of entries) this.add(entry, after)
      }
    // Fewer than asked for: the stream held nothing more when this read was answered.
    if (read < count) this.emptyAt = sentAt
    if (reply === null) return
    this.ingest()
    this.release()
  }
}

/** Reads one group for this process: new entries as room allows, and entries idle past the threshold from any consumer. */
export class GroupReader extends Reader {
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
      await this.pause.wait(1_000)
      return
    }
    const { name, channel } = this.group
    const key = this.driver.keyOf(channel)
    const count = Math.min(room, READ_COUNT)
    const sentAt = Date.now()
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
    let read = 0
    const drained = this.drainedAt
    if (reply !== null)
      for (const [, entries] of reply) {
        read += entries.length
        for (const entry of entries) this.add(entry, 1, drained)
      }
    // Fewer than asked for: the group had nothing more for anyone when this read was answered,
    // so what a later read brings was appended after it was sent.
    if (read < count) this.drainedAt = sentAt
    if (reply === null) return
    this.ingest()
  }

  /**
   * What this reader knows of when entries were appended (this host's clock; signing checks it,
   * since an entry id is chosen by its writer): `opened`, entries above `newest` came after the
   * stream was looked at as the group was opened; `drainedAt`, when a read of new entries last
   * found the group with nothing more (what later reads bring was appended after that).
   */
  private opened: { readonly newest: string; readonly at: number } | undefined
  private drainedAt: number | undefined

  /** Looks at the stream's newest entry (on the main connection) before the reader starts. */
  async look(): Promise<void> {
    if (this.driver.signing === undefined) return
    const at = Date.now()
    const newest = await this.driver.read<Entry[]>(['XREVRANGE', this.driver.keyOf(this.group.channel), '+', '-', 'COUNT', '1'], () => this.stopped)
    this.opened = { newest: newest[0]?.[0].toString('latin1') ?? '0-0', at }
  }

  /** When the entry `id` (read by a read of new entries that found the group drained at `drained`, if so) was known not to be on the broker yet. */
  private appendedAfter(id: string, drained: number | undefined): number | undefined {
    const start = this.opened
    if (start === undefined || (drained !== undefined && drained >= start.at)) return drained
    return compareIds(id, start.newest) > 0 ? start.at : drained
  }

  /**
   * Deliveries a reclaim or a claim in flight asked for: the blocking read leaves them out. (A reclaim does
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

  /** Hands an entry to the core, unless signing refuses it; `drained` for entries read as new (see `appendedAfter`). */
  private add(entry: Entry, count: number, drained?: number): void {
    const id = entry[0].toString('latin1')
    if (this.lastRead === undefined || compareIds(id, this.lastRead) > 0) this.lastRead = id
    const frame = frameOf(entry[1])
    if (frame !== undefined) {
      const route = entryRoute(entry[1])
      const signing = this.driver.signing
      if (
        signing === undefined ||
        signing.accept(signatureOf(entry[1]), this.group.channel, route, frame, id, idTime(id), { appendedAfter: this.appendedAfter(id, drained) })
      ) {
        this.writer.group(this.group.id, count, id, frame, route)
        return
      }
    }
    // Not Orrery's (no frame), deleted, or refused by signing (counted and reported): the group
    // forgets it instead of reclaiming it forever.
    void this.driver.command(['XACK', this.driver.keyOf(this.group.channel), this.group.name, id]).catch(() => {})
  }

  /** The newest entry id this reader was given. */
  private lastRead: string | undefined

  /** Takes entries idle past the threshold (another process died holding them, or one was released). */
  private reclaim(): void {
    if (this.stopped || this.reclaiming || this.driver.isClosed) return
    const room = this.driver.sinkOf.groupRoom(this.group.id) - this.claiming
    if (room <= 0) return
    this.reclaiming = true
    const claiming = Math.min(room, READ_COUNT)
    this.claiming += claiming
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
        this.took(claimed, counts)
        // All it asked for was idle: more may be.
        if (pending.length >= claiming) this.due = true
      })
      .catch((error) => {
        if (!this.stopped && this.driver.isServerError(error)) this.driver.sinkOf.failed(error)
      })
      .finally(() => {
        this.claiming -= claiming
        this.reclaiming = false
        this.reclaimRun = undefined
      })
  }

  /** A reclaim in flight (a shutdown waits for it: what it claims is handed back). */
  private reclaimRun: Promise<void> | undefined

  /**
   * `group.claim`: takes up to `max` entries other consumers hold, idle for `minIdle` ms (at
   * least 1 ms, so XCLAIM checks the idle time again as it claims: an entry answered or taken
   * meanwhile, by a reclaim here or by another process, stays where it is), at most as many as
   * the members have room for (a remote entry's lease runs from ingest: one no member could take
   * would only go back with one more delivery counted), and hands them to the core.
   */
  claim(minIdle: number, max: number): void {
    // Redis takes a whole number of ms under 2^63: nothing has been idle for 2^53 ms either.
    const idle = String(Math.min(Number.MAX_SAFE_INTEGER, Math.max(1, Math.ceil(minIdle))))
    const take = async (): Promise<void> => {
      const wanted = Math.min(max, READ_COUNT, this.driver.sinkOf.groupRoom(this.group.id) - this.claiming)
      if (wanted <= 0 || this.stopped) return
      this.claiming += wanted
      try {
        const { name, channel } = this.group
        const key = this.driver.keyOf(channel)
        const page = Math.max(wanted, 16)
        const counts = new Map<string, number>()
        for (let from = '-'; counts.size < wanted && !this.stopped; ) {
          const pending = await this.driver.command<Array<[Buffer, Buffer, number, number]>>(['XPENDING', key, name, 'IDLE', idle, from, '+', String(page)])
          for (const [id, consumer, , count] of pending) {
            // What this consumer holds is this process's: its own members' claim moved it already.
            if (counts.size < wanted && consumer.toString() !== this.driver.consumer) counts.set(id.toString('latin1'), Number(count))
          }
          if (pending.length < page) break
          from = `(${pending[pending.length - 1]![0].toString('latin1')}`
        }
        if (counts.size === 0 || this.stopped) return
        const claimed = await this.driver.command<Array<Entry | null>>(['XCLAIM', key, name, this.driver.consumer, idle, ...counts.keys()])
        this.took(claimed, counts)
      } finally {
        this.claiming -= wanted
      }
    }
    const run = (this.claimRun ?? Promise.resolve()).then(take).catch((error) => {
      if (!this.stopped && this.driver.isServerError(error)) this.driver.sinkOf.failed(error)
    })
    this.claimRun = run
    void run.finally(() => {
      if (this.claimRun === run) this.claimRun = undefined
    })
  }

  /**
   * Hands entries just claimed to the core, each with its delivery count before the claim in
   * `counts`. Claimed once the reader stopped (its group deleted here, or a shutdown), they go
   * straight back, reclaimable at once: the core would not take them.
   */
  private took(claimed: Array<Entry | null>, counts: ReadonlyMap<string, number>): void {
    const ids = claimed.filter((e) => e !== null).map((e) => e[0].toString('latin1'))
    if (this.driver.isClosed || ids.length === 0) return
    if (this.stopped) {
      const { name, channel } = this.group
      void this.driver
        .command(['XCLAIM', this.driver.keyOf(channel), name, this.driver.consumer, '0', ...ids, 'IDLE', String(threshold(this.group)), 'JUSTID'])
        .catch(() => {})
      return
    }
    for (const entry of claimed) if (entry !== null) this.add(entry, (counts.get(entry[0].toString('latin1')) ?? 0) + 1)
    this.ingest()
  }

  /** Claims made by `group.claim` still in flight, one after the other (a shutdown waits for them). */
  private claimRun: Promise<void> | undefined

  override async stopAndWait(): Promise<void> {
    clearInterval(this.reclaimTimer)
    await super.stopAndWait()
    // A reclaim sent while the server is down waits in the offline queue: waited for as a
    // blocking read is (1 s), then the stop goes on (what it would claim stays reclaimable).
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([Promise.all([this.reclaimRun, this.claimRun]), new Promise((r) => (timer = setTimeout(r, 1_000)))])
    clearTimeout(timer)
  }

  override stop(): void {
    clearInterval(this.reclaimTimer)
    clearTimeout(this.soon)
    this.wake()
    super.stop()
  }
}
