/**
 * The JSON body parser: Fastify's own (prototype poisoning refused), after a scan that refuses a
 * body nested deeper than `maxDepth` (REQUEST_TOO_LARGE) before anything parses it, so a deep
 * body never reaches a recursive parser or a handler. An empty body is no body.
 */
import type { FastifyInstance } from 'fastify'

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
  const parse = app.getDefaultJsonParser('error', 'error')
  // JSON only: any other content type answers 415.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, (request, body, done) => {
    const text = body as string
    if (text.trim() === '') return done(null, undefined)
    if (depthOf(text, maxDepth) > maxDepth) {
      return done(new OrreryError('REQUEST_TOO_LARGE', `the request body nests deeper than ${maxDepth} levels`, { details: { maxDepth } }), undefined)
    }
    parse(request, text, done)
  })
}
