/**
 * The Kafka driver, on @platformatic/kafka (an optional peer dependency loaded when a kafka
 * transport is configured). A bound channel is one topic (`<prefix>-ch-<name>`, one partition
 * unless configured), one record per frame; a publish is a produce with acks from every in-sync
 * replica through an idempotent producer. A mirror fetches the topic's partitions itself (no
 * group); a group is a Kafka consumer group (kafka-groups.ts). The driver only moves bytes: what
 * a delivery means stays in the core.
 */
import type { Admin, Consumer, Producer } from '@platformatic/kafka'

import { OrreryError } from '../errors.js'
import { askUntilAnswered } from './asking.js'
import { catchUpWith, GroupStarts, heldBy, Markers, sendable, serversKey } from './catch-up.js'
import type { CheckedKafkaOptions } from './config.js'
import type { BrokerRetention, ChannelRef, Driver, DriverSink, Egress, GroupRef, HistoryBound } from './driver.js'
import { KafkaGroupReader } from './kafka-groups.js'
import { KafkaMirror } from './kafka-mirror.js'
import { KafkaProduces, type Outgoing, type Place, recordBytes } from './kafka-produce.js'
import { ReplyReader } from './kafka-replies.js'
import { closeClient, closedByBroker, type Offsets, protocolIds, REPLY_TO, RETRY_MS, SIGNATURE, TIMEOUT, type TopicLayout } from './kafka-shared.js'
import { Signing } from './signing.js'
import { errorReply, type PendingWrite, transportError, Writes } from './writes.js'

/** The @platformatic/kafka module, as the driver uses it. */
export type KafkaModule = typeof import('@platformatic/kafka')

/** Loads @platformatic/kafka; missing, it is TRANSPORT_UNAVAILABLE saying how to install it. */
export async function loadKafka(transport?: string): Promise<KafkaModule> {
  // A specifier bundlers do not follow: browsers never load it, and a missing package is a
  // refusal at create, not a build error.
  const specifier = '@platformatic/kafka'
  try {
    return (await import(/* @vite-ignore */ specifier)) as KafkaModule
  } catch (cause) {
    throw new OrreryError(
      'TRANSPORT_UNAVAILABLE',
      `${transport === undefined ? 'a kafka transport' : `kafka transport ${transport}`} needs @platformatic/kafka: npm i @platformatic/kafka@1.35`,
      { cause, details: transport === undefined ? {} : { transport } },
    )
  }
}

/** Protocol errors that a retry cannot mend: the write fails at once. */
const REFUSALS = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_RECORD',
  'CORRUPT_MESSAGE',
  'TOPIC_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'INVALID_TOPIC_EXCEPTION',
  'POLICY_VIOLATION',
])

/** Whether protocol error `id` says a record (or a produce's records) is over the broker's limit. */
function tooLarge(id: string | undefined): boolean {
  return id === 'MESSAGE_TOO_LARGE' || id === 'RECORD_LIST_TOO_LARGE'
}

/** Protocol errors that say the broker refuses this client's credentials or permissions. */
const NOT_ALLOWED = /_AUTHORIZATION_FAILED$|^SASL_AUTHENTICATION_FAILED$|^ILLEGAL_SASL_STATE$|^UNSUPPORTED_SASL_MECHANISM$/

/**
 * Answers that say the producer's identity and the broker's record of it no longer agree (a
 * sequence that does not follow the last one stored, a producer id or epoch the broker does not
 * know): its sequence numbers are worthless from then on, so the produce is sent again from a
 * producer made anew (a new id, sequences from 0).
 */
const IDENTITY_LOST = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'DUPLICATE_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH', 'PRODUCER_FENCED'])

/** The topic the client's metadata lookup found missing, as its error names it (`Unknown topic <name>.`). */
function goneTopicName(error: unknown): string | undefined {
  const match = error instanceof Error ? /^Unknown topic (.+)\.$/.exec(error.message) : null
  return match?.[1]
}

/** A record of a produce, the topic it goes to, the write it is part of and its size at most. */
interface Entry {
  /** Its record; a reply the broker refused as too large becomes an error reply (`answerOversized`). */
  record: Extract<Egress, { frame: Uint8Array }>
  readonly topic: string
  /** Its place in its topic's round robin over partitions, and the partition it went to first. */
  readonly place: Place
  readonly write: PendingWrite
  readonly bytes: number
}

/** One produce request: records in order, at most PRODUCE_BYTES of them (or one record alone). */
interface Produce {
  /**
   * Its records; those of a write settled meanwhile are left out when it is first sent, never
   * after, but for replies to a reply topic found gone (nothing of them was stored).
   */
  entries: Entry[]
  /** Records of it a partition refused at its last attempt, with the refusal's id. */
  refused?: Map<Entry, string> | undefined
}

/**
 * The writes taken from the queue together: their records in order, cut into produces sent one
 * after another, each once answered (see `round`).
 */
interface Round {
  readonly batch: readonly PendingWrite[]
  /** Made when the round is first sent (undefined until then, or if that failed). */
  produces: Produce[] | undefined
  /** The index of the last produce with a record of each write (none: the write has no record to produce). */
  last: Map<PendingWrite, number>
  /** The writes of `batch` before this one are settled. */
  settledTo: number
  readonly channels: Set<string>
  /** The produce to send next. */
  next: number
  /** Whether `produces[next]` was sent and its answer never came: it goes again as it was. */
  unanswered: boolean
  /** Whether a topic of its channels was found gone: made again before the next produce. */
  remake: boolean
}

/**
 * The most a produce carries, in record bytes (an upper bound of each record's size in a record
 * batch, `recordBytes`). The broker refuses a batch over the topic's `max.message.bytes`
 * (1,048,588 bytes by default, the broker's `message.max.bytes`) whole, so the publishes of a turn
 * go out in produces under a safe bound of it: 1,000,000 plus a batch header (61 bytes). A record
 * over it goes alone, and is refused alone if over the topic's limit.
 */
export const PRODUCE_BYTES = 1_000_000

