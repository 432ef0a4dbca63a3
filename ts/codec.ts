/** Payload codecs: how a value becomes the bytes a frame carries, and back. */
import { OrreryError } from './errors.js'
import type { CodecName } from './frame.js'

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Encodes a payload with the named codec. */
export function encodePayload(codec: CodecName, value: unknown): Uint8Array {
  if (codec === 'raw') {
    if (value instanceof Uint8Array) return value
    throw new OrreryError('INVALID_PAYLOAD', 'the raw codec takes a Uint8Array payload', { details: { codec } })
  }
  if (codec === 'json') {
    let text: string | undefined
    try {
      text = JSON.stringify(value)
    } catch (cause) {
      throw new OrreryError('INVALID_PAYLOAD', 'the payload cannot be encoded as JSON', { cause, details: { codec } })
    }
    if (text === undefined) throw new OrreryError('INVALID_PAYLOAD', 'the payload has no JSON form (undefined, a function or a symbol)', { details: { codec } })
    return encoder.encode(text)
  }
  throw new OrreryError('INVALID_OPTION', `unknown codec ${String(codec)}`, { details: { codec } })
}

/** Decodes a payload with the named codec. */
export function decodePayload(codec: CodecName, bytes: Uint8Array): unknown {
  if (codec === 'json') return JSON.parse(decoder.decode(bytes))
  return bytes
}
