/**
 * Kafka produce requests written by the driver itself: each partition's records encoded once into
 * one record batch (Kafka's format v2: no key, no compression), sent on the client's connection to
 * the partition's leader, the idempotent producer's sequence numbers kept here. The client's
 * `Producer.send` builds several objects, buffers and map lookups per record before its encoder
 * copies them again: in a profile of a publish run its path was two fifths of the process's time
 * and most of its garbage. The client still does the rest: the producer's identity, metadata,
 * connections (TLS, SASL), request timeouts and reading answers.
 */
import type { Connection, Producer, produceV11 } from '@platformatic/kafka'

import type { KafkaModule } from './kafka.js'

/**
 * Where a record goes in its topic: its place in the topic's round robin, and the partition that
 * place was taken to at its first attempt (modulo the partitions then), kept for every attempt
 * after so that the same sequence numbers always cover the same records.
 */
export interface Place {
  readonly slot: number
  partition?: number
}

/** A record to produce. */
export interface Outgoing {
  readonly topic: string
  readonly place: Place
  readonly value: Uint8Array
  readonly headers: ReadonlyArray<readonly [Uint8Array, Uint8Array]> | undefined
  /** Set once the broker stored it: an attempt again leaves it out. */
  stored?: boolean
  /** The protocol error id its partition was answered with, if it was (not stored then). */
  answer?: string | undefined
}

/** The records of one partition, in order. */
interface PartitionBatch {
  readonly topic: string
  readonly partition: number
  /** The partition's key in the producer's sequence numbers. */
  readonly key: string
  readonly records: Outgoing[]
}

/** How long the broker waits for the in-sync replicas before it answers (the client's default). */
const ACK_TIMEOUT_MS = 5_000
/** acks=all: every in-sync replica has the records before the answer. */
const ACKS_ALL = -1
/** Sequence numbers are 31-bit and wrap to 0 (as Kafka's own producer counts them). */
const SEQUENCE_WRAP = 2 ** 31
/** A record batch's fixed part: base offset (8), length (4), the leader's epoch (4), magic (1), crc (4), then 48 bytes the crc covers. */
const BATCH_HEADER = 61
/** Where the bytes the crc covers begin (the attributes). */
const CRC_FROM = 21

/** The bytes `n` (an unsigned varint, already zigzag-encoded) takes. */
function uvarintBytes(n: number): number {
  let bytes = 1
  while (n >= 0x80) {
    n = Math.floor(n / 0x80)
    bytes++
  }
  return bytes
}

/**
 * A record's size in a record batch, at most: its length, attributes, time and offset deltas
 * (counted at their widest), a null key, its value and headers, each with its length.
 */
export function recordBytes(value: number, headers: readonly number[]): number {
  let body = 1 + 10 + 5 + 1 + uvarintBytes(2 * value) + value + uvarintBytes(headers.length)
  for (const h of headers) body += uvarintBytes(2 * h) + h
  return uvarintBytes(2 * body) + body
}

/** Writes `n` (zigzag-encoded, non-negative, under 2^31) as an unsigned varint at `at`; returns the offset after it. */
function writeUvarint(buffer: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    buffer[at++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  buffer[at++] = n
  return at
}

/** A record's size after its length: attributes, time delta (0), offset delta, null key, value and headers, each length zigzag-encoded. */
function recordBody(r: Outgoing, index: number): number {
  let body = 1 + 1 + uvarintBytes(2 * index) + 1 + uvarintBytes(2 * r.value.byteLength) + r.value.byteLength
  const headers = r.headers ?? []
  body += uvarintBytes(2 * headers.length)
  for (const [k, v] of headers) body += uvarintBytes(2 * k.byteLength) + k.byteLength + uvarintBytes(2 * v.byteLength) + v.byteLength
  return body
}

/**
 * One record batch of `records` (Kafka's record batch v2), every record stamped `timestamp`, from
 * producer `producerId` at `epoch`, its first record sequence number `sequence`.
 */
export function encodeBatch(
  records: readonly Outgoing[],
  identity: { readonly producerId: bigint; readonly epoch: number; readonly sequence: number; readonly timestamp: number },
  crc32c: (data: Uint8Array) => number,
): Buffer {
  const bodies = new Array<number>(records.length)
  let size = BATCH_HEADER
  for (let i = 0; i < records.length; i++) {
    const body = recordBody(records[i]!, i)
    bodies[i] = body
    size += uvarintBytes(2 * body) + body
  }
  const b = Buffer.allocUnsafe(size)
  b.writeBigInt64BE(0n, 0)
  b.writeInt32BE(size - 12, 8)
  // No leader epoch: the broker fills it in.
  b.writeInt32BE(-1, 12)
  b[16] = 2
  b.writeInt16BE(0, 21)
  b.writeInt32BE(records.length - 1, 23)
  const high = Math.floor(identity.timestamp / 2 ** 32)
  const low = identity.timestamp >>> 0
  for (const at of [27, 35]) {
    b.writeUInt32BE(high, at)
    b.writeUInt32BE(low, at + 4)
  }
  b.writeBigInt64BE(identity.producerId, 43)
  b.writeInt16BE(identity.epoch, 51)
  b.writeInt32BE(identity.sequence, 53)
  b.writeInt32BE(records.length, 57)
  let at = BATCH_HEADER
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!
    at = writeUvarint(b, at, 2 * bodies[i]!)
    b[at++] = 0 // attributes
    b[at++] = 0 // time delta
    at = writeUvarint(b, at, 2 * i)
    b[at++] = 1 // key length -1: no key
    at = writeUvarint(b, at, 2 * r.value.byteLength)
    b.set(r.value, at)
    at += r.value.byteLength
    const headers = r.headers ?? []
    at = writeUvarint(b, at, 2 * headers.length)
    for (const [k, v] of headers) {
      at = writeUvarint(b, at, 2 * k.byteLength)
      b.set(k, at)
      at += k.byteLength
      at = writeUvarint(b, at, 2 * v.byteLength)
      b.set(v, at)
      at += v.byteLength
    }
  }
  b.writeUInt32BE(crc32c(b.subarray(CRC_FROM)), 17)
  return b
}

