/** Payload codecs: how a value becomes the bytes a frame carries, and back. */
import { Packr } from 'msgpackr'

import { wellFormed } from './check.js'
import { OrreryError } from './errors.js'
import type { CodecName } from './frame.js'

const encoder = new TextEncoder()
const decoder = new TextDecoder()
// Plain maps and arrays, no records extension: the bytes stay readable by any msgpack decoder.
const msgpack = new Packr({ useRecords: false, moreTypes: false })
/**
 * msgpackr renames a `__proto__` map key to `__proto_` (assigning it would set the prototype),
 * and has no option to keep it. A payload whose bytes hold `__proto__` anywhere is decoded by
 * this second reader, maps as Maps, and rebuilt into objects with that key defined as an
 * ordinary own property, as `JSON.parse` does. Every other payload takes the fast path.
 */
const msgpackMaps = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: false })
/** The UTF-8 bytes of `__proto__`. */
const PROTO = [...'__proto__'].map((c) => c.charCodeAt(0))

/** Encodes a payload with the named codec. */
export function encodePayload(codec: CodecName, value: unknown): Uint8Array {
  switch (codec) {
    case 'raw':
      if (value instanceof Uint8Array) return value
      throw new OrreryError('INVALID_PAYLOAD', 'the raw codec takes a Uint8Array payload', { details: { codec } })
    case 'json':
      return utf8Bytes(jsonText(value))
    case 'msgpack': {
      let bytes: Uint8Array
      try {
        bytes = msgpack.pack(value)
      } catch (cause) {
        throw new OrreryError('INVALID_PAYLOAD', 'the payload cannot be encoded as msgpack', { cause, details: { codec } })
      }
      // Checked after packing, which already refused cycles and too-deep values. msgpackr writes a
      // lone surrogate either as its raw 3-byte form (0xED …) or, in long strings, as U+FFFD
      // (EF BF BD): only a payload whose bytes hold one of those is walked (the walk on every
      // payload cost +60% on a small object).
      if (mayHoldLoneSurrogate(bytes) && holdsLoneSurrogate(value)) {
        throw new OrreryError(
          'INVALID_PAYLOAD',
          'the payload holds a string with a lone surrogate, which msgpack (UTF-8) cannot carry: it would arrive as U+FFFD; the json codec keeps it',
          { details: { codec } },
        )
      }
      return bytes
    }
    default:
      throw new OrreryError('INVALID_OPTION', `unknown codec ${String(codec)}: use json, msgpack or raw`, { details: { option: 'codec', value: codec } })
  }
}

/** A payload's JSON text, or INVALID_PAYLOAD. */
export function jsonText(value: unknown): string {
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch (cause) {
    throw new OrreryError('INVALID_PAYLOAD', 'the payload cannot be encoded as JSON', { cause, details: { codec: 'json' } })
  }
  if (text === undefined)
    throw new OrreryError('INVALID_PAYLOAD', 'the payload has no JSON form (undefined, a function or a symbol)', { details: { codec: 'json' } })
  return text
}

/** Texts up to this many characters are encoded by a byte loop when they are ASCII (see `utf8Bytes`). */
export const SHORT_TEXT = 64

/**
 * The UTF-8 bytes of `text`. `TextEncoder.encode` costs ~330 ns here whatever the length (it
 * allocates its result outside the heap); a short ASCII text is copied by a loop into an array
 * small enough for V8 to keep on its heap (~25-120 ns).
 */
function utf8Bytes(text: string): Uint8Array {
  const n = text.length
  if (n > SHORT_TEXT) return encoder.encode(text)
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i)
    if (c > 0x7f) return encoder.encode(text)
    out[i] = c
  }
  return out
}

/** Decodes a payload with the named codec. */
export function decodePayload(codec: CodecName, bytes: Uint8Array): unknown {
  if (codec === 'json') return JSON.parse(decoder.decode(bytes))
  if (codec === 'msgpack') return holdsProto(bytes) ? objectsOf(msgpackMaps.unpack(bytes)) : msgpack.unpack(bytes)
  return bytes
}

/**
 * Whether a string of `value` (a key or a value, at any depth of what msgpackr packs: arrays,
 * objects, Maps, Sets, an Error's message) holds a lone surrogate. UTF-8 cannot carry one, so
 * msgpackr writes replacement bytes and the string arrives changed.
 */
function holdsLoneSurrogate(value: unknown): boolean {
  if (typeof value === 'string') return !wellFormed(value)
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value) || value instanceof ArrayBuffer || value instanceof Date) return false
  if (Array.isArray(value) || value instanceof Set) {
    for (const item of value) if (holdsLoneSurrogate(item)) return true
    return false
  }
  if (value instanceof Map) {
    for (const [k, v] of value) if (holdsLoneSurrogate(k) || holdsLoneSurrogate(v)) return true
    return false
  }
  if (value instanceof Error && (holdsLoneSurrogate(value.message) || holdsLoneSurrogate(value.name))) return true
  for (const key of Object.keys(value)) {
    if (!wellFormed(key) || holdsLoneSurrogate((value as Record<string, unknown>)[key])) return true
  }
  return false
}

/** Whether packed bytes hold a byte sequence a lone surrogate leaves (0xED, or EF BF BD). */
function mayHoldLoneSurrogate(bytes: Uint8Array): boolean {
  if (bytes.indexOf(0xed) !== -1) return true
  for (let i = bytes.indexOf(0xef); i !== -1; i = bytes.indexOf(0xef, i + 1)) {
    if (bytes[i + 1] === 0xbf && bytes[i + 2] === 0xbd) return true
  }
  return false
}

/** Node's Buffer, where there is one: its indexOf finds a whole byte pattern in one native call. */
const NodeBuffer = (globalThis as { Buffer?: { from(b: ArrayBufferLike, offset: number, length: number): Uint8Array & { indexOf(p: Uint8Array): number } } })
  .Buffer
const PROTO_BYTES = new Uint8Array(PROTO)

/**
 * Whether `bytes` contain `__proto__`. In Node, one native search over a Buffer view (no copy);
 * elsewhere a native indexOf for `_` then a short compare, which costs one call per underscore
 * (a snake_case payload of 200 rows took 29% longer to decode that way).
 */
function holdsProto(bytes: Uint8Array): boolean {
  if (NodeBuffer !== undefined && bytes.length > 64) {
    return NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.length).indexOf(PROTO_BYTES) !== -1
  }
  const last = bytes.length - PROTO.length
  for (let i = bytes.indexOf(0x5f); i !== -1 && i <= last; i = bytes.indexOf(0x5f, i + 1)) {
    if (bytes[i + 1] !== 0x5f) {
      i++
      continue
    }
    let j = 2
    while (j < PROTO.length && bytes[i + j] === PROTO[j]) j++
    if (j === PROTO.length) return true
  }
  return false
}

/** Turns decoded Maps back into plain objects, as the fast reader makes them, keeping `__proto__` as an own key. */
function objectsOf(value: unknown): unknown {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = objectsOf(value[i])
    return value
  }
  if (!(value instanceof Map)) return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of value) {
    // Keys as the fast reader names them: primitives by their string form, nothing else.
    if (k !== null && typeof k === 'object')
      throw new OrreryError('INVALID_PAYLOAD', 'a msgpack map key is not a string or a number', { details: { codec: 'msgpack' } })
    const key = String(k)
    const item = objectsOf(v)
    if (key === '__proto__') Object.defineProperty(out, key, { value: item, enumerable: true, writable: true, configurable: true })
    else out[key] = item
  }
  return out
}
