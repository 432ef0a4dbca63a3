/**
 * What the Kafka driver's modules share: timings, header names, the topic layout type, and how
 * a client is closed, an error read and a record's route found.
 */
import { type Route, routeOf } from './records.js'

/** An offset per partition. */
export type Offsets = Map<number, bigint>

/** A topic's partitions and where each is led, from the cluster's metadata. */
export interface TopicLayout {
  readonly id: string
  readonly leaders: readonly number[]
}

/** A record batch of a fetch's answer, as the client decodes it (Kafka's record batch format). */
export interface RecordBatch {
  readonly firstOffset: bigint
  readonly lastOffsetDelta: number
  readonly attributes: number
  readonly firstTimestamp: bigint
  readonly maxTimestamp: bigint
  records: ReadonlyArray<{
    readonly offsetDelta: number
    readonly timestampDelta: bigint
    readonly value: Buffer | null
    readonly headers: ReadonlyArray<readonly [Buffer | null, Buffer | null]>
  }>
}

/** Record batch attributes: a control batch (a transaction's marker, no records of the topic's). */
export const IS_CONTROL = 1 << 5

/** Pause before a failed write or read is tried again (the client reconnects meanwhile). */
export const RETRY_MS = 200
/** How long a fetch waits at the broker for records before it returns empty. */
export const FETCH_WAIT_MS = 500
/**
 * The most a fetch brings of one partition, and in all. A fetch's records are decoded only once
 * the whole answer is in, read through a list of the socket's chunks: at the client's default
 * (10 MB a partition) a new group's first record came 300 ms after its join, and the reads of a
 * 100,000-record topic took 0.66x Kafka's own consumer's time in the suite. 1 MiB a partition is
 * what Kafka's own consumer asks (`max.partition.fetch.bytes`).
 */
export const FETCH_PARTITION_BYTES = 1 << 20
export const FETCH_BYTES = 8 << 20

/** Header keys of a request's route. */
export const REPLY_TO = 'orrery-reply-to'
export const TIMEOUT = 'orrery-timeout'
/** Header key of a signed record's signature. */
export const SIGNATURE = 'orrery-sig'

/** Closes a client at once, whatever it was doing (a failure to close is nothing to report). */
export function closeClient(client: { close(force?: boolean): unknown } | undefined, force = true): void {
  // An admin client's close takes no force (its one argument is a callback).
  const closing = force ? client?.close(true) : client?.close()
  if (closing instanceof Promise) closing.catch(() => {})
}

/** The Kafka protocol error ids inside `error` (a client error may wrap several). */
export function protocolIds(error: unknown): string[] {
  const ids: string[] = []
  const visit = (e: unknown, depth: number) => {
    if (e === null || typeof e !== 'object' || depth > 6) return
    const id = (e as { apiId?: unknown }).apiId
    if (typeof id === 'string') ids.push(id)
    for (const inner of (e as { errors?: unknown[] }).errors ?? []) visit(inner, depth + 1)
    visit((e as { cause?: unknown }).cause, depth + 1)
  }
  visit(error, 0)
  return ids
}

/**
 * Whether every attempt `error` reports ended with the broker closing a connection it had
 * accepted ('Connection closed'): what a SASL or TLS listener does to a client without them.
 */
export function closedByBroker(error: unknown): boolean {
  const leaves: unknown[] = []
  const visit = (e: unknown, depth: number) => {
    const inner = (e as { errors?: unknown[] } | null)?.errors
    if (Array.isArray(inner) && inner.length > 0 && depth < 6) for (const i of inner) visit(i, depth + 1)
    else leaves.push(e)
  }
  visit(error, 0)
  return leaves.every((e) => (e as { code?: unknown })?.code === 'PLT_KFK_NETWORK' && (e as Error).message === 'Connection closed')
}

/** A record's signature (its header `orrery-sig`), if it has one. */
export function recordSignature(headers: ReadonlyArray<readonly [Buffer | null, Buffer | null]> | Map<Buffer, Buffer> | undefined): string | undefined {
  if (headers === undefined) return undefined
  for (const [k, v] of headers) if (k !== null && k.length === SIGNATURE.length && k.toString('latin1') === SIGNATURE) return v?.toString('latin1')
  return undefined
}

/** A raw record's route (its headers `orrery-reply-to` and `orrery-timeout`); undefined for a plain message. */
export function recordRoute(headers: ReadonlyArray<readonly [Buffer | null, Buffer | null]> | Map<Buffer, Buffer> | undefined): Route | undefined {
  if (headers === undefined) return undefined
  let address: string | undefined
  let timeout: string | undefined
  for (const [k, v] of headers) {
    const key = k?.toString('latin1')
    if (key === REPLY_TO) address = v?.toString('latin1')
    else if (key === TIMEOUT) timeout = v?.toString('latin1')
  }
  return routeOf(address, timeout)
}