/** A produce's answer, as the client reads it. */
type ProduceResponse = ReturnType<typeof produceV11.parseResponse>

/** The API versions of produce the client can read answers of, by version; 9 and later are "flexible" (compact fields, tagged fields). */
type ProduceVersion = { readonly version: number; readonly parseResponse: (...args: never[]) => ProduceResponse }

/**
 * The produces of one idempotent producer, and its sequence number per partition. One produce at
 * a time (the driver's `pump`): a produce that was not answered is sent again with the same
 * sequence numbers (the broker keeps one copy).
 */
export class KafkaProduces {
  private readonly sequences = new Map<string, number>()
  private version: ProduceVersion | undefined

  constructor(
    private readonly kafka: KafkaModule,
    readonly producer: Producer<Buffer, Buffer, Buffer, Buffer>,
  ) {}

  /**
   * Sends `records` to their partitions' leaders (one request per leader), every one acknowledged
   * by all in-sync replicas. Records the broker stored are marked `stored`, and those of a
   * partition answered with an error get its id in `answer`, whatever the rest's fate; once
   * every request was answered, the error is thrown (several: the client's `MultipleErrors` of
   * them all, as its own send reports them). An answer saying the
   * metadata is stale (a leader moved, a topic not known there yet) is tried again at once on
   * fresh metadata, as the client's own send does; a topic missing from it then fails as the
   * client's lookup says (`Unknown topic <name>.`).
   */
  async send(records: readonly Outgoing[]): Promise<void> {
    const producer = this.producer
    if (producer.producerId === undefined) await producer.initIdempotentProducer({})
    this.version ??= await this.produceVersion()
    const version = this.version
    let pending = records
    for (let attempt = 0; ; attempt++) {
      for (const r of pending) r.answer = undefined
      const metadata = await producer.metadata({ topics: [...new Set(pending.map((r) => r.topic))], autocreateTopics: false })
      const byLeader = new Map<number, Map<string, PartitionBatch>>()
      for (const r of pending) {
        const topic = metadata.topics.get(r.topic)!
        // Kept from the first attempt, unless the topic was made again with fewer partitions.
        if (r.place.partition === undefined || r.place.partition >= topic.partitionsCount) r.place.partition = r.place.slot % topic.partitionsCount
        const partition = r.place.partition
        const leader = topic.partitions[partition]!.leader
        if (!metadata.brokers.has(leader)) {
          // No leader now (one is being elected): asked again, on fresh metadata, at the next try.
          producer.clearMetadata()
          throw new this.kafka.NetworkError(`No leader for partition ${partition} of topic ${r.topic}.`)
        }
        let batches = byLeader.get(leader)
        if (batches === undefined) {
          batches = new Map()
          byLeader.set(leader, batches)
        }
        const key = `${r.topic}\u0000${partition}`
        let batch = batches.get(key)
        if (batch === undefined) {
          batch = { topic: r.topic, partition, key, records: [] }
          batches.set(key, batch)
        }
        batch.records.push(r)
      }
      const errors = await Promise.all(
        [...byLeader].map(async ([leader, batches]) => {
          try {
            const connection = await producer.connections.get(metadata.brokers.get(leader)!)
            await this.produce(connection, version, [...batches.values()])
            return undefined
          } catch (error) {
            return error
          }
        }),
      )
      const failed = errors.filter((e) => e !== undefined)
      if (failed.length === 0) return
      const error = failed.length === 1 ? failed[0] : new this.kafka.MultipleErrors('Producing messages failed.', failed as Error[])
      const stale = failed.some((e) => (e as { findBy?: (property: string, value: unknown) => unknown }).findBy?.('hasStaleMetadata', true))
      if (stale) producer.clearMetadata()
      pending = pending.filter((r) => r.stored !== true)
      if (!stale || attempt > 0 || pending.length === 0) throw error
    }
  }

