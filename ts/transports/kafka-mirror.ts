/**
 * A Kafka topic followed into a channel's mirror: fetches of every partition from where the
 * mirror is, on a client of its own (a fetch waits at the broker, and a broker answers one
 * connection's requests in turn), without a consumer group. History first (within the local
 * retention: the last `maxCount` records of each partition, none older than `maxAgeMs`), then
 * what comes. A record's time is the broker's (its topic keeps LogAppendTime).
 */
import type { Consumer } from '@platformatic/kafka'

import type { ChannelRef, HistoryBound } from './driver.js'
import type { KafkaDriver } from './kafka.js'
import {
  closeClient,
  FETCH_BYTES,
  FETCH_PARTITION_BYTES,
  FETCH_WAIT_MS,
  IS_CONTROL,
  type Offsets,
  protocolIds,
  type RecordBatch,
  RETRY_MS,
  recordRoute,
  recordSignature,
  type TopicLayout,
} from './kafka-shared.js'
import { IngestWriter } from './records.js'
import { CatchUps, FirstLook, unlessGone } from './catch-up.js'
import { Pause } from './pause.js'

/** `list` started at its `turn`-th element (modulo its length), the rest after it in order. */
function rotated<T>(list: readonly T[], turn: number): T[] {
  const at = turn % list.length
  return at === 0 ? [...list] : [...list.slice(at), ...list.slice(0, at)]
}

/** Record batch attributes (Kafka's record batch format): the time is the broker's. */
const LOG_APPEND_TIME = 1 << 3

export class KafkaMirror {
  readonly ready: Promise<void>
  private stopped = false
  private client: Consumer<Buffer, Buffer, Buffer, Buffer> | undefined
  /** The next offset to read of each partition. */
  private readonly next: Offsets = new Map()
  /** Until the history is in: where it ends, and what resolves `ready`. */
  private history: { until: Offsets; readonly done: () => void } | undefined
  private oldest = 0
  private readonly waiters = new CatchUps<Offsets>()
  private readonly writer = new IngestWriter()
  /**
   * How many more records this round may add: what the subscribers that refuse to lose messages
   * left room for when it began (see `mirrorRoom`). A partition stops at it, and the next fetch
   * asks from there.
   */
  private room = 0
  /** Where the loop waits for room, woken by `wake`. */
  private readonly pause = new Pause()
  /** Counts the fetch rounds (see `rotated`). */
  private turn = 0

  /** The mirror's first look at the topic: markers are asked after it. */
  private readonly looked = new FirstLook()
  /** The last marker asked (see `marker`). */
  private asked: Promise<unknown> = this.looked.done

  constructor(
    private readonly driver: KafkaDriver,
    private readonly channel: ChannelRef,
    private readonly bound: HistoryBound,
  ) {
    this.ready = this.open()
  }

  /**
   * Asks a subscriber's marker (`ask`) once the first look is answered (see `looked`) and the
   * marker asked before has settled. One at a time, each marker is at or past every earlier one
   * on every partition (ListOffsets asks each leader on its own, so two asked at once could
   * cross), and the partitions they hold (see `pastMarker`) never wait for one another.
   * Not asked when `cancelled()` or the mirror stopped by then (nothing waits for it: it
   * rejects). A burst of subscribes to one channel is asked a round trip after another.
   */
  marker(ask: () => Promise<Offsets>, cancelled: () => boolean): Promise<Offsets> {
    const next = this.asked.then(() => unlessGone(() => cancelled() || this.stopped, 'the subscription or the mirror went before its marker was asked', ask))
    this.asked = next.catch(() => {})
    return next
  }

  private get topic(): string {
    return this.driver.topicOf(this.channel.name)
  }

  get isStopped(): boolean {
    return this.stopped
  }

  private async open(): Promise<void> {
    const driver = this.driver
    const topic = this.topic
    const { maxCount, maxAgeMs } = this.bound
    // Asked again while the broker is unreachable; a refusal fails the subscribe.
    const looked = await driver
      .answered(
        this.channel.name,
        async () => {
          await driver.ensureTopic(this.channel.name)
          const layout = await driver.layout(topic)
          const [ends, starts] = await Promise.all([driver.offsets(topic, -1n), driver.offsets(topic, -2n)])
          if (Number.isFinite(maxAgeMs)) this.oldest = Date.now() - maxAgeMs
          const since = Number.isFinite(maxAgeMs) ? await driver.offsets(topic, BigInt(Math.floor(this.oldest))) : undefined
          return { layout, ends, starts, since }
        },
        () => this.stopped,
      )
      // Stopped meanwhile (a shutdown): nothing to open, and no subscriber's failure.
      .catch((error: unknown) => {
        if (this.stopped) return undefined
        throw error
      })
      .finally(() => this.looked.answered())
    if (looked === undefined) return
    const { layout, ends, starts, since } = looked
    for (const [p, end] of ends) {
      let start = starts.get(p) ?? 0n
      if (maxCount > 0 && Number.isFinite(maxCount) && end - BigInt(maxCount) > start) start = end - BigInt(maxCount)
      const at = since?.get(p)
      if (at !== undefined) {
        const first = at < 0n ? end : at
        if (first > start) start = first
      }
      this.next.set(p, start)
    }
    if (this.stopped) return
    const history = new Promise<void>((resolve) => {
      this.history = { until: ends, done: resolve }
    })
    this.client = new driver.kafka.Consumer({ ...(driver.clientOptions() as object), groupId: `${driver.config.prefix}-mirror` } as never)
    void this.run(layout).catch((error: unknown) => {
      if (!this.stopped && !driver.isClosed) driver.sink.failed(error)
    })
    this.checkHistory()
    await history
  }

