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

import { OrreryError } from '../errors.js'
import type { GroupRef } from './driver.js'
import type { KafkaDriver } from './kafka.js'
import { guardFetches } from './kafka-fetches.js'
import { closeClient, FETCH_BYTES, FETCH_PARTITION_BYTES, FETCH_WAIT_MS, IS_CONTROL, type RecordBatch, recordRoute, recordSignature } from './kafka-shared.js'
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
  /** The topic's making it was read from (see `KafkaGroupReader.epoch`). */
  readonly epoch: number
  /** Acked: it leaves its partition's queue when it reaches the front. */
  done?: boolean
}

/**
 * A partition's held records in offset order (they are read in that order): the first not acked
 * is where its commit stops. Acked ones leave from the front, so finding it costs nothing per ack
 * (a walk over every held record per ack was a fifth of a consumer's time). Acked ones behind a
 * record still held are dropped once they are most of the queue, so a record held long (a nack
 * with a delay, a slow handler) does not keep every later acked record's frame.
 */
class HeldQueue {
  private items: Held[] = []
  private head = 0
  /** Acked records still in `items` from the head on. */
  private acked = 0

  push(h: Held): void {
    this.items.push(h)
  }

  /** One of its records was acked (its `done` set). */
  settled(): void {
    this.acked++
  }

  /** The oldest record still held, if any. */
  first(): Held | undefined {
    const { items } = this
    while (this.head < items.length && items[this.head]!.done) {
      this.head++
      this.acked--
    }
    if (this.acked > 1024 && this.acked * 2 > items.length - this.head) {
      this.items = items.slice(this.head).filter((h) => !h.done)
      this.head = 0
      this.acked = 0
    } else if (this.head > 1024 && this.head * 2 > items.length) {
      this.items = items.slice(this.head)
      this.head = 0
    }
    return this.items[this.head]
  }
}

/** Pause before a consumer whose stream ended is made again. */
const RESTART_MS = 1_000
/**
 * A JoinGroup waits at the broker until every member rejoined, up to the rebalance timeout; the
 * client's request timeout (5 s by default) must outlast it, or a rebalance held by a member that
 * went away fails the join 3 times over ("rejoinGroup failed 3 times"). Kafka's Java client gives
 * a join the rebalance timeout plus 5 s too.
 */
const JOIN_MARGIN_MS = 5_000

const later: (f: () => void) => void = typeof setImmediate === 'function' ? (f) => void setImmediate(f) : (f) => void setTimeout(f, 0)

