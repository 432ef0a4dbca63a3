/**
 * What a strong namespace (strong.ts) asks of its broker, and the records and answers that cross
 * between them: one backend per transport kind (transports/store-redis.ts, store-nats.ts).
 */
import { OrreryError } from '../errors.js'

/** A record of a strong namespace as the broker keeps it (`value` undefined: deleted). */
export interface StrongRecord {
  readonly key: string
  readonly revision: number
  readonly value: Uint8Array | undefined
  readonly wall: number
  readonly writer: string
  /** When the value expires (wall-clock ms), if it was put with a TTL. */
  readonly expiresAt?: number | undefined
  /** Which write of a transaction of several it is, from 0, and how many it has (as the feed brings it). */
  readonly part?: readonly [index: number, count: number] | undefined
  /** A deletion that swept an expired value (as history reads it back). */
  readonly swept?: boolean
}

/**
 * A write the broker applies only if the key is at `expected` (undefined: unconditional; 0:
 * absent). A value whose `expiresAt` is not after the write's `wall` counts as absent to the
 * condition, except for a `sweep`: the deletion of an expired value, applied only if the key is
 * still at exactly `expected`.
 */
export interface StrongWrite {
  readonly key: string
  readonly value: Uint8Array | undefined
  readonly expected: number | undefined
  readonly wall: number
  readonly writer: string
  readonly expiresAt?: number | undefined
  readonly sweep?: boolean
}

/** Which write of a transaction a record is, from its `<index>/<count>` (none for a lone write). */
export function partOf(field: string | undefined): [number, number] | undefined {
  const parts = field === undefined ? null : /^(\d{1,4})\/(\d{1,4})$/.exec(field)
  if (parts === null) return undefined
  const index = Number(parts[1])
  const count = Number(parts[2])
  return index < count ? [index, count] : undefined
}

/** What the broker answered: the write's revision, or the key's revision that failed the condition. */
export type StrongResult = { readonly ok: true; readonly revision: number } | { readonly ok: false; readonly current: number }

/**
 * What the broker answered a transaction: each write's revision (consecutive, in the order of the
 * writes), or which write's condition failed (`index`) and the revision of its key then.
 */
export type StrongTxnResult =
  | { readonly ok: true; readonly revisions: readonly number[] }
  | { readonly ok: false; readonly index: number; readonly current: number }

/** What a strong namespace asks of its broker (one per transport kind). */
export interface StrongBackend {
  /** The transport's name, for errors. */
  readonly transport: string
  /** How long a write or a read may take (the transport's publishTimeoutMs). */
  readonly timeoutMs: number
  /**
   * Hands every current record to `onRecord`, resolves once they all were, and then hands on every
   * later change in the broker's order. A failure of the feed after that goes to `onError`;
   * `onReload` hears that the feed loaded the whole namespace again (the rest of a transaction
   * it was bringing will not come).
   */
  start(onRecord: (record: StrongRecord) => void, onError: (error: unknown) => void, onReload: () => void): Promise<void>
  write(write: StrongWrite): Promise<StrongResult>
  /** Applies every write (of distinct keys) or, if a condition fails, none: atomically on the broker. */
  transact(writes: readonly StrongWrite[]): Promise<StrongTxnResult>
  /** The key's record on the broker now (undefined: absent). */
  read(key: string): Promise<StrongRecord | undefined>
  /**
   * The key's records the broker keeps, oldest first: its last `history` older ones and the
   * current one, deletions included (none with history 0: a deleted key has no records then).
   */
  records(key: string): Promise<StrongRecord[]>
  /** The key's record at `revision`, if the broker still keeps it (a deletion's too). */
  recordAt(key: string, revision: number): Promise<StrongRecord | undefined>
  /** How many older records each key keeps on the broker (the namespace's, known once started). */
  readonly history: number
  close(): void
}

/** The most older records a strong namespace's keys keep (a NATS KV bucket's limit too). */
export const MAX_STRONG_HISTORY = 64

/** A namespace opened asking for another history than the broker keeps for it. */
export function historyMismatch(namespace: string, asked: number, kept: number): OrreryError {
  return new OrreryError(
    'INVALID_OPTION',
    `strong namespace ${namespace} keeps ${kept} older records per key on the broker (set by the process that made it), not ${asked}: leave history out to take the namespace's`,
    { details: { option: 'history', value: asked, namespace, current: kept } },
  )
}
