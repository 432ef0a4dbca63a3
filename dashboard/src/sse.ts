/**
 * Server-sent events read over fetch, so the bearer token goes in a header (EventSource sends none):
 * each `event:`/`data:` block handed on as it arrives; the feed ends when `signal` aborts.
 */
export interface SseEvent {
  event: string
  data: string
}

export async function readSse(response: Response, onEvent: (e: SseEvent) => void, signal: AbortSignal): Promise<void> {
  if (!response.body) return
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  signal.addEventListener('abort', () => void reader.cancel().catch(() => {}), { once: true })
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += value
    // Blocks end with a blank line; a block's lines may end with \r\n.
    for (let end = blockEnd(buffer); end >= 0; end = blockEnd(buffer)) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end).replace(/^(\r?\n){2}/, '')
      let event = 'message'
      const data: string[] = []
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event:')) event = line.slice(6).trim()
        else if (line.startsWith('data:')) data.push(line.slice(line.startsWith('data: ') ? 6 : 5))
      }
      if (data.length > 0) onEvent({ event, data: data.join('\n') })
    }
  }
}

function blockEnd(buffer: string): number {
  const m = /\r?\n\r?\n/.exec(buffer)
  return m ? m.index : -1
}