/**
 * The largest request a broker reads, `socket.request.max.bytes` (100 MiB unless it is set
 * otherwise): over it the broker drops the connection, which looks like an outage, so the produce
 * would be tried again until `publishTimeoutMs` and hold up the writes behind it. A record whose
 * frame leaves less than REQUEST_HEADROOM of it (the request's header, the batch's and the
 * record's own) is refused at once instead.
 */
export const REQUEST_BYTES = 100 * 1024 * 1024
const REQUEST_HEADROOM = 64 * 1024

/** The producer's request timeout for `publishTimeoutMs`: a third of it, 1 s to 30 s. */
export function producerRequestTimeout(publishTimeoutMs: number): number {
  return Math.min(30_000, Math.max(1_000, Math.floor(publishTimeoutMs / 3)))
}

/** Cuts `entries` into produces of at most PRODUCE_BYTES (one record over it alone), noting each write's last produce in `last`. */
function cut(entries: readonly Entry[], last: Map<PendingWrite, number>): Produce[] {
  const produces: Produce[] = []
  let current: Entry[] = []
  let bytes = 0
  for (const e of entries) {
    if (current.length > 0 && bytes + e.bytes > PRODUCE_BYTES) {
      produces.push({ entries: current })
      current = []
      bytes = 0
    }
    current.push(e)
    bytes += e.bytes
    last.set(e.write, produces.length)
  }
  if (current.length > 0) produces.push({ entries: current })
  return produces
}

/**
 * A name as a topic name part: letters, digits and `-` stay, every other character is `_` and
 * its code in hex (`orders.eu` -> `orders_2Eeu`), so distinct names never meet (nor collide in
 * Kafka's metric names, where `.` and `_` are one). A name too long keeps a head and a hash.
 */
export function topicPart(name: string): string {
  let out = ''
  for (const ch of name) out += /[A-Za-z0-9-]/.test(ch) ? ch : `_${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(2, '0')}`
  if (out.length <= MAX_NAME) return out
  let hash = 0x811c9dc5
  for (const ch of name) hash = Math.imul(hash ^ ch.codePointAt(0)!, 0x01000193) >>> 0
  let second = 0x1234567
  for (const ch of name) second = Math.imul(second ^ ch.codePointAt(0)!, 0x5bd1e995) >>> 0
  return `${out.slice(0, MAX_NAME - 17)}-${hash.toString(16).padStart(8, '0')}${second.toString(16).padStart(8, '0')}`
}

/** Room for a channel's part in a topic name (Kafka allows 249, and a prefix comes first). */
const MAX_NAME = 200

/** Markers of `latest` subscribes (and group starts) not answered yet, by cluster and topic. */
const markers = new Markers()

export class KafkaDriver implements Driver {
  private admin: Admin | undefined
  /** The idempotent producer and its produces. */
  private produces: KafkaProduces | undefined
  /** A client that never joins a group: offsets and metadata for mirrors and markers. */
  private reader: Consumer<Buffer, Buffer, Buffer, Buffer> | undefined
  private closed = false
  private readonly queue: PendingWrite[] = []
  private inFlight = false
  /**
   * The writes being produced, one produce at a time. One sent whose answer never came (the
   * connection failed, the broker went) may be stored by the broker: it is sent again exactly as
   * it was (the same records, in the same order, so the same sequence numbers cover the same
   * batch) before anything later: the broker then stores it once, or answers that it has it. A
   * different batch under those sequence numbers would be refused as out of order if longer, and,
   * if of the same size, taken for a copy of the stored one and dropped while answered as written.
   */
  private round: Round | undefined
  private readonly writes = new Writes(markers, (r) => this.topicKeyOf(r))
  /** Entries whose reply was answered with an error in its place (see `answerOversized`). */
  private readonly errorReplies = new WeakSet<Entry>()
  /** Groups from 'latest' being made, which publishes wait for. */
  private readonly starts = new GroupStarts(markers)
  private readonly kept = new Map<string, BrokerRetention>()
  /** Each channel topic's next place in its round robin over partitions (replies' topics have one partition). */
  private readonly slots = new Map<string, number>()
  /** Each channel's topic name (`topicOf`). */
  private readonly topicNames = new Map<string, string>()
  /** Topics known to exist (made by this process, or found made). */
  private readonly topics = new Map<string, Promise<void>>()
  /** Trims by count or age in flight per topic, and whether another is due after it. */
  private readonly trimming = new Map<string, boolean>()
  private readonly mirrors = new Map<number, KafkaMirror>()
  private readonly groups = new Map<number, KafkaGroupReader>()
  private readonly clusterKey: string
  private readingStopped = false
  /** This process's reply topic and its reader, once a request was sent. */
  private replies: ReplyReader | undefined
  private listening: Promise<void> | undefined
  /** Reply topics made here, and those found to exist (a reply to a topic that is gone is dropped). */
  private readonly replyTopics = new Map<string, Promise<void>>()
  private readonly replyFound = new Set<string>()

  constructor(
    readonly kafka: KafkaModule,
    readonly config: CheckedKafkaOptions,
    readonly sink: DriverSink,
    readonly transport: string,
  ) {
    this.clusterKey = serversKey(config.brokers, 9092)
    this.signing = config.signing === undefined ? undefined : new Signing(config.signing, (r) => sink.refused?.(r))
    // A signature header: its key, then `<key id>:<signed ms>:<64 hex digits>` (ms counted at 16 digits).
    this.signatureBytes = config.signing === undefined ? [] : [SIGNATURE.length, Buffer.byteLength(config.signing.sign) + 2 + 16 + 64]
  }

  /** The sizes of a signature header's key and value, at most (none unsigned). */
  private readonly signatureBytes: readonly number[]

  /** @internal The transport's signing (undefined: records go unsigned and nothing is checked). */
  readonly signing: Signing | undefined

  /** A signed record's signature header, as written now (records are signed at each attempt). */
  private signatureHeader(record: Egress): [Buffer, Buffer] | undefined {
    return this.signing === undefined ? undefined : [Buffer.from(SIGNATURE), Buffer.from(this.signing.sign(record), 'latin1')]
  }

