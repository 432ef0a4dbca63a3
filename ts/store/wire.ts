/**
 * The store's byte layouts of `crates/core/src/store/wire.rs`, from the core's manifest: writes go into the
 * engine's `io` buffer as records of a 32-byte header plus key and value, and results come back
 * as records of a 48-byte header plus key and value, each padded to 8 bytes.
 */
import { wellFormed } from '../check.js'
import { LIMITS, STORE_WIRE } from '../engines/manifest.js'
import { OrreryError } from '../errors.js'

export const WRITE_HEADER = STORE_WIRE.writeHeader
export const RECORD_HEADER = STORE_WIRE.recordHeader
export const ACTION = { put: STORE_WIRE.actionPut, delete: STORE_WIRE.actionDelete, check: STORE_WIRE.actionCheck } as const
export const CONDITION = { any: STORE_WIRE.conditionAny, absent: STORE_WIRE.conditionAbsent, version: STORE_WIRE.conditionVersion } as const
/** Record kinds; 4 is a watcher's lag notice. */
export const KINDS = { 1: 'put', 2: 'delete', 3: 'expire' } as const
export const LAGGED = STORE_WIRE.lagged
/** Watch start modes, as `wire::watch` reads them. */
export const WATCH_MODES = { now: STORE_WIRE.watchNow, after: STORE_WIRE.watchAfter, current: STORE_WIRE.watchCurrent } as const

export const pad8 = (n: number): number => (n + 7) & ~7

/** Longest key in UTF-8 bytes (the core's `MAX_KEY_LEN`). */
export const MAX_KEY_BYTES = LIMITS.maxKeyBytes

/** The refusal of a key that is empty (`bytes` 0) or longer than the core takes, as the core words it. */
export function invalidKey(key: string, bytes: number): OrreryError {
  return new OrreryError('INVALID_KEY', `invalid key: ${bytes === 0 ? 'is empty' : `is longer than ${MAX_KEY_BYTES} bytes`}`, {
    details: { key: key.slice(0, 64), bytes },
  })
}

const utf8 = new TextEncoder()
const text = new TextDecoder()

/**
 * Writes `key` as UTF-8 at `io[at..]` and returns its length in bytes; `io` must have room for
 * `3 * key.length` bytes. ASCII keys (the common case) skip TextEncoder's call overhead.
 */
export function putKey(io: Uint8Array, at: number, key: string): number {
  const n = key.length
  if (n <= 64) {
    let i = 0
    for (; i < n; i++) {
      const c = key.charCodeAt(i)
      if (c >= 0x80) break
      io[at + i] = c
    }
    if (i === n) return n
  }
  // UTF-8 cannot carry a lone surrogate: encoded as U+FFFD, 'a\uD800' and 'a\uDFFF' would be one
  // key. Checked only here, past the ASCII path, so plain keys pay nothing.
  if (!wellFormed(key)) {
    throw new OrreryError('INVALID_KEY', 'invalid key: holds a lone surrogate (not well-formed UTF-16, which UTF-8 cannot carry)', {
      details: { key: key.slice(0, 64) },
    })
  }
  return utf8.encodeInto(key, io.subarray(at)).written
}

/** Decodes a key written by the core. */
export function readKey(io: Uint8Array, at: number, len: number): string {
  if (len <= 32) {
    let s = ''
    for (let i = 0; i < len; i++) {
      const c = io[at + i]!
      if (c >= 0x80) return text.decode(io.subarray(at, at + len))
      s += String.fromCharCode(c)
    }
    return s
  }
  return text.decode(io.subarray(at, at + len))
}

/** Writes one write record at `at`; returns where the next starts. The key is at `at + 32`. */
export function putWrite(
  io: Uint8Array,
  view: DataView,
  at: number,
  action: number,
  condition: number,
  ns: number,
  key: string,
  value: Uint8Array | undefined,
  writer: number,
  expected: number,
  ttl: number,
): number {
  const keyLen = putKey(io, at + WRITE_HEADER, key)
  // The header holds a u16: a longer key would wrap. The core refuses keys over MAX_KEY_BYTES.
  if (keyLen > MAX_KEY_BYTES || keyLen === 0) throw invalidKey(key, keyLen)
  const valueLen = value === undefined ? 0 : value.length
  io[at] = action
  io[at + 1] = condition
  view.setUint16(at + 2, keyLen, true)
  view.setUint32(at + 4, ns, true)
  view.setUint32(at + 8, valueLen, true)
  view.setUint32(at + 12, writer, true)
  view.setFloat64(at + 16, expected, true)
  view.setFloat64(at + 24, ttl, true)
  if (value !== undefined) io.set(value, at + WRITE_HEADER + keyLen)
  return at + pad8(WRITE_HEADER + keyLen + valueLen)
}

/** The most bytes a write of this key and value can take. */
export const writeBound = (key: string, valueLen: number): number => pad8(WRITE_HEADER + 3 * key.length + valueLen)