export class KafkaGroupReader {
  private consumer: Consumer<Buffer, Buffer, Buffer, Buffer> | undefined
  private stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined
  private starting = false
  /** Records held, by `<partition>:<offset>`. */
  private readonly held = new Map<string, Held>()
  /** The same records per partition, oldest first. */
  private readonly queues = new Map<number, HeldQueue>()
  /** The highest offset given to the core, per partition. */
  private readonly delivered = new Map<number, bigint>()
  /** Whether a record was ever given to the core (a consumer made again then starts no later than the earliest). */
  private given = false
  /**
   * The partitions Kafka assigned this process at the consumer's last join, each with the group
   * generation at which it was assigned to this process: a record the stream read before that
   * (while the partition was another process's, or before this process lost it) is not handed
   * out; the partition is read again from its last commit.
   */
  private readonly ownedSince = new Map<number, number>()
  /**
   * Kafka moves the group's partitions (a member came or went): until the consumer joined again
   * the stream is paused and nothing is handed out, since each partition may go to another
   * process, which reads it from the last commit. A move with no join after the rebalance timeout
   * (a rejoin the client made on its own and that failed, which it does not report) has the
   * consumer made again.
   */
  private rebalancing = false
  private rebalanceTimer: ReturnType<typeof setTimeout> | undefined
  /** Released records due for a delivery again, in the order they became due. */
  private ready: Held[] = []
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  private paused = false
  /**
   * Records taken from a fetch's answer once the members' room ran out, in order, with the
   * generation they were read in: handed out as room comes back, before the stream (`unreadOf`)
   * resumes. Dropped with that stream.
   */
  private unread: UnreadRecord[] = []
  /** How many of `unread` were handed out. */
  private unreadAt = 0
  private unreadOf: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined
  private readonly writer = new IngestWriter()
  /** Deliveries written since the last ingest (the core's room does not count them yet). */
  private unflushed = 0
  /** The members' room less what was read since it was last asked (0: ask again). */
  private roomLeft = 0
  private scheduled = false
  /** Commits to make (next offset per partition), the commit in flight, and what was committed. */
  private readonly toCommit = new Map<number, bigint>()
  private committing: Promise<void> | undefined
  private readonly commitAt = new Map<number, bigint>()
  private reading = true
  private closed = false
  /**
   * The member id of the consumer dropped last: the next one joins as that member. The broker
   * keeps a member through its own restart, so one that joined under a new id would wait up to a
   * session timeout for the old one to rejoin (measured: 33 s with the default visibility).
   */
  private memberId: string | null = null
  /** When the consumer last joined the group; with its heartbeats, what says it is still a member. */
  private joinedAt = 0
  private watchdog: ReturnType<typeof setInterval> | undefined
  /**
   * Whether `prepare` is done: no consumer joins before. One that joined first made the group
   * non-empty, so setting its start failed, and with no committed offset until the first commit,
   * a consumer made again after a broker crash fell back to the latest offset and skipped all
   * that was published while the broker was away (499 records, restart.test.ts SIGKILL).
   */
  private prepared = false
  /** Consumers `close` let go while they joined: each is closed once its join ends. */
  private readonly owed = new Set<Consumer<Buffer, Buffer, Buffer, Buffer>>()
  /**
   * The topic's id as Kafka gave it, looked up at each join, and how many times this reader found
   * it made again. A topic made again (deleted, or the broker back without its data) numbers its
   * offsets from 0 again: what this process held of the old one is forgotten, and a position
   * names the making it was read from, so an answer to an old record never settles the new
   * record at the same offset, nor commits it.
   */
  private topicId: string | undefined
  private epoch = 0
  /** Whether the topic was looked at since the consumer last joined: until then nothing is committed. */
  private topicSeen = false
  /** Joins so far: a look at the topic answers for the join it was made at only. */
  private joins = 0
  /** Partitions a commit was sent for since the topic was last found made again. */
  private readonly committedIn = new Set<number>()
  /**
   * Partitions whose group offset must go back to the topic's start before anything is read or
   * committed again (see `rewind`): kept until a rewind commit is made, by whichever consumer.
   */
  private readonly owedRewind = new Set<number>()
  /** Whether this consumer reads nothing more (`holdReads`): only a new consumer reads again. */
  private readsHeld = false
  /** Commits sent and not answered yet, each with the epoch it was made in (a rewind waits for the older ones). */
  private readonly commitRuns = new Map<Promise<void>, number>()

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
    await this.setStart()
    this.prepared = true
  }

  private async setStart(): Promise<void> {
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

  /**
   * Room may have grown: what is due goes first (a draining stop too hands it out: it was read
   * already), then the consumer reads (joining the group the first time). A consumer is made
   * whatever the room while this reader holds records or owes commits: their acks are committed
   * through it (its stream paused until there is room).
   */
  wake(): void {
    if (this.closed || !this.reading || (this.rebalancing && this.consumer !== undefined)) return
    let due = this.ready.length > 0 ? this.driver.sink.memberRoom(this.group.id) - this.unflushed : 0
    while (due > 0 && this.ready.length > 0) {
      const h = this.ready.shift()!
      if (this.held.get(key(h.partition, h.offset)) !== h) continue
      this.writer.group(this.group.id, h.count, position(h), h.frame, h.route)
      this.unflushed++
      due--
    }
    if (this.unflushed > 0) this.flush()
    const room = this.driver.sink.groupRoom(this.group.id) - this.unflushed
    if (this.consumer === undefined && !this.starting) {
      if (this.prepared && (room > 0 || this.held.size > 0 || this.toCommit.size > 0)) this.start()
    } else if (room > 0 && this.paused && this.stream !== undefined && !this.readsHeld) {
      this.paused = false
      if (this.readUnread()) this.stream.resume()
    }
    // A retry's or a release's timer ended: the drain may be able to hand the group over now.
    if (this.draining) this.handOverIfIdle()
  }

  private get sessionTimeout(): number {
    return Math.min(300_000, Math.max(6_000, threshold(this.group)))
  }

  private start(): void {
    this.starting = true
    this.topicSeen = false
    this.readsHeld = false
    // A new consumer's stream reads every partition it is given from its last commit.
    this.settled()
    this.ownedSince.clear()
    const sessionTimeout = this.sessionTimeout
    const consumer = new this.driver.kafka.Consumer({
      ...(this.driver.clientOptions() as object),
      groupId: this.driver.groupIdOf(this.group),
      autocommit: false,
      sessionTimeout,
      rebalanceTimeout: sessionTimeout,
      heartbeatInterval: Math.min(1_000, Math.floor(sessionTimeout / 3)),
      timeout: sessionTimeout + JOIN_MARGIN_MS,
      maxWaitTime: FETCH_WAIT_MS,
      maxBytesPerPartition: FETCH_PARTITION_BYTES,
      maxBytes: FETCH_BYTES,
      isolationLevel: this.driver.kafka.FetchIsolationLevels.READ_UNCOMMITTED,
    } as never) as Consumer<Buffer, Buffer, Buffer, Buffer>
    consumer.memberId = this.memberId
    this.consumer = consumer
    // A fetch answered after its partition left and came back must not move the stream's position.
    let ours: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined
    const topic = this.topic
    guardFetches(
      this.driver.kafka,
      consumer,
      (partition) => ours?.offsetsToFetch.get(`${topic}:${partition}`),
      (partition, from, batches) => {
        if (ours === undefined) return
        try {
          this.take(consumer, ours, partition, from, batches)
        } catch (error) {
          // Nothing may throw into the client's diagnostics channel (Node would treat it as
          // uncaught): reported, and the stream made again, which reads on from the last commit
          // (what was taken out of the batches and not handed out is read again).
          this.driver.sink.failed(error)
          if (!this.closed && this.reading && this.consumer === consumer) this.restart()
        }
      },
    )
    // Registered before the stream's own listener, which reads each assigned partition again from
    // its last commit: `assigned` may first take back the stream's position in a partition.
    consumer.on('consumer:group:join', () => {
      if (this.consumer !== consumer) return
      this.joinedAt = Date.now()
      this.topicSeen = false
      const join = ++this.joins
      this.assigned(consumer.assignments?.find((a) => a.topic === this.topic)?.partitions ?? [], consumer.generationId)
      // A rewind still owed (or this consumer held for one): nothing is read before it is made.
      if (this.owedRewind.size > 0 || this.readsHeld) this.holdReads()
      this.lookAtTopic(consumer, join)
    })
    consumer.on('consumer:group:rebalance', () => {
      if (this.consumer !== consumer) return
      this.rebalancing = true
      this.stream?.pause()
      if (this.rebalanceTimer === undefined) {
        this.rebalanceTimer = setTimeout(() => {
          this.rebalanceTimer = undefined
          if (!this.rebalancing || this.consumer !== consumer || this.closed || !this.reading) return
          this.driver.sink.failed(
            this.lost(undefined, `has not joined again ${this.sessionTimeout + JOIN_MARGIN_MS} ms after the group began moving partitions`),
          )
          this.restart()
        }, this.sessionTimeout + JOIN_MARGIN_MS)
        ;(this.rebalanceTimer as { unref?: () => void }).unref?.()
      }
    })
    // The client reports a failed rejoin of the group (the broker gone mid-rebalance, a rebalance
    // that outlasted the join) as an 'error' event, and stops heartbeating: the consumer is no
    // longer a member and never will be again, though its stream may read on. It is dropped and
    // made again (joining as the same member), and the failure reported.
    consumer.on('error', (error: unknown) => {
      if (this.closed || !this.reading || this.consumer !== consumer) return
      this.driver.sink.failed(this.lost(error, 'failed to rejoin the group'))
      this.restart()
    })
    this.watch()
    consumer
      .consume({
        topics: [this.topic],
        mode: this.driver.kafka.MessagesStreamModes.COMMITTED,
        // Where a partition with no committed offset starts: the group's start, unless this process
        // read the group already (a consumer made again, no commit reached the broker): then the
        // earliest, what it was given already being skipped, so nothing published meanwhile is.
        fallbackMode:
          this.group.start.at === 'latest' && !this.given
            ? this.driver.kafka.MessagesStreamFallbackModes.LATEST
            : this.driver.kafka.MessagesStreamFallbackModes.EARLIEST,
        autocommit: false,
      })
      .then(
        (stream) => {
          if (this.consumer !== consumer || this.closed || !this.reading) {
            // Let go meanwhile. One closed while it joined is closed now, its stream first. One
            // still this reader's (reading stopped while it joined) is joined: `leave` commits
            // through it and closes it.
            if (this.owed.delete(consumer)) void this.closeLate(consumer, stream)
            else void stream.close().catch(() => {})
            if (this.consumer === consumer) this.starting = false
            return
          }
          this.starting = false
          this.stream = stream
          ours = stream
          stream.on('data', (m: Message<Buffer, Buffer, Buffer, Buffer>) => this.receive(m.partition, m.offset, m.value, m.headers, readIn(m)))
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
          // Made for commits alone (no room: see `wake`), it reads nothing until there is room.
          if (!this.paused && this.driver.sink.groupRoom(this.group.id) - this.unflushed <= 0) this.paused = true
          if (this.paused || this.rebalancing) stream.pause()
          // Acks made while there was no consumer are committed now.
          if (this.committing === undefined) this.commit()
          this.handOverIfIdle()
        },
        (error: unknown) => {
          if (this.owed.delete(consumer)) void this.drop(consumer, undefined)
          if (this.consumer !== consumer) return
          this.starting = false
          this.consumer = undefined
          void this.drop(consumer, undefined)
          if (this.closed || !this.reading) return
          this.driver.sink.failed(error)
          // Its topic gone (deleted, or the broker back without its data): made again meanwhile.
          if (this.driver.topicGone(error)) void this.driver.topicId(this.group.channel).catch(() => {})
          // Tried again once room is asked for again.
          const timer = setTimeout(() => {
            this.timers.delete(timer)
            this.wake()
          }, 1_000)
          this.timers.add(timer)
        },
      )
  }

  /**
   * Looks up the topic's id once `consumer` joined (its `join`-th join): the same, commits go on;
   * another, the topic was made again, and what this process held of the old one is dropped (its
   * records were not committed, and may be gone), the group's offsets it committed are set back
   * (`rewind`) and the consumer made again, to read the new topic from there.
   */
  private lookAtTopic(consumer: Consumer<Buffer, Buffer, Buffer, Buffer>, join: number): void {
    const current = () => this.consumer === consumer && this.joins === join && !this.closed && this.reading
    this.driver.topicId(this.group.channel).then(
      (id) => {
        if (!current()) return
        const before = this.topicId
        this.topicId = id
        if (before !== undefined && id !== before) {
          for (const partition of this.committedIn) this.owedRewind.add(partition)
          this.forgetTopic()
          this.driver.sink.failed(
            this.lost(undefined, 'found its topic made again (deleted, or the broker came back without its data); what it held of the old topic is dropped'),
          )
        }
        if (this.owedRewind.size === 0) {
          // Held for a rewind another join made meanwhile (the client's own, for a refused commit): read again by a new consumer.
          if (this.readsHeld) {
            this.forgetTopic()
            this.restart()
            return
          }
          this.topicSeen = true
          if (this.committing === undefined) this.commit()
          this.handOverIfIdle()
          return
        }
        this.holdReads()
        this.rewind(consumer).then(
          () => {
            if (!current()) return
            // What the stream read meanwhile is read again from the offsets set back.
            this.forgetTopic()
            this.restart()
          },
          (error: unknown) => {
            if (!current()) return
            // Owed still: made by the next consumer, at its join.
            this.driver.sink.failed(error)
            this.restart()
          },
        )
      },
      () => {
        // Unreachable now: looked at again shortly (commits wait meanwhile).
        const timer = setTimeout(() => {
          this.timers.delete(timer)
          if (current()) this.lookAtTopic(consumer, join)
        }, RESTART_MS)
        this.timers.add(timer)
      },
    )
  }

  /**
   * A draining stop: the stream pauses now rather than when the room last seen runs out (room is
   * 0 from now on); what a fetch brought already waits in `unread`, never handed out here. Once
   * this process holds nothing of the group, its consumer leaves (`handOverIfIdle`).
   */
  drain(): void {
    // What was read and not handed to the core yet goes in now: the drain sees it.
    if (this.unflushed > 0) this.flush()
    this.roomLeft = 0
    this.draining = true
    if (!this.paused) {
      this.paused = true
      this.stream?.pause()
    }
    this.handOverIfIdle()
  }

  /** Set by `drain`. */
  private draining = false

  /**
   * During a draining stop, once every record handed out here is acked (none held, none released
   * to run here again): the consumer leaves the group, after committing, so Kafka gives its
   * partitions to the group's other processes now rather than when the whole stop ends (what a
   * fetch brought and was not handed out is read again from the commit by the next owner).
   */
  private handOverIfIdle(): void {
    if (!this.draining || this.closed || this.held.size > 0 || this.ready.length > 0 || this.timers.size > 0) return
    // Not while acks may not be committable yet: a consumer joining or moving partitions (a
    // commit then is refused), not yet sure of its topic, or asking what it owes: looked at again
    // once that is over. With no consumer at all, only when there is nothing to commit.
    if (this.consumer === undefined ? this.starting || this.toCommit.size > 0 : this.starting || this.rebalancing || !this.topicSeen || this.owedLookups > 0)
      return
    void this.leave()
  }

  /** `commitOwed` lookups not answered yet. */
  private owedLookups = 0

  /** Whether a released record is due again and members here can take it (see `wake`). */
  holdsDue(): boolean {
    // Not while partitions move (`wake` hands nothing out then): it goes to the next owner.
    return this.ready.length > 0 && !this.closed && this.reading && !this.rebalancing && this.driver.sink.memberRoom(this.group.id) > 0
  }

  /** Nothing more is handed out or read until the consumer is made again (its stream paused, no partition counted as owned). */
  private holdReads(): void {
    this.readsHeld = true
    this.ownedSince.clear()
    this.paused = true
    this.stream?.pause()
  }

  /**
   * Sets the group's offsets of the partitions owed a rewind back to the new topic's start. A
   * commit of the old topic's offsets may have reached the new one: one sent before the topic was
   * found made again, which the client sends once more after each join of its own (it is waited
   * for first). Left there, it would skip the new records below it; set back, what others read of
   * them since may run again (at least once).
   */
  private async rewind(consumer: Consumer<Buffer, Buffer, Buffer, Buffer>): Promise<void> {
    const epoch = this.epoch
    await Promise.allSettled([...this.commitRuns].filter(([, e]) => e < epoch).map(([run]) => run))
    const partitions = [...this.owedRewind]
    const starts = await this.driver.offsets(this.topic, -2n)
    await consumer.commit({ offsets: partitions.map((partition) => ({ topic: this.topic, partition, offset: starts.get(partition) ?? 0n, leaderEpoch: -1 })) })
    for (const partition of partitions) this.owedRewind.delete(partition)
  }

  /** The topic was made again: nothing held, delivered or to commit of the old one counts any more. */
  private forgetTopic(): void {
    this.epoch++
    this.held.clear()
    this.committedIn.clear()
    for (const map of [this.queues, this.delivered, this.toCommit, this.commitAt]) map.clear()
    this.ready = []
    // Everything in the new topic came after the group began: a consumer reads it from the earliest.
    this.given = true
  }

  /** An OrreryError saying this group's consumer is no longer a member, and why. */
  private lost(cause: unknown, why: string): OrreryError {
    const id = this.driver.groupIdOf(this.group)
    return new OrreryError(
      'TRANSPORT_UNAVAILABLE',
      `kafka transport ${this.driver.transport}: the consumer of group ${this.group.name} on ${this.group.channel} (${id}) ${why}; it joins again`,
      { cause, details: { transport: this.driver.transport, channel: this.group.channel, group: this.group.name } },
    )
  }

  /**
   * Checks now and then that the consumer is still a member: with its stream paused (the members
   * have no room) nothing fetches, and a consumer whose heartbeat stopped in an outage stays
   * silent for good (measured: no event after the broker is back). Twice the session timeout plus
   * the join margin without a heartbeat or a join is past any rebalance: it is made again.
   */
  private watch(): void {
    if (this.watchdog !== undefined) return
    const every = Math.max(1_000, Math.floor(this.sessionTimeout / 2))
    this.watchdog = setInterval(() => {
      const consumer = this.consumer
      if (consumer === undefined || this.starting || this.stream === undefined || this.closed || !this.reading) return
      const last = Math.max(this.joinedAt, consumer.lastHeartbeat?.getTime() ?? 0)
      const silent = Date.now() - last
      if (silent <= 2 * this.sessionTimeout + JOIN_MARGIN_MS) return
      this.driver.sink.failed(this.lost(undefined, `has not heartbeated for ${silent} ms`))
      this.restart()
    }, every)
    // A timer of its own must not keep the process alive.
    ;(this.watchdog as { unref?: () => void }).unref?.()
  }

  /**
   * Closes a consumer this reader let go, without leaving the group: a LeaveGroup needs the
   * broker, and a client whose leave failed stays open (its close rejects and it goes on
   * heartbeating). Its member id is kept for the next consumer, which joins as that member.
   */
  private async drop(consumer: Consumer<Buffer, Buffer, Buffer, Buffer>, stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined): Promise<void> {
    // The stream first: one still fetching when the member id goes fails on it (a TypeError thrown
    // from the client's callback).
    await stream?.close().catch(() => {})
    if (consumer.memberId !== null) this.memberId = consumer.memberId
    consumer.memberId = null
    closeClient(consumer)
  }

  /** Drops the consumer and makes a new one shortly (it joins the group again, as the same member). */
  private restart(): void {
    const consumer = this.consumer
    const stream = this.stream
    this.stream = undefined
    this.consumer = undefined
    this.starting = false
    this.paused = false
    this.dropUnread()
    if (consumer !== undefined) void this.drop(consumer, stream)
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      this.wake()
    }, RESTART_MS)
    this.timers.add(timer)
  }

  /**
   * The consumer joined with these partitions. What this process held of a partition it lost is
   * forgotten: the new owner reads it from the last commit (what members here still handle runs
   * twice: at least once), and a commit from here could only move that owner's offset back; what
   * the stream read of it is dropped as it comes. A partition newly assigned has its stream
   * position taken back, before the stream's own listener reads each partition's last commit, so
   * it is read from there (or, with none, from where a new consumer would start), never from past
   * records this process dropped or forgot.
   */
  private assigned(partitions: readonly number[], generation: number): void {
    const owned = new Set(partitions)
    const lost = (partition: number): boolean => !owned.has(partition)
    for (const [k, h] of this.held) if (lost(h.partition)) this.held.delete(k)
    for (const map of [this.queues, this.delivered, this.toCommit, this.commitAt, this.ownedSince])
      for (const partition of map.keys()) if (lost(partition)) map.delete(partition)
    this.ready = this.ready.filter((h) => !lost(h.partition))
    for (const partition of owned) {
      if (this.ownedSince.has(partition)) continue
      this.ownedSince.set(partition, generation)
      this.stream?.offsetsToFetch.delete(`${this.topic}:${partition}`)
    }
    if (this.rebalancing) {
      this.settled()
      if (!this.paused) this.stream?.resume()
      this.wake()
    }
    // A commit still out was sent before the move: the client may be holding it for a join of its
    // own (one more move), and the acks since must not wait for it.
    this.committing = undefined
    this.commit()
    this.commitOwed([...owned].filter((partition) => this.delivered.has(partition) && !this.toCommit.has(partition)))
    this.handOverIfIdle()
  }

  /**
   * Acks made while no partition was counted as owned (between a new consumer's start and its
   * join) were not asked to be committed: they are, for the `partitions` this process kept, once
   * the group's offsets show that no other process committed past this one's last commit of a
   * partition meanwhile (it moved away and back). One that did is left as it is: what was acked
   * here and not committed runs again (at least once), and nothing it committed is moved back.
   */
  private commitOwed(partitions: readonly number[]): void {
    const consumer = this.consumer
    if (consumer === undefined || partitions.length === 0) return
    this.owedLookups++
    consumer
      .listCommittedOffsets({ topics: [{ topic: this.topic, partitions: [...partitions] }] })
      .then(
        (offsets) => {
          if (this.consumer !== consumer || this.closed) return
          const committed = offsets.get(this.topic) ?? []
          for (const partition of partitions) if ((committed[partition] ?? -1n) <= (this.commitAt.get(partition) ?? -1n)) this.commitSoon(partition)
        },
        () => {
          // Not answered: the next ack of the partition commits it.
        },
      )
      .finally(() => {
        this.owedLookups--
        this.handOverIfIdle()
      })
  }

  /** The move is over (joined, or a new consumer). */
  private settled(): void {
    this.rebalancing = false
    clearTimeout(this.rebalanceTimer)
    this.rebalanceTimer = undefined
  }

  /**
   * Takes the records of a fetch's answer of `consumer`'s stream (see `guardFetches`) while that
   * stream flows with nothing buffered: they would be handed out at once anyway. From where the
   * members' room runs out (reads pause), the rest waits in `unread`, as the stream would hold it
   * until it resumes. Answers that come while reads are paused (no room, a move of partitions
   * under way, reads held) are left to the stream.
   */
  private take(
    consumer: object,
    stream: MessagesStream<Buffer, Buffer, Buffer, Buffer>,
    partition: number,
    from: bigint,
    batches: readonly RecordBatch[],
  ): void {
    if (this.consumer !== consumer || this.stream !== stream || this.paused || this.rebalancing || this.readsHeld || this.closed || !this.reading) return
    if (stream.destroyed || stream.closed || stream.readableFlowing !== true || stream.readableLength > 0) return
    const readIn = generationOf(consumer)
    for (const batch of batches) {
      if (batch.attributes & IS_CONTROL) continue
      const records = batch.records
      batch.records = TAKEN
      for (const record of records) {
        const offset = batch.firstOffset + BigInt(record.offsetDelta)
        if (offset < from) continue
        if (this.paused) {
          this.unreadOf = stream
          this.unread.push({ partition, offset, value: record.value, headers: record.headers, readIn })
          continue
        }
        this.receive(partition, offset, record.value, record.headers, readIn)
      }
    }
  }

  /** Hands out what waits in `unread` while there is room; true once it is all out (the stream may resume). */
  private readUnread(): boolean {
    if (this.unreadOf !== this.stream) this.dropUnread()
    try {
      while (this.unreadAt < this.unread.length && !this.paused) {
        const r = this.unread[this.unreadAt++]!
        this.receive(r.partition, r.offset, r.value, r.headers, r.readIn)
      }
    } catch (error) {
      this.driver.sink.failed(error)
      this.restart()
      return false
    }
    if (this.unreadAt < this.unread.length) return false
    this.dropUnread()
    return !this.paused
  }

  private dropUnread(): void {
    this.unread = []
    this.unreadAt = 0
    this.unreadOf = undefined
  }

  /** Record `offset` of `partition`, read in the group's generation `readIn`. */
  private receive(partition: number, offset: bigint, value: Buffer | null | undefined, headers: RecordHeaders, readIn: number): void {
    if (this.closed || !this.reading) return
    // Another process's partition, or read before this process was given it (last).
    const since = this.ownedSince.get(partition)
    if (since === undefined || readIn < since) return
    const k = key(partition, offset)
    // Read again after a rebalance: still held here, or acked here and not committed yet.
    if (this.held.has(k) || offset <= (this.delivered.get(partition) ?? -1n)) return
    const route = recordRoute(headers)
    const signing = this.driver.signing
    // A record with no value (a tombstone another client wrote) is no message of Orrery's, and
    // counts as acked. The client gives a record's producer time only, not the broker's: signing
    // checks its order in the partition instead. A refused record (counted and reported) counts
    // as acked too.
    if (
      value === null ||
      value === undefined ||
      (signing !== undefined &&
        !signing.accept(recordSignature(headers), this.group.channel, route, value, `${partition}:${offset}`, {
          lane: `${this.group.channel}\u0000${partition}`,
          offset,
        }))
    ) {
      this.delivered.set(partition, offset)
      this.commitSoon(partition)
      return
    }
    const h: Held = { partition, offset, count: 1, frame: value, route, epoch: this.epoch }
    this.held.set(k, h)
    let queue = this.queues.get(partition)
    if (queue === undefined) {
      queue = new HeldQueue()
      this.queues.set(partition, queue)
    }
    queue.push(h)
    this.delivered.set(partition, offset)
    this.given = true
    this.writer.group(this.group.id, 1, position(h), value, h.route)
    this.unflushed++
    if (!this.scheduled) {
      this.scheduled = true
      later(() => {
        this.scheduled = false
        this.flush()
      })
    }
    // Reads stop while the members have no room; what is read meanwhile waits in the core. The
    // room is asked of the core when the room last seen is used up (and at each ingest), not per record.
    if (!this.paused && --this.roomLeft <= 0) {
      this.roomLeft = this.driver.sink.groupRoom(this.group.id) - this.unflushed
      if (this.roomLeft <= 0) {
        this.paused = true
        this.stream?.pause()
      }
    }
  }

  private flush(): void {
    const batch = this.writer.take()
    this.unflushed = 0
    if (batch !== undefined && !this.closed) this.driver.sink.ingest(batch)
    this.roomLeft = 0
  }

  /** The record a position (`<partition>:<offset>:<count>`, then `@<epoch>` past the first) names, if this delivery of it is still held. */
  private find(pos: string): Held | undefined {
    const at = pos.indexOf('@')
    const end = at < 0 ? pos.length : at
    const count = pos.lastIndexOf(':', end)
    const h = this.held.get(pos.slice(0, count))
    if (h === undefined || String(h.count) !== pos.slice(count + 1, end)) return undefined
    return h.epoch === (at < 0 ? 0 : Number(pos.slice(at + 1))) ? h : undefined
  }

  /** An ack (or a dead letter written): the record is done; the acked prefix is committed. */
  ack(pos: string): void {
    const h = this.find(pos)
    if (h === undefined) return
    this.held.delete(key(h.partition, h.offset))
    h.done = true
    this.queues.get(h.partition)?.settled()
    this.commitSoon(h.partition)
    this.handOverIfIdle()
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
    if (!this.ownedSince.has(partition)) return
    const next = this.queues.get(partition)?.first()?.offset ?? (this.delivered.get(partition) ?? -1n) + 1n
    if (next <= (this.commitAt.get(partition) ?? -1n) || next <= (this.toCommit.get(partition) ?? -1n)) return
    this.toCommit.set(partition, next)
    if (this.committing === undefined) this.commit()
  }

  private commit(): void {
    const consumer = this.consumer
    // While partitions move a commit is refused (the group is between generations) and the client
    // answers the refusal by joining the group again: one more move for every member. What is
    // acked meanwhile is committed once the consumer has joined (a shutdown commits at once).
    // Nor before the topic was looked at since the last join: it may be another topic by now.
    if (consumer === undefined || this.toCommit.size === 0 || (this.rebalancing && this.reading) || !this.topicSeen) return
    const offsets = [...this.toCommit].map(([partition, offset]) => ({ topic: this.topic, partition, offset, leaderEpoch: -1 }))
    this.toCommit.clear()
    for (const o of offsets) this.committedIn.add(o.partition)
    const epoch = this.epoch
    const run: Promise<void> = consumer
      .commit({ offsets })
      .then(
        () => {
          // Of a topic since found made again: it says nothing of the new one.
          if (epoch !== this.epoch) return
          for (const o of offsets)
            if (this.ownedSince.has(o.partition) && o.offset > (this.commitAt.get(o.partition) ?? -1n)) this.commitAt.set(o.partition, o.offset)
        },
        (error: unknown) => {
          // A commit lost in a rebalance is made by the next ack; what it left is read again (at least once).
          if (this.closed || !this.reading) return
          this.driver.sink.failed(error)
        },
      )
      .finally(() => {
        this.commitRuns.delete(run)
        if (this.committing !== run) return
        this.committing = undefined
        if (this.toCommit.size > 0) this.commit()
      })
    this.commitRuns.set(run, epoch)
    this.committing = run
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

  /**
   * Leaves the consumer group (after the commits asked for): Kafka gives its partitions to other
   * processes. With the broker unreachable the consumer is closed without leaving, so nothing
   * stays open: the broker lets the member go after its session timeout. Once: a later call
   * (the end of a stop, after a drain left early) waits for the first.
   */
  leave(): Promise<void> {
    this.leaving ??= this.leaveOnce()
    return this.leaving
  }

  private leaving: Promise<void> | undefined

  private async leaveOnce(): Promise<void> {
    this.reading = false
    // A consumer still joining (made again during a draining stop) cannot commit: it is let go
    // as `close` does, once its join ends; what it held is read again by the next owner.
    if (this.starting && this.stream === undefined) {
      this.close()
      return
    }
    await this.lookBeforeLeaving()
    // Acks held back during a move go now.
    if (this.committing === undefined) this.commit()
    await this.committed()
    await this.stopReading()
    this.closed = true
    this.stopWatching()
    const consumer = this.consumer
    this.consumer = undefined
    if (consumer === undefined) return
    await consumer.close().catch(() => this.drop(consumer, undefined))
  }

  /**
   * A shutdown soon after a join, before its look at the topic was answered (commits wait for it,
   * and its answer is not taken once reading stopped): the topic is looked at here, once, within
   * connectTimeoutMs, so what was acked meanwhile is committed. Found made again or gone (it is
   * not made here), not answered, or another join made meanwhile: nothing is committed, and what
   * was read is read again by the next holder.
   */
  private async lookBeforeLeaving(): Promise<void> {
    if (this.topicSeen || this.consumer === undefined || this.toCommit.size === 0 || this.owedRewind.size > 0 || this.readsHeld) return
    const join = this.joins
    let timer: ReturnType<typeof setTimeout> | undefined
    const id = await Promise.race([
      this.driver.layout(this.topic).then((layout) => layout.id),
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), this.driver.config.connectTimeoutMs)
      }),
    ])
      .catch(() => undefined)
      .finally(() => clearTimeout(timer))
    if (id === undefined || join !== this.joins || (this.topicId !== undefined && id !== this.topicId)) return
    this.topicId = id
    this.topicSeen = true
  }

  close(): void {
    this.closed = true
    this.reading = false
    this.stopWatching()
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    const stream = this.stream
    this.stream = undefined
    const consumer = this.consumer
    this.consumer = undefined
    if (consumer === undefined) return
    // A consumer still joining has no stream yet: it is closed once its join ends, either way (a
    // client closed mid-join still makes the stream, which then throws, uncaught, on the closed client).
    if (stream === undefined && this.starting) this.owed.add(consumer)
    else void this.closeLate(consumer, stream)
  }

  /** Closes a consumer at `close` (its stream first, if any): it leaves the group if the broker answers, and is closed without leaving if not. */
  private async closeLate(
    consumer: Consumer<Buffer, Buffer, Buffer, Buffer>,
    stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined,
  ): Promise<void> {
    await stream?.close().catch(() => {})
    // close(true) resolves a Promise, though its first overload (with a callback) is typed void.
    await (consumer.close(true) as unknown as Promise<void>).catch(() => this.drop(consumer, undefined))
  }

  private stopWatching(): void {
    clearInterval(this.watchdog)
    this.watchdog = undefined
    this.settled()
  }
}

