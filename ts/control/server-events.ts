/**
 * The HTTP API's server-sent events (`/v1/events`, `/v1/channels/{name}/tail`) read from a fetch
 * response, as the `orrery` command and the dashboard both read them: over fetch rather than
 * EventSource, so the bearer token goes in a header. The parsing is eventsource-parser's, to the
 * specification (line endings, multi-line data, comments, a leading BOM). Engine-neutral: no node:*.
 */
import { createParser } from 'eventsource-parser'

/** One server-sent event: its name (`message` unless the server named it) and its data. */
export interface ServerEvent {
  readonly event: string
  readonly data: string
}

/**
 * Hands each event of `body` to `onEvent` until the stream ends (resolves) or `onEvent` returns
 * false (resolves, the rest of the body cancelled). A read that fails (the connection broke, the
 * fetch was aborted) rejects with its error; events after a false in the same chunk are not handed on.
 */
export async function readServerEvents(body: ReadableStream<Uint8Array>, onEvent: (event: ServerEvent) => unknown): Promise<void> {
  let stopped = false
  const parser = createParser({
    onEvent: ({ event, data }) => {
      if (!stopped && onEvent({ event: event ?? 'message', data }) === false) stopped = true
    },
  })
  const reader = body.getReader()
  const decoder = new TextDecoder()
  try {
    while (!stopped) {
      const { value, done } = await reader.read()
      if (done) return
      parser.feed(decoder.decode(value, { stream: true }))
    }
  } finally {
    reader.cancel().catch(() => {})
  }
}
