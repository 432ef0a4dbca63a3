/**
 * The HTTP API's server-sent events (`/v1/events`, `/v1/channels/{name}/tail`) read from a fetch
 * response, as the `orrery` command and the dashboard both read them: over fetch rather than
 * EventSource, so the bearer token goes in a header. The parsing is eventsource-parser's, to the
 * specification (line endings, multi-line data, comments, a leading BOM). Engine-neutral: no node:*.
 */
import { createParser } from 'eventsource-parser'

import { OrreryError } from '../errors.js'

/**
 * The most characters one event may take (its lines and data together), so a stream that never
 * ends an event cannot grow the reader's memory without bound. A message's view at the default
 * `maxMessageBytes` (10 MiB) takes at most 6 characters a byte (JSON's `\u00XX` escapes).
 */
export const MAX_EVENT_CHARS = 64 * 1024 * 1024

/** One server-sent event: its name (`message` unless the server named it) and its data. */
export interface ServerEvent {
  readonly event: string
  readonly data: string
}

/**
 * Hands each event of `body` to `onEvent` until the stream ends (resolves) or `onEvent` returns
 * false (resolves, the rest of the body cancelled). A read that fails (the connection broke, the
 * fetch was aborted) rejects with its error; events after a false in the same chunk are not handed on.
 * An event over `maxEventChars` rejects with `MESSAGE_TOO_LARGE` after the events before it, the
 * rest of the body cancelled.
 */
export async function readServerEvents(
  body: ReadableStream<Uint8Array>,
  onEvent: (event: ServerEvent) => unknown,
  maxEventChars = MAX_EVENT_CHARS,
): Promise<void> {
  let stopped = false
  let tooLarge = false
  const parser = createParser({
    onEvent: ({ event, data }) => {
      if (!stopped && onEvent({ event: event ?? 'message', data }) === false) stopped = true
    },
    onError: (error) => {
      // Other errors (an unknown field, a bad retry) are ignored, as the specification says.
      if (error.type === 'max-buffer-size-exceeded') tooLarge = true
    },
    maxBufferSize: maxEventChars,
  })
  const reader = body.getReader()
  const decoder = new TextDecoder()
  try {
    while (!stopped) {
      const { value, done } = await reader.read()
      if (done) return
      parser.feed(decoder.decode(value, { stream: true }))
      if (tooLarge && !stopped) {
        throw new OrreryError('MESSAGE_TOO_LARGE', `an event of the stream is over ${maxEventChars} characters: the stream was left`, {
          details: { maxEventChars },
        })
      }
    }
  } finally {
    reader.cancel().catch(() => {})
  }
}
