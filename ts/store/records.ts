/** What the store hands out: entries, changes and stamps, decoded from the core's records. */
import { decodePayload } from '../codec.js'
import { isOrreryError, OrreryError } from '../errors.js'
import type { CodecName } from '../frame.js'
import { INSPECT, inspectAs, type InspectFn, type InspectOptions } from '../inspect.js'
import { KINDS, readKey, RECORD_HEADER } from './wire.js'

/** A write's hybrid logical clock stamp and its writer: how replicas order concurrent writes. */
export interface Stamp {
  /** Wall-clock milliseconds of the write (never behind an earlier stamp). */
  readonly wall: number
  /** Orders writes within one millisecond. */
  readonly logical: number
  /** Who wrote it (an agent, a replica; the store's replica name by default). */
  readonly writer: string
}

/** A key's live value. */
export interface Entry<T> {
  readonly key: string
  readonly value: T
  /** The store revision that wrote it; grows with every write. */
  readonly version: number
  readonly stamp: Stamp
  /** When the value expires (clock ms), if it has a TTL. */
  readonly expiresAt: number | undefined
}

/** One change to a key: a put (with its value), a delete, or a TTL running out. */
export type Change<T> =
  | {
      readonly type: 'put'
      readonly key: string
      readonly version: number
      readonly value: T
      readonly stamp: Stamp
      /** When the value expires (clock ms), if it was put with a TTL and is still the key's value when watched. */
      readonly expiresAt?: number
    }
  | { readonly type: 'delete' | 'expire'; readonly key: string; readonly version: number; readonly stamp: Stamp }

/** Resolves writer ids to names (cached: ids never change meaning). */
export type WriterNames = (id: number) => string

/**
 * A stored value, decoded with the namespace's codec. Bytes that do not decode with it (written
 * through a handle with another codec) fail as `INVALID_PAYLOAD`, as a watch does, never as a
 * bare `SyntaxError`.
 */
function decodeValue(codec: CodecName, bytes: Uint8Array, key: string | undefined): unknown {
  try {
    return decodePayload(codec, bytes)
  } catch (cause) {
    if (isOrreryError(cause)) throw cause
    throw new OrreryError('INVALID_PAYLOAD', `a stored value does not decode with the namespace codec (${codec})`, {
      cause,
      details: { codec, ...(key === undefined ? {} : { key }) },
    })
  }
}

/** Decodes the record at `at` of `io` as a change of `key` (or of the key it carries). */
export function readChange<T>(io: Uint8Array, view: DataView, at: number, codec: CodecName, writers: WriterNames, key?: string): Change<T> {
  const kind = KINDS[io[at + 4] as 1 | 2 | 3]
  const keyLen = view.getUint16(at + 6, true)
  const valueLen = view.getUint32(at + 8, true)
  const stamp: Stamp = { wall: view.getFloat64(at + 24, true), logical: view.getUint32(at + 32, true), writer: writers(view.getUint32(at + 12, true)) }
  const version = view.getFloat64(at + 16, true)
  const name = key ?? readKey(io, at + RECORD_HEADER, keyLen)
  if (kind !== 'put') return { type: kind, key: name, version, stamp }
  const start = at + RECORD_HEADER + keyLen
  const value = decodeValue(codec, io.slice(start, start + valueLen), name) as T
  const expires = view.getFloat64(at + 40, true)
  return expires === 0 ? { type: 'put', key: name, version, value, stamp } : { type: 'put', key: name, version, value, stamp, expiresAt: expires }
}

/**
 * A live entry, its stamp decoded when first read. The raw stamp parts are plain private
 * fields (with `#private` ones every read constructed through V8's generic stub, ~10% of a
 * get); `toJSON` and `util.inspect` show only the public shape.
 */
class StoreEntry<T> implements Entry<T> {
  private decoded: Stamp | undefined = undefined

  constructor(
    readonly key: string,
    readonly value: T,
    readonly version: number,
    readonly expiresAt: number | undefined,
    private readonly wall: number,
    private readonly logical: number,
    private readonly writer: number,
    private readonly writers: WriterNames,
  ) {}

  get stamp(): Stamp {
    this.decoded ??= { wall: this.wall, logical: this.logical, writer: this.writers(this.writer) }
    return this.decoded
  }

  toJSON(): object {
    return { key: this.key, value: this.value, version: this.version, stamp: this.stamp, expiresAt: this.expiresAt }
  }

  [INSPECT](depth: number, options: InspectOptions, inspect?: InspectFn): string | object {
    return inspectAs('Entry', this.toJSON(), depth, options, inspect)
  }
}

/** Decodes the record at `at` as the live entry of `key` (or the key it carries). */
export function readEntry<T>(io: Uint8Array, view: DataView, at: number, codec: CodecName, writers: WriterNames, key?: string): Entry<T> {
  const keyLen = view.getUint16(at + 6, true)
  const valueLen = view.getUint32(at + 8, true)
  const start = at + RECORD_HEADER + keyLen
  const value = decodeValue(codec, io.slice(start, start + valueLen), key) as T
  const expires = view.getFloat64(at + 40, true)
  return new StoreEntry(
    key ?? readKey(io, at + RECORD_HEADER, keyLen),
    value,
    view.getFloat64(at + 16, true),
    expires === 0 ? undefined : expires,
    view.getFloat64(at + 24, true),
    view.getUint32(at + 32, true),
    view.getUint32(at + 12, true),
    writers,
  )
}

/** Where the record after the one at `at` starts. */
export function nextRecord(view: DataView, at: number): number {
  return at + ((RECORD_HEADER + view.getUint16(at + 6, true) + view.getUint32(at + 8, true) + 7) & ~7)
}
