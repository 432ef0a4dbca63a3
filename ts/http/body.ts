/**
 * The JSON body parser. A scan first refuses a body nested deeper than `maxDepth`
 * (REQUEST_TOO_LARGE) before anything parses it, so a deep body never reaches a recursive parser
 * or a handler. Then `JSON.parse`, and secure-json-parse's scan: an object key `__proto__`, or a
 * `constructor` key holding an object with a `prototype` key, is refused (INVALID_ARGUMENT, its
 * own message), never stripped, so a handler gets the body as sent or nothing. An empty body is
 * no body.
 */
import type { FastifyInstance } from 'fastify'
import { parse } from 'secure-json-parse'

import { OrreryError } from '../errors.js'

/** How deep `json` nests arrays and objects (strings skipped, escapes included), stopping past `max`. */
export function depthOf(json: string, max: number): number {
  let depth = 0
  let deepest = 0
  let inString = false
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++
      else if (c === 0x22) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x5b || c === 0x7b) {
      depth++
      if (depth > deepest) {
        deepest = depth
        if (deepest > max) return deepest
      }
    } else if (c === 0x5d || c === 0x7d) depth--
  }
  return deepest
}

/** Installs the JSON parser on `app`. */
export function jsonBodies(app: FastifyInstance, bodyLimit: number, maxDepth: number): void {
  // JSON only: any other content type answers 415.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, (_request, body, done) => {
    const text = body as string
    if (text.trim() === '') return done(null, undefined)
    if (depthOf(text, maxDepth) > maxDepth) {
      return done(new OrreryError('REQUEST_TOO_LARGE', `the request body nests deeper than ${maxDepth} levels`, { details: { maxDepth } }), undefined)
    }
    let value: unknown
    try {
      value = parse(text, undefined, { protoAction: 'error', constructorAction: 'error' })
    } catch {
      // The parser throws SyntaxError for both; text that plain JSON.parse takes held such a key.
      return done(
        new OrreryError('INVALID_ARGUMENT', isJson(text) ? PROTOTYPE_REFUSED : 'the request body is not valid JSON', { details: { where: 'body' } }),
        undefined,
      )
    }
    done(null, value)
  })
}

function isJson(text: string): boolean {
  try {
    // The parser takes a leading byte-order mark; JSON.parse does not.
    JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text)
    return true
  } catch {
    return false
  }
}

/** What a refused prototype key reads as; the OpenAPI document says the same. */
export const PROTOTYPE_REFUSED =
  'the request body holds an object key "__proto__", or a "constructor" key holding a "prototype" key: the server refuses both (prototype poisoning)'
