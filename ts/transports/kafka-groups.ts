/**
 * One Orrery group on a Kafka consumer group (one per channel and group name): this process
 * joins it as one consumer once its members have room, and takes what the partitions Kafka
 * assigns it give. Kafka keeps one offset per partition, so an ack commits the contiguous acked
 * prefix; what a member lets go (a nack, an ended lease, a member leaving) is delivered again by
 * this process, which holds the partition, with its delivery count kept here (a process that
 * ends leaves what it did not ack past its committed offset: whoever takes the partition reads
 * it again from there, counting from 1).
 */
import type { Consumer, Message, MessagesStream } from '@platformatic/kafka'

import type { GroupRef } from './driver.js'
import type { KafkaDriver } from './kafka.js'
import { closeClient, FETCH_WAIT_MS, recordRoute } from './kafka-shared.js'
import { IngestWriter, type Route } from './records.js'
import { threshold } from './writes.js'

/** A record this process was given and has not acked: its frame, kept for a delivery again. */
interface Held {
  readonly partition: number
  readonly offset: bigint
  /** Deliveries so far (this process's count). */
  count: number
  readonly frame: Buffer
  readonly route: Route | undefined
}

/** Pause before a consumer whose stream ended is made again. */
const RESTART_MS = 1_000

const later: (f: () => void) => void = typeof setImmediate === 'function' ? (f) => void setImmediate(f) : (f) => void setTimeout(f, 0)

export class KafkaGroupReader {
  private consumer: Consumer<Buffer, Buffer, Buffer, Buffer> | undefined
  private stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined
  private starting = false
  /** Records held, by `<partition>:<offset>`. */
  private readonly held = new Map<string, Held>()
  /** The highest offset given to the core, per partition. */
  private readonly delivered = new Map<number, bigint>()
  /** Released records due for a delivery again, in the order they became due. */
  private ready: Held[] = []
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  private paused = false
  private readonly writer = new IngestWriter()
  /** Deliveries written since the last ingest (the core's room does not count them yet). */
  private unflushed = 0
  private scheduled = false
  /** Commits to make (next offset per partition), the commit in flight, and what was committed. */
  private readonly toCommit = new Map<number, bigint>()
  private committing: Promise<void> | undefined
  private readonly commitAt = new Map<number, bigint>()
  private reading = true
  private closed = false

  constructor(
    private readonly driver: KafkaDriver,
    private readonly group: GroupRef,
  ) {}

  private get topic(): string {
    return this.driver.topicOf(this.group.channel)
  }

  /**
   * A group from `latest` or a time that Kafka has no offsets for yet gets them set now (the end,
   * or the first record at that time): the consumer joins only once a member has room, and its
   * own start could only be the earliest or the latest record then.
   */
  async prepare(): Promise<void> {
    const start = this.group.start
    if (start.at === 'earliest') return
    const groupId = this.driver.groupIdOf(this.group)
    const admin = new this.driver.kafka.Admin(this.driver.clientOptions() as never)
    try {
      const listed = await admin.listConsumerGroupOffsets({ groups: [groupId] })
      const known = listed.some((g) => g.topics.some((t) => t.partitions.some((p) => p.committedOffset >= 0n)))
      if (known) return
      const ends = await this.driver.offsets(this.topic, -1n)
      const at = start.at === 'time' ? await this.driver.offsets(this.topic, BigInt(Math.max(0, Math.floor(start.time)))) : ends
      const partitionOffsets = [...ends].map(([partition, end]) => ({ partition, offset: (at.get(partition) ?? -1n) < 0n ? end : at.get(partition)! }))
      await admin.alterConsumerGroupOffsets({ groupId, topics: [{ name: this.topic, partitionOffsets }] }).catch(() => {
        // Another process is in the group already: it started it.
      })
    } finally {
      void admin.close().catch(() => {})
    }
  }

