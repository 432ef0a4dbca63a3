/**
 * readServerEvents (ts/control/server-events.ts), which the `orrery` command and the dashboard read
 * the HTTP API's streams with: events split across chunks anywhere (inside a UTF-8 character too),
 * CRLF and LF, comments and ids skipped, multi-line data, blocks without data dropped, a false from
 * the handler ending the read and cancelling the body, a broken stream rejecting, and an event
 * too large for the reader's bound rejecting.
 */
import { describe, expect, it } from 'vitest'

import { readServerEvents, type ServerEvent } from '../ts/control/server-events.js'
import { ENGINE } from './engine.js'

/** A body of `chunks`, then `end` (`'close'`, `'open'` or an error). */
function body(chunks: Array<string | Uint8Array>, end: 'close' | 'open' | Error = 'close'): { stream: ReadableStream<Uint8Array>; cancelled: () => boolean } {
  let cancelled = false
  const encoder = new TextEncoder()
  const queue = [...chunks]
  // One chunk a pull, as a socket hands them: an error fails the read after the chunks before it.
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const chunk = queue.shift()
      if (chunk !== undefined) controller.enqueue(typeof chunk === 'string' ? encoder.encode(chunk) : chunk)
      else if (end === 'close') controller.close()
      else if (end instanceof Error) controller.error(end)
      else return new Promise<void>(() => {})
    },
    cancel() {
      cancelled = true
    },
  })
  return { stream, cancelled: () => cancelled }
}

async function all(chunks: Array<string | Uint8Array>): Promise<ServerEvent[]> {
  const seen: ServerEvent[] = []
  await readServerEvents(body(chunks).stream, (e) => void seen.push(e))
  return seen
}

describe(`readServerEvents (${ENGINE})`, () => {
  it('reads the API framing, split anywhere, in LF or CRLF', async () => {
    const text = ': orrery\n\nevent: message\ndata: {"seq":1,"payload":"é"}\n\n: ping\n\nevent: control\r\ndata: {"n":2}\r\n\r\n'
    const expected = [
      { event: 'message', data: '{"seq":1,"payload":"é"}' },
      { event: 'control', data: '{"n":2}' },
    ]
    expect(await all([text])).toEqual(expected)
    // Every split point of the bytes, inside the two bytes of é too.
    const bytes = new TextEncoder().encode(text)
    for (let at = 1; at < bytes.length; at++) expect(await all([bytes.slice(0, at), bytes.slice(at)]), `split at ${at}`).toEqual(expected)
  })

  it('joins multi-line data, names an unnamed event message, and drops blocks without data', async () => {
    expect(await all(['data: a\ndata:b\nid: 7\n\nevent: x\n\nretry: 10\n\ndata\n\n'])).toEqual([
      { event: 'message', data: 'a\nb' },
      { event: 'message', data: '' },
    ])
  })

  it('stops at a false from the handler, cancelling the rest of the body', async () => {
    const { stream, cancelled } = body(['data: 1\n\ndata: 2\n\ndata: 3\n\n'], 'open')
    const seen: string[] = []
    await readServerEvents(stream, (e) => {
      seen.push(e.data)
      return seen.length < 2
    })
    expect(seen).toEqual(['1', '2'])
    expect(cancelled()).toBe(true)
  })

  it('an event over maxEventChars rejects with MESSAGE_TOO_LARGE after the events before it, the body cancelled', async () => {
    // One that never ends: a line with no end, then more of it.
    const { stream, cancelled } = body(['data: 1\n\n', `data: ${'x'.repeat(50)}`, 'x'.repeat(60)], 'open')
    const seen: string[] = []
    const error = await readServerEvents(stream, (e) => void seen.push(e.data), 100).catch((e: unknown) => e)
    expect(error).toMatchObject({ name: 'OrreryError', code: 'MESSAGE_TOO_LARGE', details: { maxEventChars: 100 } })
    expect(seen).toEqual(['1'])
    expect(cancelled()).toBe(true)
    // Many lines of one event count together; events under the bound pass, however many.
    const lines = body([`data: ${'y'.repeat(40)}\n`.repeat(3), '\n'], 'open')
    expect(await readServerEvents(lines.stream, () => {}, 100).catch((e: unknown) => e)).toMatchObject({ code: 'MESSAGE_TOO_LARGE' })
    const small: string[] = []
    await readServerEvents(body([`data: ${'z'.repeat(80)}\n\n`.repeat(5)]).stream, (e) => void small.push(e.data), 100)
    expect(small).toEqual(Array(5).fill('z'.repeat(80)))
  })

  it('rejects with the error of a body that breaks, after the events before it', async () => {
    const seen: string[] = []
    const broken = new Error('connection reset')
    await expect(readServerEvents(body(['data: 1\n\ndata: 2'], broken).stream, (e) => void seen.push(e.data))).rejects.toBe(broken)
    expect(seen).toEqual(['1'])
  })
})
