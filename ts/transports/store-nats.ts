/**
 * A strong store namespace on NATS JetStream (see store/strong.ts), laid out as NATS KV lays out a
 * bucket, on the JetStream API the driver already uses (no @nats-io/kv dependency): one stream
 * per namespace keeping the last `history + 1` messages of each subject (its history, fixed by
 * the process that makes it: `max_msgs_per_subject`), a subject per key (the key in
 * base64url, a valid token whatever the key holds), a deletion a message with the header
 * `KV-Operation: DEL`. A key's version is the stream sequence of its last message, and a
 * conditional write is a publish expecting that last subject sequence: the server refuses it
 * when another write came first. A value's TTL is its deadline in a header (`Orrery-Expires`):
 * the mirrors expire it and sweep it with a deletion expecting its sequence; until then a
 * create expects it as the key's last, as it does a deletion marker. The mirror is an ordered consumer from the last message of
 * every subject on.
 */
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg, StreamConfig } from '@nats-io/jetstream'
import type { MsgHdrs } from '@nats-io/transport-node'

import { OrreryError } from '../errors.js'
import type { SharedTransport } from '../store/shared.js'
import {
  historyMismatch,
  partOf,
  type StrongBackend,
  type StrongRecord,
  type StrongResult,
  type StrongTxnResult,
  type StrongWrite,
} from '../store/strong-backend.js'
import type { NatsDriver } from './nats.js'

const WRITER = 'Orrery-Writer'
const WALL = 'Orrery-Wall'
const EXPIRES = 'Orrery-Expires'
const OPERATION = 'KV-Operation'
/** Which write of a transaction of several a message is: `<index>/<count>`. */
const TXN = 'Orrery-Txn'
/** On a deletion that swept an expired value. */
const SWEPT = 'Orrery-Swept'
/** The server's error code for a batch with more messages than its `max_batch_size`. */
const BATCH_TOO_LARGE = 10199

/** A batch id: 22 random base64url characters (randomUUID needs a secure context in a page). */
function batchId(): string {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(22))
  let out = ''
  for (const b of bytes) out += ALPHABET[b & 63]
  return out
}
/** How many times a create retries after a deletion marker moved the key's last sequence. */
const CREATE_TRIES = 5

const UTF8 = new TextEncoder()
const FROM_UTF8 = new TextDecoder()

/** base64url without padding, as Node's Buffer writes it (no Buffer: this module runs in pages too). */
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const SEXTETS = new Map([...ALPHABET].map((c, i) => [c, i]))

/** A key as a subject token: its UTF-8 bytes in base64url. */
export function b64url(key: string): string {
  const bytes = UTF8.encode(key)
  let out = ''
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0)
    const chars = i + 2 < bytes.length ? 4 : i + 1 < bytes.length ? 3 : 2
    for (let c = 0; c < chars; c++) out += ALPHABET[(n >> (18 - 6 * c)) & 63]
  }
  return out
}

/** The key a subject token stands for (characters outside the alphabet are skipped, as Buffer does). */
export function fromB64url(token: string): string {
  const bytes: number[] = []
  let bits = 0
  let n = 0
  for (const c of token) {
    const v = SEXTETS.get(c)
    if (v === undefined) continue
    n = (n << 6) | v
    bits += 6
    if (bits >= 8) {
      bits -= 8
      bytes.push((n >> bits) & 0xff)
    }
  }
  return FROM_UTF8.decode(new Uint8Array(bytes))
}

/** A message of a key's subject as a record. */
function recordOf(key: string, seq: number, header: MsgHdrs | undefined, data: Uint8Array): StrongRecord {
  const op = header?.get(OPERATION) ?? ''
  const deleted = op === 'DEL' || op === 'PURGE'
  const expires = deleted ? 0 : Number(header?.get(EXPIRES) ?? 0) || 0
  return {
    key,
    revision: seq,
    value: deleted ? undefined : data.slice(),
    wall: Number(header?.get(WALL) ?? 0) || 0,
    writer: header?.get(WRITER) ?? '',
    expiresAt: Number.isSafeInteger(expires) && expires > 0 ? expires : undefined,
    part: partOf(header?.get(TXN) || undefined),
    ...(deleted && header?.get(SWEPT) === '1' ? { swept: true } : {}),
  }
}

/** A strong namespace `name` on the NATS server of `transport`, its keys keeping `history` older records (undefined: the namespace's). */
export function natsStrong(transport: SharedTransport, name: string, history: number | undefined): StrongBackend {
  return new NatsStrong(transport.driver as NatsDriver, transport.name, name, history)
}