  /** Room may have grown: what is due goes first, then the consumer reads (joining the group the first time). */
  wake(): void {
    if (this.closed || !this.reading) return
    let room = this.driver.sink.groupRoom(this.group.id) - this.unflushed
    if (room <= 0) return
    while (room > 0 && this.ready.length > 0) {
      const h = this.ready.shift()!
      if (this.held.get(key(h.partition, h.offset)) !== h) continue
      this.writer.group(this.group.id, h.count, position(h), h.frame, h.route)
      this.unflushed++
      room--
    }
    if (this.unflushed > 0) this.flush()
    if (room <= 0) return
    if (this.consumer === undefined && !this.starting) this.start()
    else if (this.paused && this.stream !== undefined) {
      this.paused = false
      this.stream.resume()
    }
  }

  private start(): void {
    this.starting = true
    const sessionTimeout = Math.min(300_000, Math.max(6_000, threshold(this.group)))
    const consumer = new this.driver.kafka.Consumer({
      ...(this.driver.clientOptions() as object),
      groupId: this.driver.groupIdOf(this.group),
      autocommit: false,
      sessionTimeout,
      rebalanceTimeout: sessionTimeout,
      heartbeatInterval: Math.min(1_000, Math.floor(sessionTimeout / 3)),
      maxWaitTime: FETCH_WAIT_MS,
      isolationLevel: this.driver.kafka.FetchIsolationLevels.READ_UNCOMMITTED,
    } as never) as Consumer<Buffer, Buffer, Buffer, Buffer>
    this.consumer = consumer
    // The client reports a failed rejoin of the group (the broker gone, a rebalance that timed out)
    // as an 'error' event: unheard, Node throws it as an uncaught exception and ends the process.
    consumer.on('error', (error: unknown) => {
      if (!this.closed && this.reading) this.driver.sink.failed(error)
    })
    consumer
      .consume({
        topics: [this.topic],
        mode: this.driver.kafka.MessagesStreamModes.COMMITTED,
        fallbackMode:
          this.group.start.at === 'latest' ? this.driver.kafka.MessagesStreamFallbackModes.LATEST : this.driver.kafka.MessagesStreamFallbackModes.EARLIEST,
        autocommit: false,
      })
      .then(
        (stream) => {
          this.starting = false
          if (this.closed || !this.reading) {
            void stream.close().catch(() => {})
            return
          }
          this.stream = stream
          stream.on('data', (m: Message<Buffer, Buffer, Buffer, Buffer>) => this.receive(m))
          // A stream ends on a failed fetch (the broker gone, a leader moved): the consumer is made
          // again and reads on from the committed offsets; what is held here stays held.
          stream.on('error', (error: unknown) => {
            if (this.closed || !this.reading || this.stream !== stream) return
            this.driver.sink.failed(error)
            this.restart()
          })
          stream.on('close', () => {
            if (this.stream === stream && !this.closed && this.reading) this.restart()
          })
          if (this.paused) stream.pause()
          // Acks made while there was no consumer are committed now.
          if (this.committing === undefined) this.commit()
        },
        (error: unknown) => {
          this.starting = false
          this.consumer = undefined
          closeClient(consumer)
          if (this.closed || !this.reading) return
          this.driver.sink.failed(error)
          // Tried again once room is asked for again.
          const timer = setTimeout(() => {
            this.timers.delete(timer)
            this.wake()
          }, 1_000)
          this.timers.add(timer)
        },
      )
  }