  private reached(at: Offsets): boolean {
    for (const [p, offset] of at) if ((this.next.get(p) ?? 0n) < offset) return false
    return true
  }

  private checkHistory(): void {
    const h = this.history
    if (h === undefined || !this.reached(h.until)) return
    this.history = undefined
    this.flush()
    h.done()
    this.release()
  }

  private async run(first: TopicLayout): Promise<void> {
    let layout: TopicLayout | undefined = first
    let id = first.id
    /** Turns in a row with every partition held (see below). */
    let allHeld = 0
    while (!this.stopped && !this.driver.isClosed) {
      try {
        if (layout === undefined) {
          layout = await this.driver.layout(this.topic)
          // The topic was made again (deleted, or the broker came back without its data): it
          // numbers its offsets from 0 again, and all it holds came after what the mirror read.
          if (layout.id !== id) {
            const starts = await this.driver.offsets(this.topic, -2n)
            this.next.clear()
            for (const [p, start] of starts) this.next.set(p, start)
            id = layout.id
            // What waited for the old topic's ends (the history, a subscribe's start) is there now.
            if (this.history !== undefined) this.history.until = new Map(starts)
            this.checkHistory()
            if (this.waiters.waiting) this.startAll()
          }
        }
        // A subscribe whose marker is reached starts; a partition held at a marker is not fetched
        // (see `pastMarker`), so the fetch still waits at the broker for the others.
        this.release()
        // What a failed round had added is in before the room is asked.
        this.flush()
        this.room = this.driver.sink.mirrorRoom(this.channel.id)
        if (this.room <= 0) {
          // Woken once the subscribers took some; at most a second later anyway.
          await this.pause.wait(1_000)
          continue
        }
        const byLeader = new Map<number, number[]>()
        layout.leaders.forEach((leader, p) => {
          if (this.pastMarker(p, this.next.get(p) ?? 0n)) return
          const list = byLeader.get(leader)
          if (list) list.push(p)
          else byLeader.set(leader, [p])
        })
        if (byLeader.size === 0) {
          // Every partition held, and no marker reached: one holds a partition the mirror does not
          // fetch (added to the topic since), or the topic was made again. The layout is asked
          // again, new partitions fetched from their start. Still so after that (markers of two
          // makings of the topic holding each other), the waiters start now rather than never:
          // what they get of the partitions behind is from before their start.
          layout = undefined
          if (++allHeld > 2) {
            allHeld = 0
            this.startAll()
          }
          await new Promise((r) => setTimeout(r, RETRY_MS))
          continue
        }
        allHeld = 0
        // The room is shared in the order of each answer's partitions, which is the order asked:
        // the first partition asked goes round, so none takes the room every round.
        this.turn++
        await Promise.all([...byLeader].map(([node, partitions]) => this.fetch(layout!, node, rotated(partitions, this.turn))))
        this.flush()
        this.checkHistory()
      } catch (error) {
        if (this.stopped || this.driver.isClosed) break
        // The leaders may have moved, or the topic been made again: asked again before the next fetch.
        layout = undefined
        if (protocolIds(error).some((id) => id === 'TOPIC_AUTHORIZATION_FAILED')) this.driver.sink.failed(error)
        await new Promise((r) => setTimeout(r, RETRY_MS))
      }
    }
  }