class NatsStrong implements StrongBackend {
  readonly timeoutMs: number
  private readonly stream: string
  private readonly base: string
  private messages: ConsumerMessages | undefined
  private closed = false
  /** Whether the stream takes atomic batches (the server says so): transactions need it. */
  private atomic = false
  /** Each deleted key's deletion marker: a create expects it as the key's last sequence. */
  private readonly markers = new Map<string, number>()
  history = 0

  constructor(
    private readonly driver: NatsDriver,
    readonly transport: string,
    private readonly name: string,
    private readonly asked: number | undefined,
  ) {
    this.timeoutMs = driver.publishTimeoutMs
    // Streams of their own (`<prefix>-kv-<name>`): a channel, even one named orrery.kv.<name>, has another.
    const names = driver.kvNamesOf(name)
    this.stream = names.stream
    this.base = names.subject
  }

  private get js(): JetStreamClient {
    return this.driver.client()
  }

  private get jsm(): JetStreamManager {
    return this.driver.managerOf()
  }

  private subject(key: string): string {
    return `${this.base}.${b64url(key)}`
  }

  /**
   * Takes the history of a stream as it is (a key keeps its last `max_msgs_per_subject`
   * messages): the one asked for, if any, must be it.
   */
  private settle(config: StreamConfig): void {
    const kept = Math.max(0, (config.max_msgs_per_subject ?? 1) - 1)
    if (this.asked !== undefined && kept !== this.asked) throw historyMismatch(this.name, this.asked, kept)
    this.history = kept
  }

  /** Makes the stream unless it exists (another process may make it at the same time). */
  private async ensure(): Promise<number> {
    const { StorageType, DiscardPolicy } = this.driver.nats.jetstream
    const info = await this.jsm.streams.info(this.stream).catch((error: unknown) => {
      if (this.driver.isNotFound(error)) return undefined
      throw error
    })
    if (info !== undefined) {
      this.settle(info.config)
      this.atomic = info.config.allow_atomic === true
      // Made before transactions were: it takes atomic batches from now on, where the server can
      // (2.12 and later; an older one ignores the setting) and lets this user change the stream.
      if (!this.atomic) {
        const updated = await this.jsm.streams.update(this.stream, { ...info.config, allow_atomic: true }).catch(() => undefined)
        this.atomic = updated?.config.allow_atomic === true
      }
      return info.state.messages
    }
    try {
      const made = await this.jsm.streams.add({
        name: this.stream,
        subjects: [`${this.base}.>`],
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        max_msgs_per_subject: (this.asked ?? 0) + 1,
        allow_rollup_hdrs: true,
        allow_direct: true,
        allow_atomic: true,
      })
      this.settle(made.config)
      this.atomic = made.config.allow_atomic === true
      return 0
    } catch (error) {
      const made = await this.jsm.streams.info(this.stream).catch(() => undefined)
      if (made === undefined) throw error
      this.settle(made.config)
      this.atomic = made.config.allow_atomic === true
      return made.state.messages
    }
  }

  /** A key's last message as a record; a deletion marker is what a create expects. */
  private record(key: string, seq: number, header: MsgHdrs | undefined, data: Uint8Array): StrongRecord {
    const record = recordOf(key, seq, header, data)
    if (record.value === undefined) this.markers.set(key, seq)
    else this.markers.delete(key)
    return record
  }

  async start(onRecord: (record: StrongRecord) => void, onError: (error: unknown) => void): Promise<void> {
    const { DeliverPolicy } = this.driver.nats.jetstream
    const stored = await this.ensure()
    const consumer = await this.js.consumers.get(this.stream, { filter_subjects: [`${this.base}.>`], deliver_policy: DeliverPolicy.LastPerSubject })
    let loaded: (() => void) | undefined
    let failed: ((error: unknown) => void) | undefined
    const ready = new Promise<void>((resolve, reject) => {
      loaded = resolve
      failed = reject
    })
    if (stored === 0) loaded!()
    const prefix = this.base.length + 1
    this.messages = await consumer.consume({
      callback: (m: JsMsg) => {
        try {
          onRecord(this.record(fromB64url(m.subject.slice(prefix)), m.seq, m.headers, m.data))
        } catch (error) {
          onError(error)
        }
        if (m.info.pending === 0) {
          loaded?.()
          failed = undefined
        }
      },
    })
    void this.messages.closed().then((error) => {
      if (this.closed) return
      const ended = new OrreryError('TRANSPORT_UNAVAILABLE', `nats transport ${this.transport}: a strong namespace's feed ended`, {
        ...(error ? { cause: error } : {}),
        details: { transport: this.transport },
      })
      // Ended before the mirror loaded: the open fails rather than wait for a load that never ends.
      failed?.(ended)
      if (error) onError(ended)
    })
    await ready
  }