  /** The options every client of this driver is made with. */
  clientOptions(): Record<string, unknown> {
    const { brokers, clientId, tls, sasl, connectTimeoutMs } = this.config
    return {
      clientId,
      bootstrapBrokers: [...brokers],
      connectTimeout: connectTimeoutMs,
      // Writes are retried here until publishTimeoutMs; the client tries a little on its own too.
      retries: 2,
      retryDelay: RETRY_MS,
      // Node's tls.connect settings, as given.
      ...(tls === undefined || tls === false ? {} : { tls: { ...tls } }),
      ...(sasl === undefined ? {} : { sasl: { mechanism: sasl.mechanism, username: sasl.username, password: sasl.password } }),
    }
  }

  /** The topic of `channel`, made once: every record written asks for it (topicPart's pass was 6% of a publish). */
  topicOf(channel: string): string {
    let topic = this.topicNames.get(channel)
    if (topic === undefined) {
      topic = `${this.config.prefix}-ch-${topicPart(channel)}`
      this.topicNames.set(channel, topic)
    }
    return topic
  }

  /** The topic replies to reply address `address` go to. */
  replyTopicOf(address: string): string {
    return `${this.config.prefix}-reply-${topicPart(address)}`
  }

  /** The consumer group id of `group`: one per channel and group name. */
  groupIdOf(group: GroupRef): string {
    return `${this.config.prefix}-g-${topicPart(group.channel)}-${topicPart(group.name)}`
  }