  /** Drops the consumer and makes a new one shortly (it joins the group again). */
  private restart(): void {
    const consumer = this.consumer
    this.stream = undefined
    this.consumer = undefined
    this.paused = false
    closeClient(consumer)
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      this.wake()
    }, RESTART_MS)
    this.timers.add(timer)
  }

  private receive(m: Message<Buffer, Buffer, Buffer, Buffer>): void {
    if (this.closed || !this.reading) return
    const k = key(m.partition, m.offset)
    // Read again after a rebalance: still held here, or acked here and not committed yet.
    if (this.held.has(k) || m.offset <= (this.delivered.get(m.partition) ?? -1n)) return
    const h: Held = { partition: m.partition, offset: m.offset, count: 1, frame: m.value, route: recordRoute(m.headers) }
    this.held.set(k, h)
    this.delivered.set(m.partition, m.offset)
    this.writer.group(this.group.id, 1, position(h), m.value, h.route)
    this.unflushed++
    if (!this.scheduled) {
      this.scheduled = true
      later(() => {
        this.scheduled = false
        this.flush()
      })
    }
    // Reads stop while the members have no room; what is read meanwhile waits in the core.
    if (!this.paused && this.driver.sink.groupRoom(this.group.id) - this.unflushed <= 0) {
      this.paused = true
      this.stream?.pause()
    }
  }

  private flush(): void {
    const batch = this.writer.take()
    this.unflushed = 0
    if (batch !== undefined && !this.closed) this.driver.sink.ingest(batch)
  }

  private find(pos: string): Held | undefined {
    const [p, o, c] = pos.split(':')
    const h = this.held.get(`${p}:${o}`)
    return h !== undefined && String(h.count) === c ? h : undefined
  }

  /** An ack (or a dead letter written): the record is done; the acked prefix is committed. */
  ack(pos: string): void {
    const h = this.find(pos)
    if (h === undefined) return
    this.held.delete(key(h.partition, h.offset))
    this.commitSoon(h.partition)
  }

  /** A release: delivered again by this process after `delayMs` (undefined: shutting down, left to the next owner). */
  release(pos: string, delayMs: number | undefined): void {
    const h = this.find(pos)
    if (h === undefined || delayMs === undefined || this.closed) return
    h.count++
    if (delayMs <= 0) {
      this.ready.push(h)
      this.wake()
      return
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      this.ready.push(h)
      this.wake()
    }, delayMs)
    this.timers.add(timer)
  }

  /** Commits the partition up to its first record still held (or past all it was given). */
  private commitSoon(partition: number): void {
    let next = (this.delivered.get(partition) ?? -1n) + 1n
    for (const h of this.held.values()) if (h.partition === partition && h.offset < next) next = h.offset
    if (next <= (this.commitAt.get(partition) ?? -1n) || next <= (this.toCommit.get(partition) ?? -1n)) return
    this.toCommit.set(partition, next)
    if (this.committing === undefined) this.commit()
  }

  private commit(): void {
    const consumer = this.consumer
    if (consumer === undefined || this.toCommit.size === 0) return
    const offsets = [...this.toCommit].map(([partition, offset]) => ({ topic: this.topic, partition, offset, leaderEpoch: -1 }))
    this.toCommit.clear()
    this.committing = consumer
      .commit({ offsets })
      .then(
        () => {
          for (const o of offsets) if (o.offset > (this.commitAt.get(o.partition) ?? -1n)) this.commitAt.set(o.partition, o.offset)
        },
        (error: unknown) => {
          // A commit lost in a rebalance is made by the next ack; what it left is read again (at least once).
          if (!this.closed && this.reading) this.driver.sink.failed(error)
        },
      )
      .finally(() => {
        this.committing = undefined
        if (this.toCommit.size > 0) this.commit()
      })
  }

  /** Resolves once every commit asked for so far is made. */
  async committed(): Promise<void> {
    while (this.committing !== undefined) await this.committing
  }

  /** Stops reading (a shutdown): nothing more is given to the core; commits go on until `leave`. */
  async stopReading(): Promise<void> {
    this.reading = false
    this.ready = []
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    this.flush()
    const stream = this.stream
    this.stream = undefined
    await stream?.close().catch(() => {})
  }

  /** Leaves the consumer group (after the commits asked for): Kafka gives its partitions to other processes. */
  async leave(): Promise<void> {
    this.reading = false
    await this.committed()
    await this.stopReading()
    this.closed = true
    const consumer = this.consumer
    this.consumer = undefined
    await consumer?.close().catch(() => {})
  }

  close(): void {
    this.closed = true
    this.reading = false
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    const stream = this.stream
    this.stream = undefined
    void stream?.close().catch(() => {})
    const consumer = this.consumer
    this.consumer = undefined
    closeClient(consumer)
  }
}

function key(partition: number, offset: bigint): string {
  return `${partition}:${offset}`
}

/** A delivery's broker position: partition, offset and this process's delivery count. */
function position(h: Held): string {
  return `${h.partition}:${h.offset}:${h.count}`
}