  async write(w: StrongWrite): Promise<StrongResult> {
    const { JetStreamApiError, JetStreamApiCodes } = this.driver.nats.jetstream
    const headers = this.headersOf(w)
    const subject = this.subject(w.key)
    // Absent: no message, or a deletion marker as the key's last.
    let expect = w.expected === 0 ? (this.markers.get(w.key) ?? 0) : w.expected
    for (let tries = 0; ; tries++) {
      try {
        const ack = await this.js.publish(subject, w.value ?? new Uint8Array(0), {
          headers,
          ...(expect === undefined ? {} : { expect: { lastSubjectSequence: expect } }),
        })
        if (w.value === undefined) this.markers.set(w.key, ack.seq)
        return { ok: true, revision: ack.seq }
      } catch (error) {
        if (!(error instanceof JetStreamApiError) || error.code !== JetStreamApiCodes.StreamWrongLastSequence) throw error
      }
      const now = await this.last(w.key)
      // A value whose TTL ran out is absent too (until a mirror sweeps it).
      const live = now !== undefined && now.value !== undefined && !(now.expiresAt !== undefined && now.expiresAt <= w.wall)
      // Still absent for a create, behind a newer marker or an expired value: expect that one.
      if (w.expected === 0 && !live && tries < CREATE_TRIES) {
        expect = now?.revision ?? 0
        continue
      }
      return { ok: false, current: live ? now.revision : 0 }
    }
  }

  /**
   * One atomic batch: a message per write, each expecting its key's last subject sequence when
   * the write has a condition. A failed expectation refuses the whole batch without saying which
   * key's, so the keys are read to tell; a create that finds its key still absent behind a newer
   * deletion marker or an expired value expects that one and is tried again.
   */
  async transact(writes: readonly StrongWrite[]): Promise<StrongTxnResult> {
    if (!this.atomic)
      throw new OrreryError(
        'CAPABILITY_UNSUPPORTED',
        `nats transport ${this.transport}: stream ${this.stream} takes no atomic batches (transactions need nats-server 2.12 or later, and a user allowed to update the stream)`,
        { details: { transport: this.transport, capability: 'store.transaction', indeterminate: false } },
      )
    const expects = writes.map((w) => (w.expected === 0 ? (this.markers.get(w.key) ?? 0) : w.expected))
    for (let tries = 0; ; tries++) {
      const ack = await this.batch(writes, expects)
      if (ack.ok) {
        // A batch's messages are stored one after another: the last has the ack's sequence.
        const first = ack.seq - writes.length + 1
        writes.forEach((w, i) => {
          if (w.value === undefined) this.markers.set(w.key, first + i)
        })
        return { ok: true, revisions: writes.map((_, i) => first + i) }
      }
      // Nothing was written: a failed read from here on says so.
      const lasts = await Promise.all(writes.map((w) => (w.expected === undefined ? undefined : this.last(w.key)))).catch((error: unknown) => {
        throw new OrreryError('TRANSPORT_UNAVAILABLE', `nats transport ${this.transport}: a transaction was refused, and reading its keys failed`, {
          cause: error,
          details: { transport: this.transport, indeterminate: false },
        })
      })
      for (let i = 0; i < writes.length; i++) {
        const w = writes[i]!
        if (w.expected === undefined) continue
        const now = lasts[i]
        const live = now !== undefined && now.value !== undefined && !(now.expiresAt !== undefined && now.expiresAt <= w.wall)
        if (w.expected === 0 && !live) {
          expects[i] = now?.revision ?? 0
          continue
        }
        if (!live || now.revision !== w.expected) return { ok: false, index: i, current: live ? now.revision : 0 }
      }
      // Every condition holds now (a create's key behind a newer marker, or a key that moved in
      // between): once more, a few times at most.
      if (tries >= CREATE_TRIES)
        throw new OrreryError(
          'TRANSPORT_UNAVAILABLE',
          `nats transport ${this.transport}: a transaction was refused ${tries + 1} times though its conditions held when read (writes racing it); nothing was written`,
          { details: { transport: this.transport, indeterminate: false } },
        )
    }
  }