  async connect(): Promise<void> {
    const { connectTimeoutMs } = this.config
    const admin = new this.kafka.Admin(this.clientOptions() as never)
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await Promise.race([
        admin.metadata({ topics: [] }),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within connectTimeoutMs (${connectTimeoutMs} ms)`)), connectTimeoutMs)
        }),
      ])
      this.admin = admin
      this.produces = new KafkaProduces(this.kafka, this.makeProducer())
      this.reader = new this.kafka.Consumer({
        ...(this.clientOptions() as object),
        groupId: `${this.config.prefix}-reader`,
        isolationLevel: this.kafka.FetchIsolationLevels.READ_UNCOMMITTED,
      } as never)
    } catch (error) {
      void admin.close().catch(() => {})
      throw this.connectError(error)
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * An idempotent producer: a new one has a new producer id from its first produce on. Its
   * requests wait for an answer a third of publishTimeoutMs (1 to 30 s; the client's own default
   * is 30 s, as long as the default publishTimeoutMs), so a produce to a broker that is frozen,
   * not gone, is sent again (as it was) before its publishes expire, and reaches a new leader
   * once the metadata names one.
   */
  private makeProducer(): Producer<Buffer, Buffer, Buffer, Buffer> {
    return new this.kafka.Producer({
      ...(this.clientOptions() as object),
      requestTimeout: producerRequestTimeout(this.config.publishTimeoutMs),
      idempotent: true,
      acks: this.kafka.ProduceAcks.ALL,
      autocreateTopics: false,
    } as never)
  }

  /**
   * Replaces the producer with a new one (a new producer id): what the next produce carries can
   * never be read by the broker against a batch of the old one. Called between produces only.
   */
  private renewProducer(): void {
    if (this.closed) return
    closeClient(this.produces?.producer)
    this.produces = new KafkaProduces(this.kafka, this.makeProducer())
  }

  private connectError(error: unknown): OrreryError {
    const message = error instanceof Error ? error.message : String(error)
    const where = `kafka transport ${this.transport}`
    const ids = protocolIds(error)
    if (error instanceof this.kafka.AuthenticationError || ids.includes('SASL_AUTHENTICATION_FAILED') || ids.includes('ILLEGAL_SASL_STATE'))
      return transportError('TRANSPORT_AUTH', `${where} refused the credentials: ${message}`, { cause: error, details: { transport: this.transport } })
    // A listener that asks for SASL or TLS closes the connection of a client that has neither.
    const hint =
      closedByBroker(error) && this.config.sasl === undefined && !this.config.tls
        ? ' (the broker closed every connection it accepted: a listener that asks for SASL credentials or TLS does that to a client without them; see the `sasl` and `tls` options)'
        : ''
    return transportError('TRANSPORT_UNAVAILABLE', `${where} is unreachable at ${this.config.brokers.join(', ')}: ${message}${hint}`, {
      cause: error,
      details: { transport: this.transport },
    })
  }

  // --- topics ---------------------------------------------------------------------------------

  /** Topic configs this process asks of `channel`'s topic: the broker's clock for times, and its retention. */
  private topicConfigs(channel: string): Array<{ name: string; value: string }> {
    const configs = [{ name: 'message.timestamp.type', value: 'LogAppendTime' }]
    const maxAge = this.kept.get(channel)?.maxAgeMs
    if (maxAge !== undefined) configs.push({ name: 'retention.ms', value: String(Math.max(1, Math.ceil(maxAge))) })
    return configs
  }

  /** @internal The id Kafka gave `channel`'s topic now; a topic found gone is made again first. */
  async topicId(channel: string): Promise<string> {
    const topic = this.topicOf(channel)
    const layout = await this.layoutRemade(topic, () => {
      this.forgetTopic(topic)
      return this.ensureTopic(channel)
    })
    return layout.id
  }

  /** Makes `channel`'s topic if it does not exist (once per process; a failure is tried again next time). */
  ensureTopic(channel: string): Promise<void> {
    let made = this.topics.get(channel)
    if (made === undefined) {
      made = this.createTopic(channel)
      this.topics.set(channel, made)
      made.catch(() => {
        if (this.topics.get(channel) === made) this.topics.delete(channel)
      })
    }
    return made
  }

  /**
   * @internal Whether `error` says a topic does not exist: the client's metadata lookup found none (a
   * UserError whose message it writes as `Unknown topic <name>.`), or the broker answered so.
   */
  topicGone(error: unknown): boolean {
    // `layout`'s own refusal: the metadata named no such topic.
    if (error instanceof OrreryError) return error.code === 'TRANSPORT_UNAVAILABLE' && typeof error.details['topic'] === 'string'
    return protocolIds(error).includes('UNKNOWN_TOPIC_OR_PARTITION') || (error instanceof this.kafka.UserError && goneTopicName(error) !== undefined)
  }

  /** The topic `topic` is gone: its channel's is made again by the next `ensureTopic`. */
  private forgetTopic(topic: string): void {
    for (const channel of this.topics.keys()) if (this.topicOf(channel) === topic) this.topics.delete(channel)
  }

  private async createTopic(channel: string): Promise<void> {
    const admin = this.adminOf()
    const topic = this.topicOf(channel)
    try {
      await admin.createTopics({ topics: [topic], partitions: this.config.partitions, replicas: -1, configs: this.topicConfigs(channel) })
    } catch (error) {
      if (!protocolIds(error).includes('TOPIC_ALREADY_EXISTS')) throw error
      // Made by another process (or before): this process's retention, if any, is set on it.
      if (this.kept.has(channel)) await this.alterTopic(channel)
    }
  }

  /** @internal Makes a reply topic (once): one partition, records kept a minute. */
  ensureReplyTopic(topic: string): Promise<void> {
    let made = this.replyTopics.get(topic)
    if (made === undefined) {
      made = this.adminOf()
        .createTopics({ topics: [topic], partitions: 1, replicas: -1, configs: [{ name: 'retention.ms', value: '60000' }] })
        .then(
          () => {},
          (error: unknown) => {
            if (!protocolIds(error).includes('TOPIC_ALREADY_EXISTS')) throw error
          },
        )
      this.replyTopics.set(topic, made)
      made.then(
        () => this.replyFound.add(topic),
        () => {
          if (this.replyTopics.get(topic) === made) this.replyTopics.delete(topic)
        },
      )
    }
    return made
  }

  /** @internal This process's reply topic is gone (the broker came back without its data): the next `ensureReplyTopic` makes it again. */
  forgetReplyTopic(topic: string): void {
    this.replyTopics.delete(topic)
    this.replyFound.delete(topic)
  }

  /** Whether a reply topic exists (its requester listens there, or did): a reply to one that is gone is dropped. */
  private async replyTopicExists(topic: string): Promise<boolean> {
    if (this.replyFound.has(topic)) return true
    try {
      const meta = await this.readerOf().metadata({ topics: [topic], forceUpdate: true })
      if (!meta.topics.has(topic)) return false
    } catch (error) {
      if (protocolIds(error).includes('UNKNOWN_TOPIC_OR_PARTITION') || error instanceof this.kafka.UserError) return false
      throw error
    }
    this.replyFound.add(topic)
    return true
  }

  private async alterTopic(channel: string): Promise<void> {
    const configs = this.topicConfigs(channel).filter((c) => c.name !== 'message.timestamp.type')
    if (configs.length === 0) return
    await this.adminOf().incrementalAlterConfigs({
      resources: [
        {
          resourceType: this.kafka.ConfigResourceTypes.TOPIC,
          resourceName: this.topicOf(channel),
          configs: configs.map((c) => ({ name: c.name, value: c.value, configOperation: this.kafka.IncrementalAlterConfigOperationTypes.SET })),
        },
      ],
    } as never)
  }

  retention(channel: string, retention: BrokerRetention): void {
    this.kept.set(channel, retention)
    if (this.closed || this.admin === undefined) return
    const known = this.topics.get(channel)
    if (known === undefined) return
    void known
      .then(() => this.alterTopic(channel))
      .then(() => this.trimSoon(channel))
      .catch((error: unknown) => this.sink.failed(error))
  }

  /**
   * Trims `channel`'s topic to its retention by count and age (DeleteRecords moves each
   * partition's start past what is to go; Kafka's own `retention.ms` only drops whole segments).
   * One trim at a time per topic, another after it when writes came meanwhile.
   */
  private trimSoon(channel: string): void {
    const keep = this.kept.get(channel)
    const limited = (n: number | undefined) => n !== undefined && n > 0 && Number.isFinite(n)
    if (keep === undefined || (!limited(keep.maxCount) && !limited(keep.maxAgeMs))) return
    if (this.trimming.has(channel)) {
      this.trimming.set(channel, true)
      return
    }
    this.trimming.set(channel, false)
    const topic = this.topicOf(channel)
    void (async () => {
      const ends = await this.offsets(topic, -1n)
      const cut = new Map<number, bigint>()
      if (limited(keep.maxCount)) for (const [p, end] of ends) cut.set(p, end - BigInt(keep.maxCount!))
      if (limited(keep.maxAgeMs)) {
        const since = await this.offsets(topic, BigInt(Date.now() - Math.ceil(keep.maxAgeMs!)))
        for (const [p, at] of since) {
          const upTo = at < 0n ? ends.get(p)! : at
          cut.set(p, (cut.get(p) ?? 0n) > upTo ? cut.get(p)! : upTo)
        }
      }
      const partitions = [...cut].filter(([, offset]) => offset > 0n).map(([partition, offset]) => ({ partition, offset }))
      if (partitions.length > 0) await this.adminOf().deleteRecords({ topics: [{ name: topic, partitions }] })
    })()
      .catch((error: unknown) => {
        if (!this.closed) this.sink.failed(error)
      })
      .finally(() => {
        const again = this.trimming.get(channel)
        this.trimming.delete(channel)
        if (again && !this.closed) this.trimSoon(channel)
      })
  }

  /** Each partition's offset of `topic` at `timestamp` (-1n: the end, -2n: the start); -1n where none is that late. */
  async offsets(topic: string, timestamp: bigint): Promise<Offsets> {
    const listed = await this.readerOf().listOffsets({ topics: [topic], timestamp, isolationLevel: this.kafka.FetchIsolationLevels.READ_UNCOMMITTED })
    const out = new Map<number, bigint>()
    for (const [partition, offset] of (listed.get(topic) ?? []).entries()) out.set(partition, offset)
    return out
  }

  /** The topic's id and each partition's leader (fresh metadata). */
  async layout(topic: string): Promise<TopicLayout> {
    const meta = await this.readerOf().metadata({ topics: [topic], forceUpdate: true })
    const t = meta.topics.get(topic)
    if (t === undefined)
      throw new OrreryError('TRANSPORT_UNAVAILABLE', `kafka transport ${this.transport} has no topic ${topic}`, {
        details: { transport: this.transport, topic },
      })
    return { id: t.id, leaders: t.partitions.map((p) => p.leader) }
  }

  /**
   * @internal `call` (a look at `channel`'s topic: its layout, its offsets), asked again until it
   * is answered, as a Redis read is: the client tries twice on its own and then fails while the
   * broker is unreachable. A topic found gone is made again by the next `ensureTopic`. A refusal
   * (an ACL, a bad request), an error not the client's, this transport's close, or `stopped`
   * ends it with that error.
   */
  answered<T>(channel: string, call: () => Promise<T>, stopped: () => boolean): Promise<T> {
    return askUntilAnswered(
      {
        closed: () => this.closed,
        // The client says nothing of its connections: every failed look is counted toward the report.
        connected: () => true,
        passing: (error) => this.isPassing(error),
        mended: (error) => {
          if (!this.topicGone(error)) return false
          this.forgetTopic(this.topicOf(channel))
          return true
        },
        reportAfterMs: this.config.connectTimeoutMs,
        report: (error) => this.sink.failed(error),
      },
      call,
      stopped,
    )
  }

  /**
   * Whether `error` is the client's and may pass: not a refusal, not a misuse, not credentials or
   * a permission the broker refuses (anywhere in its causes).
   */
  private isPassing(error: unknown): boolean {
    const code = (error as { code?: unknown } | null)?.code
    if (typeof code !== 'string' || !code.startsWith('PLT_KFK_') || error instanceof this.kafka.UserError) return false
    for (let e: unknown = error; e instanceof Error; e = e.cause) if (e instanceof this.kafka.AuthenticationError) return false
    return !protocolIds(error).some((id) => REFUSALS.has(id) || NOT_ALLOWED.test(id))
  }

  /** @internal `topic`'s layout; a topic found gone is made again by `remake`, then looked up once more. */
  async layoutRemade(topic: string, remake: () => Promise<void>): Promise<TopicLayout> {
    try {
      return await this.layout(topic)
    } catch (error) {
      if (!this.topicGone(error)) throw error
    }
    await remake()
    return this.layout(topic)
  }

  private adminOf(): Admin {
    if (this.admin === undefined || this.closed)
      throw transportError('CLOSED', `transport ${this.transport} is closed`, { details: { transport: this.transport } })
    return this.admin
  }

  /** @internal */
  readerOf(): Consumer<Buffer, Buffer, Buffer, Buffer> {
    if (this.reader === undefined || this.closed)
      throw transportError('CLOSED', `transport ${this.transport} is closed`, { details: { transport: this.transport } })
    return this.reader
  }

  /** @internal */
  get isClosed(): boolean {
    return this.closed
  }

  // --- writes ---------------------------------------------------------------------------------

  refusal(channel: string, frameBytes: number): OrreryError | undefined {
    if (frameBytes <= REQUEST_BYTES - REQUEST_HEADROOM) return undefined
    return new OrreryError(
      'MESSAGE_TOO_LARGE',
      `a message to channel ${channel} is ${frameBytes} bytes, more than kafka transport ${this.transport} can send in one request ` +
        `(a broker reads at most ${REQUEST_BYTES} bytes, socket.request.max.bytes, unless it is set otherwise)`,
      { details: { transport: this.transport, channel, bytes: frameBytes, limit: REQUEST_BYTES - REQUEST_HEADROOM } },
    )
  }

  write(records: readonly Egress[]): Promise<number> {
    if (this.closed) return Promise.reject(transportError('CLOSED', 'this Orrery is closed', { details: { transport: this.transport } }))
    let sent: readonly Egress[] = records
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!
      if (!('frame' in r)) continue
      const refusal = this.refusal(r.kind === 'dead' ? r.deadLetter : r.channel, r.frame.length)
      if (refusal === undefined) continue
      if (r.kind !== 'reply') return Promise.reject(refusal)
      // A reply no broker would read: its requester gets the refusal at once, in its place.
      const fitted = sent === records ? records.slice() : (sent as Egress[])
      fitted[i] = { ...r, frame: errorReply(r.frame, refusal) }
      sent = fitted
      this.sink.failed(refusal)
    }
    const { write, written } = this.writes.add(sent, this.config.publishTimeoutMs, () =>
      transportError(
        'TRANSPORT_UNAVAILABLE',
        `kafka transport ${this.transport} did not take the write within publishTimeoutMs (${this.config.publishTimeoutMs} ms)`,
        { details: { transport: this.transport } },
      ),
    )
    markers.hold(write, this.topicKeyOf)
    this.queue.push(write)
    this.pump()
    return written
  }

  /** The key of the markers a record waits for (see `Markers`): its topic's, for what is stored in one. */
  private readonly topicKeyOf = (r: Egress): string | undefined =>
    r.kind === 'publish' || r.kind === 'request' ? this.markerKey(r.channel) : r.kind === 'dead' ? this.markerKey(r.deadLetter) : undefined

  private markerKey(channel: string): string {
    return `${this.clusterKey}\u0000${this.topicOf(channel)}`
  }

  /**
   * Sends the queued writes, in order (one partition keeps it), in produces under PRODUCE_BYTES
   * each, one after another; then settles what the records settle (acks, releases, dead letters'
   * acks). A produce that did not come back is sent again unchanged (see `round`), before
   * anything later; one the broker refused fails its writes, and the next goes on.
   */
  private pump(): void {
    if (this.inFlight || this.closed) return
    let round = this.round
    if (round?.unanswered && round.produces![round.next]!.entries.every((e) => e.write.settled)) {
      // Each of its writes ended at its publishTimeoutMs: it is not sent again, and the producer
      // is made anew so that what comes next is not taken for it (see `round`).
      round.unanswered = false
      round.next++
      this.renewProducer()
    }
    if (round?.produces !== undefined && round.next >= round.produces.length) {
      this.finish(round)
      round = this.round = undefined
    }
    if (round === undefined) {
      if (this.queue.length === 0) return
      round = this.round = {
        // Up to the first write still held by a marker (or that one alone, which waits for it).
        batch: this.queue.splice(0, Math.max(1, sendable(this.queue))),
        produces: undefined,
        last: new Map(),
        settledTo: 0,
        channels: new Set(),
        next: 0,
        unanswered: false,
        remake: false,
      }
    }
    this.inFlight = true
    for (const write of round.batch) write.sent = true
    const sending = round
    void this.send(sending).then(
      () => {
        this.inFlight = false
        sending.unanswered = false
        sending.next++
        this.settleUpTo(sending)
        this.pump()
      },
      (error: unknown) => {
        this.inFlight = false
        const ids = protocolIds(error)
        const refused = ids.find((id) => REFUSALS.has(id))
        if (sending.produces === undefined) {
          // Not produced at all (its topics could not be made): its writes go back, first in line.
          this.round = undefined
          if (refused !== undefined || error instanceof this.kafka.UserError)
            for (const write of sending.batch) this.writes.fail(write, this.refused(write, error, refused))
          else this.queue.unshift(...sending.batch.filter((w) => !w.settled))
          if (!this.closed) setTimeout(() => this.pump(), RETRY_MS)
          return
        }
        if (this.topicGone(error)) {
          const produce = sending.produces[sending.next]!
          // The topic the client names, if it is one of this produce's (it may say `unknown`).
          const said = goneTopicName(error)
          const named = produce.entries.some((e) => e.topic === said) ? said : undefined
          const replies = produce.entries.filter((e) => e.record.kind === 'reply' && (named === undefined || e.topic === named))
          if (named !== undefined && replies.length > 0) {
            // A reply topic is its requester's: one gone means the requester is, and a reply to it
            // is dropped (as one found gone before the produce is). The rest goes as it was.
            this.replyFound.delete(named)
            produce.entries = produce.entries.filter((e) => e.topic !== named)
            if (!this.closed) setTimeout(() => this.pump(), RETRY_MS)
            return
          }
          if (replies.length === 0) {
            // Its topic was deleted, or the broker came back without its data: made again, then the
            // produce is sent again (nothing of it was stored).
            for (const e of produce.entries) if (named === undefined || e.topic === named) this.forgetTopic(e.topic)
            sending.remake = true
            // A broker that lost its data hands out producer ids from the start again: another
            // process may get this one's, and a batch of one be taken for a copy of the other's.
            this.renewProducer()
            if (!this.closed) setTimeout(() => this.pump(), RETRY_MS)
            return
          }
          // Some topic of a produce with replies, the broker not saying which: it fails as a refusal;
          // its reply topics are looked up again before the next reply to them.
          for (const e of replies) this.replyFound.delete(e.topic)
        }
        if (refused !== undefined || error instanceof this.kafka.UserError) {
          // What was refused was not stored, and its sequence numbers were not used: its writes
          // fail. The partitions that refused say which records (none named: all of them).
          const produce = sending.produces[sending.next]!
          const named = produce.refused !== undefined && produce.refused.size > 0 ? produce.refused : undefined
          const answered = this.answerOversized(produce, named, refused, error)
          // Each write fails naming the channels of its records that were refused.
          const failing = new Map<PendingWrite, { id: string | undefined; channels: Set<string> }>()
          for (const e of produce.entries) {
            if ((named !== undefined && !named.has(e)) || e === answered) continue
            const f = failing.get(e.write) ?? { id: named?.get(e) ?? refused, channels: new Set<string>() }
            f.channels.add(e.record.kind === 'dead' ? e.record.deadLetter : e.record.channel)
            failing.set(e.write, f)
          }
          for (const [write, f] of failing) this.writes.fail(write, this.refused(write, error, f.id, f.channels))
          produce.refused = undefined
          if (answered !== undefined || (named !== undefined && produce.entries.some((e) => !named.has(e)))) {
            // The rest was neither stored nor refused (another partition's or broker's answer, or
            // none): it may be stored, so it goes again as it was, before anything later, with the
            // error replies in place of the replies refused.
            produce.entries = produce.entries.filter((e) => e === answered || (named !== undefined && !named.has(e)))
            if (ids.some((id) => IDENTITY_LOST.has(id))) this.renewProducer()
            if (!this.closed) setTimeout(() => this.pump(), RETRY_MS)
            return
          }
          sending.unanswered = false
          sending.next++
          this.settleUpTo(sending)
          this.pump()
          return
        }
        // Sent again from a new producer: stored once more if the broker had it (at least once).
        if (ids.some((id) => IDENTITY_LOST.has(id))) this.renewProducer()
        if (!this.closed) setTimeout(() => this.pump(), RETRY_MS)
      },
    )
  }

  /**
   * A reply of `produce` refused as over the topic's limit becomes an error reply, which goes in
   * its place, so that the requester fails at once with the refusal (`HANDLER_ERROR`,
   * `details.remoteCode` `MESSAGE_TOO_LARGE`, as on NATS) rather than waiting out its timeout;
   * the refusal is reported too. The entry changed so, if any.
   */
  private answerOversized(produce: Produce, named: ReadonlyMap<Entry, string> | undefined, refused: string | undefined, error: unknown): Entry | undefined {
    // Only a reply refused alone is known to be the one too large (a record over PRODUCE_BYTES
    // always goes alone); one refused with others fails as they do. An error reply refused in
    // its turn fails too, rather than being answered again.
    const refusedOnes = named === undefined ? produce.entries : [...named.keys()]
    const e = refusedOnes.length === 1 ? refusedOnes[0]! : undefined
    if (e === undefined || e.record.kind !== 'reply' || this.errorReplies.has(e)) return undefined
    const id = named?.get(e) ?? refused
    if (!tooLarge(id)) return undefined
    const why = this.refused(e.write, error, id, new Set([e.record.channel]))
    e.record = { ...e.record, frame: errorReply(e.record.frame, why) }
    this.errorReplies.add(e)
    this.sink.failed(why)
    return e
  }

  /**
   * Settles, in order, the writes of `round` whose records are all in the produces answered so
   * far: a write waits for every write before it (an ack made after a publish is not committed
   * before the publish is written).
   */
  private settleUpTo(round: Round): void {
    while (round.settledTo < round.batch.length) {
      const write = round.batch[round.settledTo]!
      if (!write.settled) {
        if ((round.last.get(write) ?? -1) >= round.next) return
        this.settleGroups(write.records)
        this.writes.succeed(write)
      }
      round.settledTo++
    }
  }

  /** Every produce of `round` answered (or left): its writes not settled yet are written. */
  private finish(round: Round): void {
    round.next = Math.max(round.next, round.produces?.length ?? 0)
    this.settleUpTo(round)
  }

  /** The error of `write` refused by the broker (`id`, if it named one), naming `channels` (all the write's if not given). */
  private refused(write: PendingWrite, error: unknown, id: string | undefined, channels?: ReadonlySet<string>): OrreryError {
    const message = error instanceof Error ? error.message : String(error)
    const named = channels ?? new Set(write.records.map((r) => ('channel' in r ? r.channel : r.group.channel)))
    const channel = [...named].join(', ')
    if (tooLarge(id)) {
      // The largest message of the write to those channels (its frame: the record's headers come on top).
      let bytes = 0
      for (const r of write.records) if ('frame' in r && named.has(r.kind === 'dead' ? r.deadLetter : r.channel)) bytes = Math.max(bytes, r.frame.byteLength)
      return new OrreryError(
        'MESSAGE_TOO_LARGE',
        `a message to channel ${channel} (${bytes} bytes) is over the limit of kafka transport ${this.transport} (the topic's max.message.bytes, 1 MB unless the broker is set otherwise)`,
        { cause: error, details: { transport: this.transport, channel, bytes } },
      )
    }
    return transportError('TRANSPORT_UNAVAILABLE', `kafka transport ${this.transport} refused a write: ${message}`, {
      cause: error,
      details: { transport: this.transport, channel },
    })
  }

  /**
   * Sends `round`'s next produce: the first time, its records are found (publishes, requests,
   * dead letters, replies to a live reply topic) and cut into produces, after the markers of its
   * topics; a produce sent again goes as it was, signed anew.
   */
  private async send(round: Round): Promise<void> {
    if (round.produces === undefined) {
      const entries = await this.entriesOf(round.batch, round.channels)
      // Publishes made after a marker wait for it (see `Markers.hold`).
      const held = heldBy(round.batch)
      await Promise.all([...round.channels].map((c) => this.ensureTopic(c)))
      if (held !== undefined) await held
      round.produces = cut(entries, round.last)
    }
    const produce = round.produces[round.next]
    if (produce === undefined) return
    // What a partition refused at the last attempt was failed then: it says nothing of this one.
    produce.refused = undefined
    if (!round.unanswered) produce.entries = produce.entries.filter((e) => !e.write.settled)
    if (produce.entries.length === 0) return
    if (round.remake) {
      // A topic found gone is made again first (a resolved promise for the others); a failure
      // leaves the flag set, for the next try.
      await Promise.all([...round.channels].map((c) => this.ensureTopic(c)))
      round.remake = false
    }
    const produces = this.produces
    if (produces === undefined || this.closed) throw transportError('CLOSED', 'this Orrery is closed')
    const messages = produce.entries.map((e) => this.messageOf(e))
    // From here the broker may store it whatever the answer: until answered, it is what goes next.
    round.unanswered = true
    try {
      await produces.send(messages)
    } catch (error) {
      // What the broker stored is not sent again (its partitions' sequence numbers moved on).
      produce.entries = messages.filter((m) => m.stored !== true).map((m) => m.entry)
      produce.refused = new Map(messages.flatMap((m) => (m.answer !== undefined && REFUSALS.has(m.answer) ? [[m.entry, m.answer] as const] : [])))
      throw error
    }
    for (const channel of round.channels) this.trimSoon(channel)
  }

  /** The records of `batch`'s open writes with their topics (a reply to a requester that is gone is dropped); their channels go in `channels`. */
  private async entriesOf(batch: readonly PendingWrite[], channels: Set<string>): Promise<Entry[]> {
    const entries: Entry[] = []
    // Replies go to their requester's topic while it exists; one whose requester is gone is dropped.
    const replyTopics = new Set<string>()
    for (const write of batch) if (!write.settled) for (const r of write.records) if (r.kind === 'reply') replyTopics.add(this.replyTopicOf(r.address))
    const live = new Set<string>()
    await Promise.all(
      [...replyTopics].map(async (t) => {
        if (await this.replyTopicExists(t)) live.add(t)
      }),
    )
    for (const write of batch) {
      if (write.settled) continue
      for (const r of write.records) {
        if (r.kind === 'reply') {
          const topic = this.replyTopicOf(r.address)
          if (live.has(topic)) entries.push({ record: r, topic, place: { slot: 0 }, write, bytes: this.bytesOf(r) })
          continue
        }
        if (r.kind !== 'publish' && r.kind !== 'request' && r.kind !== 'dead') continue
        const channel = r.kind === 'dead' ? r.deadLetter : r.channel
        channels.add(channel)
        const topic = this.topicOf(channel)
        const slot = this.slots.get(topic) ?? 0
        this.slots.set(topic, slot + 1 === Number.MAX_SAFE_INTEGER ? 0 : slot + 1)
        entries.push({ record: r, topic, place: { slot }, write, bytes: this.bytesOf(r) })
      }
    }
    return entries
  }

  /** A record's size in a record batch, at most, with the headers `messageOf` gives it. */
  private bytesOf(r: Entry['record']): number {
    const headers = r.kind === 'request' ? [REPLY_TO.length, Buffer.byteLength(r.replyTo), TIMEOUT.length, String(r.timeoutMs).length] : []
    return recordBytes(r.frame.byteLength, [...headers, ...this.signatureBytes])
  }
  /** A record as it is produced: its frame, its route if a request, its signature (made now). */
  private messageOf(entry: Entry): Outgoing & { readonly entry: Entry } {
    const { record: r, topic, place } = entry
    const signature = this.signatureHeader(r)
    let headers: Array<[Buffer, Buffer]> | undefined
    if (r.kind === 'request')
      headers = [
        [Buffer.from(REPLY_TO), Buffer.from(r.replyTo)],
        [Buffer.from(TIMEOUT), Buffer.from(String(r.timeoutMs))],
      ]
    if (signature !== undefined) headers = [...(headers ?? []), signature]
    return { topic, place, value: r.frame, headers, entry }
  }

  /** Acks, releases and dead letters (once their record is written) go to their group's reader. */
  private settleGroups(records: readonly Egress[]): void {
    for (const r of records) {
      if (r.kind !== 'ack' && r.kind !== 'release' && r.kind !== 'dead') continue
      const reader = this.groups.get(r.group.id)
      if (reader === undefined) continue
      if (r.kind === 'release') reader.release(r.position, this.readingStopped ? undefined : r.delayMs)
      else reader.ack(r.position)
    }
  }

  stopping(): void {
    this.writes.watch()
  }

  async flushed(): Promise<void> {
    await this.writes.settled()
    await Promise.all([...this.groups.values()].map((g) => g.committed()))
    // The end of a shutdown: each group's consumer leaves, so its partitions go to another process
    // at once, and this process's reply topic goes (nobody will read it again).
    if (this.readingStopped) {
      await Promise.all([...this.groups.values()].map((g) => g.leave()))
      const replies = this.replies
      this.replies = undefined
      if (replies !== undefined) {
        replies.stop()
        await this.adminOf()
          .deleteTopics({ topics: [replies.topic] })
          .catch(() => {})
      }
    }
    const lost = this.writes.lost()
    if (lost !== undefined) throw lost
  }

  // --- readers --------------------------------------------------------------------------------

  openMirror(channel: ChannelRef, bound: HistoryBound): Promise<void> {
    const existing = this.mirrors.get(channel.id)
    if (existing) return existing.ready
    const mirror = new KafkaMirror(this, channel, bound)
    this.mirrors.set(channel.id, mirror)
    // A mirror whose history could not be read is forgotten: the next subscriber opens it anew.
    mirror.ready.catch(() => {
      if (this.mirrors.get(channel.id) === mirror) this.mirrors.delete(channel.id)
      mirror.stop()
    })
    return mirror.ready
  }

  catchUp(channel: ChannelRef, start: () => void, failed: (error: unknown) => void): () => void {
    const mirror = this.mirrors.get(channel.id)
    if (mirror === undefined) throw new OrreryError('INTERNAL', `no mirror of ${channel.name} to catch up with`)
    const topic = this.topicOf(channel.name)
    // The end of each partition as the broker sees it once the publishes this process made to it
    // before this call are written (they land before it). Publishes of this process made after
    // this call wait for the answer (see `markers`), so they land after it. Asked again while the
    // broker is unreachable, as the mirror's reads are (the subscriber starts once it is answered).
    const key = this.markerKey(channel.name)
    const earlier = markers.earlier(key) ?? Promise.resolve()
    return catchUpWith(
      // Asked after the mirror's first look and the marker before (see `KafkaMirror.marker`).
      (cancelled) =>
        mirror.marker(
          () =>
            earlier.then(() =>
              this.answered(
                channel.name,
                () => this.ensureTopic(channel.name).then(() => this.offsets(topic, -1n)),
                () => cancelled() || mirror.isStopped,
              ),
            ),
          cancelled,
        ),
      (marker) => markers.add(key, marker),
      (marker) => mirror.catchUp(marker, start, failed),
    )
  }

  async openGroup(group: GroupRef): Promise<void> {
    if (this.groups.has(group.id)) return
    const reader = new KafkaGroupReader(this, group)
    this.groups.set(group.id, reader)
    // Closed meanwhile (deleted, or its bus stopping): not made (see `GroupStarts`).
    const gone = () => this.closed || this.groups.get(group.id) !== reader
    const made = this.starts.make(group, this.markerKey(group.channel), () => this.ensureTopic(group.channel).then(() => reader.prepare()), gone)
    try {
      await made
    } catch (error) {
      const quiet = gone()
      if (this.groups.get(group.id) === reader) this.groups.delete(group.id)
      if (quiet) return
      throw error
    }
    if (this.groups.get(group.id) === reader) reader.wake()
  }

  openReplies(address: string): Promise<void> {
    if (this.listening === undefined) {
      const reader = new ReplyReader(this, this.replyTopicOf(address), address)
      this.replies = reader
      this.listening = reader.open().catch((error: unknown) => {
        reader.stop()
        if (this.replies === reader) this.replies = undefined
        this.listening = undefined
        throw error
      })
    }
    return this.listening
  }

  closeGroup(group: number): void {
    const reader = this.groups.get(group)
    this.groups.delete(group)
    this.starts.drop(group)
    void reader?.leave()
  }

  wake(): void {
    for (const reader of this.groups.values()) reader.wake()
    for (const mirror of this.mirrors.values()) mirror.wake()
  }

  /** Groups' streams pause (their room is 0 from now on); each consumer goes on committing and leaves its group once this process holds nothing of it. */
  drain(): void {
    for (const reader of this.groups.values()) reader.drain()
  }

  /** A release on its way to its reader (behind the writes before it), or a released record due to members here. */
  holding(): boolean {
    if (this.writes.holds((r) => r.kind === 'release')) return true
    for (const reader of this.groups.values()) if (reader.holdsDue()) return true
    return false
  }

  async stopReading(): Promise<void> {
    this.readingStopped = true
    await Promise.all([...this.mirrors.values()].map((m) => m.stopAndWait()))
    await Promise.all([...this.groups.values()].map((g) => g.stopReading()))
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    for (const m of this.mirrors.values()) m.stop()
    for (const g of this.groups.values()) g.close()
    this.replies?.stop()
    this.queue.length = 0
    this.round = undefined
    this.writes.closeAll(() => ({ transport: this.transport }))
    closeClient(this.produces?.producer)
    closeClient(this.reader)
    closeClient(this.admin as { close(): unknown } | undefined, false)
    this.produces = undefined
    this.reader = undefined
    this.admin = undefined
  }
}
