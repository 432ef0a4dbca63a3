/** Payload codecs: how a value becomes the bytes a frame carries, and back. */
import { Packr } from 'msgpackr'

import { OrreryError } from './errors.js'
import type { CodecName } from './frame.js'

const encoder = new TextEncoder()
const decoder = new TextDecoder()
// Plain maps and arrays, no records extension: the bytes stay readable by any msgpack decoder.
const msgpack = new Packr({ useRecords: false, moreTypes: false })

/** Encodes a payload with the named codec. */
export function encodePayload(codec: CodecName, value: unknown): Uint8Array {
  switch (codec) {
    case 'raw':
      if (value instanceof Uint8Array) return value
      throw new OrreryError('INVALID_PAYLOAD', 'the raw codec takes a Uint8Array payload', { details: { codec } })
    case 'json': {
      let text: string | undefined
      try {
        text = JSON.stringify(value)
      } catch (cause) {
        throw new OrreryError('INVALID_PAYLOAD', 'the payload cannot be encoded as JSON', { cause, details: { codec } })
      }
      if (text === undefined) throw new OrreryError('INVALID_PAYLOAD', 'the payload has no JSON form (undefined, a function or a symbol)', { details: { codec } })
      return encoder.encode(text)
    }
    case 'msgpack':
      try {
        return msgpack.pack(value)
      } catch (cause) {
        throw new OrreryError('INVALID_PAYLOAD', 'the payload cannot be encoded as msgpack', { cause, details: { codec } })
      }
    default:
      throw new OrreryError('INVALID_OPTION', `unknown codec ${String(codec)}: use json, msgpack or raw`, { details: { option: 'codec', value: codec } })
  }
}

/** Decodes a payload with the named codec. */
export function decodePayload(codec: CodecName, bytes: Uint8Array): unknown {
  if (codec === 'json') return JSON.parse(decoder.decode(bytes))
  if (codec === 'msgpack') return msgpack.unpack(bytes)
  return bytes
}