  /** Sends the writes as one atomic batch: the sequence of its last message, or refused for a failed expectation. */
  private async batch(writes: readonly StrongWrite[], expects: readonly (number | undefined)[]): Promise<{ ok: true; seq: number } | { ok: false }> {
    const nc = this.driver.connectionOf()
    const id = batchId()
    for (let i = 0; i < writes.length; i++) {
      const w = writes[i]!
      const headers = this.headersOf(w)
      headers.set('Nats-Batch-Id', id)
      headers.set('Nats-Batch-Sequence', String(i + 1))
      if (writes.length > 1) headers.set(TXN, `${i}/${writes.length}`)
      const expect = expects[i]
      if (expect !== undefined) headers.set('Nats-Expected-Last-Subject-Sequence', String(expect))
      const data = w.value ?? new Uint8Array(0)
      if (i < writes.length - 1) {
        nc.publish(this.subject(w.key), data, { headers })
        continue
      }
      headers.set('Nats-Batch-Commit', '1')
      const reply = await nc.request(this.subject(w.key), data, { headers, timeout: this.timeoutMs })
      const ack = reply.json<{ seq?: number; batch?: string; count?: number; error?: { err_code?: number; description?: string } }>()
      if (ack.error === undefined && typeof ack.seq === 'number') {
        // An answer for the whole batch: a server that took the messages one by one says nothing of it.
        if (ack.batch === id && ack.count === writes.length) return { ok: true, seq: ack.seq }
        throw new OrreryError('INTERNAL', `nats transport ${this.transport}: the server took a transaction's messages, but not as one batch`, {
          details: { transport: this.transport, indeterminate: true },
        })
      }
      const { JetStreamApiCodes } = this.driver.nats.jetstream
      const code = ack.error?.err_code
      if (code === JetStreamApiCodes.StreamWrongLastSequence || code === JetStreamApiCodes.StreamWrongLastSequenceUnknown) return { ok: false }
      // Refused whole (too many batches at once, more messages than the server takes, one refused): nothing was written.
      throw new OrreryError(
        code === BATCH_TOO_LARGE ? 'CAPACITY_EXCEEDED' : 'TRANSPORT_UNAVAILABLE',
        `nats transport ${this.transport}: the server refused a transaction, nothing written: ${ack.error?.description ?? 'no sequence in its answer'}`,
        { details: { transport: this.transport, code, indeterminate: false } },
      )
    }
    throw new OrreryError('INTERNAL', 'an empty transaction reached the broker')
  }

  /** A write's headers: who wrote it and when, and a deletion's marker or a value's deadline. */
  private headersOf(w: StrongWrite): MsgHdrs {
    const headers = this.driver.nats.transport.headers()
    headers.set(WRITER, w.writer)
    headers.set(WALL, String(w.wall))
    if (w.value === undefined) {
      headers.set(OPERATION, 'DEL')
      if (w.sweep === true) headers.set(SWEPT, '1')
    } else if (w.expiresAt !== undefined) headers.set(EXPIRES, String(w.expiresAt))
    return headers
  }

  /** The key's last message (a deletion marker too), or undefined. */
  private async last(key: string): Promise<StrongRecord | undefined> {
    const m = await this.jsm.streams.getMessage(this.stream, { last_by_subj: this.subject(key) }).catch((error: unknown) => {
      if (this.driver.isServerError(error)) return null
      throw error
    })
    if (m === null) return undefined
    return this.record(key, m.seq, m.header, m.data)
  }

  async read(key: string): Promise<StrongRecord | undefined> {
    return this.last(key)
  }

  async recordAt(key: string, revision: number): Promise<StrongRecord | undefined> {
    // A stream sequence of the key's subject is one of the records it keeps (older ones are gone).
    const m = await this.jsm.direct.getMessage(this.stream, { seq: revision })
    return m === null || m.subject !== this.subject(key) ? undefined : recordOf(key, m.seq, m.header, m.data)
  }

  async records(key: string): Promise<StrongRecord[]> {
    if (this.history === 0) {
      const last = await this.last(key)
      return last === undefined || last.value === undefined ? [] : [last]
    }
    // The subject keeps at most history + 1 messages: one batched direct get, oldest first.
    const records: StrongRecord[] = []
    try {
      const batch = await this.jsm.direct.getBatch(this.stream, { seq: 1, next_by_subj: this.subject(key), batch: this.history + 1 })
      for await (const m of batch) records.push(recordOf(key, m.seq, m.header, m.data))
    } catch (error) {
      // No message on the subject: no record.
      if ((error as { code?: unknown }).code !== 404) throw error
    }
    return records
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.messages?.stop()
    this.messages = undefined
  }
}
