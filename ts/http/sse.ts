/**
 * Server-sent events: a Stream written to a response as `event: <name>` / `data: <JSON>` frames,
 * with a comment every 15 s so proxies keep the connection, ended when the client goes or the
 * server closes. A client that does not read loses events (counted in a `dropped` comment)
 * instead of growing the server's memory without bound, and a server holds at most `maxStreams`
 * streams at once (each holds a subscription and up to 1 MiB queued): one more is refused 429
 * CAPACITY_EXCEEDED before anything is written.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Subscription } from 'rxjs'

import { OrreryError } from '../errors.js'
import type { Stream } from '../stream.js'

const HEARTBEAT_MS = 15_000
/** Bytes queued for a client past which events are dropped for it. */
const MAX_QUEUED = 1 << 20

/** The open event streams of one server, ended together when it closes. */
export class EventStreams {
  private readonly open = new Set<() => void>()

  constructor(private readonly maxStreams: number) {}

  /** Streams `source` to the client as events named `event` (CAPACITY_EXCEEDED past `maxStreams`). */
  send<T>(request: FastifyRequest, reply: FastifyReply, source: Stream<T>, event: string): void {
    if (this.open.size >= this.maxStreams) {
      throw new OrreryError('CAPACITY_EXCEEDED', `this server has ${this.maxStreams} event streams open, its most (maxStreams): try again when one ends`, {
        details: { maxStreams: this.maxStreams },
      })
    }
    const raw = reply.raw
    reply.hijack()
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    })
    raw.write(': orrery\n\n')
    let dropped = 0
    let subscription: Subscription | undefined
    const heartbeat = setInterval(() => raw.write(dropped > 0 ? `: dropped ${dropped}\n\n` : ': ping\n\n'), HEARTBEAT_MS)
    let ended = false
    const end = (): void => {
      if (ended) return
      ended = true
      clearInterval(heartbeat)
      subscription?.unsubscribe()
      this.open.delete(end)
      if (!raw.writableEnded) raw.end()
    }
    this.open.add(end)
    request.raw.on('close', end)
    raw.on('close', end)
    raw.on('error', end)
    subscription = source.subscribe({
      next: (item) => {
        if (raw.writableLength > MAX_QUEUED) {
          dropped++
          return
        }
        raw.write(`event: ${event}\ndata: ${JSON.stringify(item)}\n\n`)
      },
      error: () => end(),
      complete: () => end(),
    })
  }

  /** Ends every open stream (the server is closing). */
  closeAll(): void {
    for (const end of [...this.open]) end()
  }
}