  private async fetch(layout: TopicLayout, node: number, partitions: number[]): Promise<void> {
    const client = this.client
    if (client === undefined) return
    const response = await client.fetch({
      node,
      topics: [
        {
          topicId: layout.id,
          partitions: partitions.map((partition) => ({
            partition,
            fetchOffset: this.next.get(partition) ?? 0n,
            currentLeaderEpoch: -1,
            lastFetchedEpoch: -1,
            partitionMaxBytes: FETCH_PARTITION_BYTES,
          })),
        },
      ],
      maxWaitTime: FETCH_WAIT_MS,
      minBytes: 1,
      maxBytes: FETCH_BYTES,
      isolationLevel: this.driver.kafka.FetchIsolationLevels.READ_UNCOMMITTED,
    })
    if (this.stopped) return
    for (const t of response.responses) {
      for (const part of t.partitions) {
        const p = part.partitionIndex
        if (part.errorCode !== 0) {
          // Retention went past where the mirror is: it goes on at the partition's start.
          if (part.errorCode === 1) {
            const starts = await this.driver.offsets(this.topic, -2n)
            const start = starts.get(p)
            if (start !== undefined && start > (this.next.get(p) ?? 0n)) this.next.set(p, start)
            continue
          }
          throw new Error(`kafka fetch of ${this.topic}[${p}] failed with error code ${part.errorCode}`)
        }
        for (const batch of part.records ?? []) if (!this.addBatch(p, batch)) break
      }
    }
  }

  private addBatch(p: number, batch: RecordBatch): boolean {
    const end = batch.firstOffset + BigInt(batch.lastOffsetDelta) + 1n
    if (!(batch.attributes & IS_CONTROL)) {
      const appended = (batch.attributes & LOG_APPEND_TIME) !== 0
      for (const record of batch.records) {
        const offset = batch.firstOffset + BigInt(record.offsetDelta)
        if (offset < (this.next.get(p) ?? 0n)) continue
        this.next.set(p, offset)
        // The history may end here, and a subscribe waiting for this point starts before this record.
        if (this.history !== undefined) this.checkHistory()
        else if (this.waiters.waiting) this.release()
        // Past the marker of a subscribe still waiting (another partition is short of it): this
        // partition stays here until it starts, else the record would go in before it and never
        // reach it. The next fetch of this partition asks from here again.
        if (this.waiters.waiting && this.pastMarker(p, offset)) return false
        // No room left this round: the next fetch asks from this record.
        if (this.room <= 0) return false
        this.room--
        this.next.set(p, offset + 1n)
        const at = Number(appended ? batch.maxTimestamp : batch.firstTimestamp + record.timestampDelta)
        if (record.value === null || at < this.oldest) continue
        const route = recordRoute(record.headers)
        // A refused record (signing) is skipped: counted and reported, never in the mirror. Its
        // time is the broker's only on a LogAppendTime topic (Orrery's); else its order is used.
        const signing = this.driver.signing
        const where = appended ? at : { lane: `${this.channel.name}\u0000${p}`, offset }
        if (signing !== undefined && !signing.accept(recordSignature(record.headers), this.channel.name, route, record.value, `${p}:${offset}`, where)) continue
        this.writer.live(this.channel.id, at, record.value, route)
      }
    }
    if (end > (this.next.get(p) ?? 0n)) this.next.set(p, end)
    return true
  }

  /**
   * Whether `offset` of partition `p` is at or past the marker of a subscribe still waiting. Not
   * while it is short of the history's end (a marker below it is of a topic made again since: the
   * history must not wait for it).
   */
  private pastMarker(p: number, offset: bigint): boolean {
    const until = this.history?.until.get(p)
    if (until !== undefined && offset < until) return false
    return this.waiters.holds((after) => {
      const at = after.get(p)
      return at !== undefined && offset >= at
    })
  }

  /** Starts every waiting subscriber now, after what is read so far. */
  private startAll(): void {
    this.waiters.release(
      () => true,
      () => this.flush(),
    )
  }

  private flush(): void {
    const batch = this.writer.take()
    if (batch !== undefined && !this.stopped) this.driver.sink.ingest(batch)
  }

  /** Runs `start` once the mirror holds every record up to `marker` (each partition's end then), and none after; `failed` if the marker fails. */
  catchUp(marker: Promise<Offsets>, start: () => void, failed: (error: unknown) => void): () => void {
    return this.waiters.add(
      marker,
      start,
      () => this.release(),
      failed,
      () => this.driver.isClosed || this.stopped,
    )
  }

  private release(): void {
    if (!this.waiters.waiting || this.history !== undefined) return
    this.waiters.release(
      (after) => this.reached(after),
      () => this.flush(),
    )
  }

  /** The subscribers' room may have grown: a loop waiting for it fetches now. */
  wake(): void {
    this.pause.wake()
  }

  stop(): void {
    if (this.stopped) return
    this.stopped = true
    this.pause.wake()
    this.history?.done()
    this.history = undefined
    const client = this.client
    this.client = undefined
    closeClient(client)
  }

  /**
   * Stops at once: what was read goes in first. A fetch in flight (up to FETCH_WAIT_MS) is not
   * waited for: what it would bring is dropped as it comes anyway (`fetch` returns once stopped).
   */
  async stopAndWait(): Promise<void> {
    if (this.stopped) return
    this.flush()
    this.stop()
  }
}