/** The group generation the consumer was in when its stream read `m` (the client's metadata). */
function readIn(m: Message<Buffer, Buffer, Buffer, Buffer>): number {
  return generationOf(m.metadata?.['consumer'])
}

/** A consumer's group generation (`generationId`); unknown: the newest. */
function generationOf(consumer: unknown): number {
  const generation = (consumer as { generationId?: unknown } | undefined)?.generationId
  return typeof generation === 'number' ? generation : Number.POSITIVE_INFINITY
}

/** A record's headers: the stream's map, or the batch's pairs. */
type RecordHeaders = Parameters<typeof recordRoute>[0]

/** A record read and not handed out yet (see `unread`). */
interface UnreadRecord {
  readonly partition: number
  readonly offset: bigint
  readonly value: Buffer | null
  readonly headers: RecordHeaders
  readonly readIn: number
}

/** A batch's records once taken: none left for the stream. */
const TAKEN: RecordBatch['records'] = Object.freeze([])

function key(partition: number, offset: bigint): string {
  return `${partition}:${offset}`
}

/** A delivery's broker position: partition, offset and this process's delivery count. */
function position(h: Held): string {
  return h.epoch === 0 ? `${h.partition}:${h.offset}:${h.count}` : `${h.partition}:${h.offset}:${h.count}@${h.epoch}`
}