  /** The produce version this client and the broker share (the highest). */
  private async produceVersion(): Promise<ProduceVersion> {
    const api = await new Promise<{ version: number }>((resolve, reject) =>
      this.producer[this.kafka.kGetApi]('Produce', (error, found) => (error ? reject(error) : resolve(found as { version: number }))),
    )
    const module = (this.kafka as unknown as Record<string, { parseResponse?: ProduceVersion['parseResponse'] }>)[`produceV${api.version}`]
    if (module?.parseResponse === undefined) throw new this.kafka.UnsupportedApiError(`No produce API v${api.version} to read answers of.`)
    return { version: api.version, parseResponse: module.parseResponse }
  }

  /** One produce request to one broker: a batch per partition; marks what it stored, advances those partitions' sequence numbers. */
  private produce(connection: Connection, version: ProduceVersion, batches: readonly PartitionBatch[]): Promise<void> {
    const producer = this.producer
    const identity = { producerId: producer.producerId!, epoch: producer.producerEpoch!, timestamp: Date.now() }
    const flexible = version.version >= 9
    const writer = this.kafka.Writer.create()
    // No transactional id.
    writer.appendString(null, flexible).appendInt16(ACKS_ALL).appendInt32(ACK_TIMEOUT_MS)
    const byTopic = new Map<string, PartitionBatch[]>()
    for (const batch of batches) {
      const same = byTopic.get(batch.topic)
      if (same === undefined) byTopic.set(batch.topic, [batch])
      else same.push(batch)
    }
    const count = (n: number) => (flexible ? writer.appendUnsignedVarInt(n + 1) : writer.appendInt32(n))
    count(byTopic.size)
    for (const [topic, partitions] of byTopic) {
      writer.appendString(topic, flexible)
      count(partitions.length)
      for (const batch of partitions) {
        const sequence = this.sequences.get(batch.key) ?? 0
        const encoded = encodeBatch(batch.records, { ...identity, sequence }, this.kafka.crc32c)
        writer.appendInt32(batch.partition)
        if (flexible) writer.appendUnsignedVarInt(encoded.length + 1)
        else writer.appendInt32(encoded.length)
        writer.append(encoded)
        if (flexible) writer.appendTaggedFields()
      }
      if (flexible) writer.appendTaggedFields()
    }
    if (flexible) writer.appendTaggedFields()
    return new Promise((resolve, reject) => {
      connection.send(
        0,
        version.version,
        () => writer,
        version.parseResponse as never,
        flexible,
        flexible,
        (error, answer) => {
          // Nothing may throw into the client's socket handler, and the produce must settle.
          try {
            this.read(batches, error, answer)
          } catch (failure) {
            reject(error ?? failure)
            return
          }
          if (error === null || error === undefined) resolve()
          else reject(error)
        },
      )
    })
  }

  /** Marks what an answer says of each batch: stored (its partition's sequence numbers move on), or refused with an id. */
  private read(batches: readonly PartitionBatch[], error: unknown, answer: unknown): void {
    const response = (error === null || error === undefined ? answer : (error as { response?: ProduceResponse }).response) as ProduceResponse | undefined
    for (const t of response?.responses ?? [])
      for (const p of t.partitionResponses) {
        if (p.errorCode !== 0) continue
        const batch = batches.find((b) => b.topic === t.name && b.partition === p.index)
        if (batch === undefined) continue
        for (const r of batch.records) r.stored = true
        this.sequences.set(batch.key, ((this.sequences.get(batch.key) ?? 0) + batch.records.length) % SEQUENCE_WRAP)
      }
    // The partitions answered with an error: their records carry its id.
    for (const e of (error as { errors?: unknown[] } | null)?.errors ?? []) {
      const { path, apiId } = (e ?? {}) as { path?: unknown; apiId?: unknown }
      const at = typeof path === 'string' ? /^\/responses\/(\d+)\/partition_responses\/(\d+)$/.exec(path) : null
      if (at === null || typeof apiId !== 'string') continue
      const t = response?.responses[Number(at[1])]
      const p = t?.partitionResponses[Number(at[2])]
      const batch = batches.find((b) => b.topic === t?.name && b.partition === p?.index)
      for (const r of batch?.records ?? []) r.answer = apiId
    }
  }
}
