/**
 * Reading a channel for the control surface: a page of its retained log, and a live tail that
 * never holds its publishers back (a slow reader, an HTTP client on a bad link, loses the oldest
 * of what it has not read yet instead).
 */
import type { Subscription } from 'rxjs'

import type { Bus } from '../bus/bus.js'
import type { Message } from '../bus/message.js'
import type { StartFrom } from '../bus/options.js'
import { isOrreryError } from '../errors.js'
import { Stream } from '../stream.js'

/** How long a page read waits for a bound channel's mirror before it returns what it has, in ms. */
const READ_WAIT_MS = 2000

/**
 * Bytes of messages (their frames) one page holds at most: a page ends early, after at least one
 * message, rather than grow past it (10 MiB messages, 1,000 to a page, would make 10 GB). The
 * caller pages on from the last seq it got.
 */
export const PAGE_BYTES = 8 << 20

/** Messages a tail buffers for a slow reader before it drops its oldest. */
const TAIL_BUFFER = 1000

/**
 * Up to `limit` retained messages of `channel` from seq `from` on (default: the oldest kept),
 * oldest first, as the log is when the call is made (later publishes are not waited for), and
 * no more than {@link PAGE_BYTES} of them after the first.
 */
export async function readLog(bus: Bus, channel: string, from: number | undefined, limit: number): Promise<Message[]> {
  const stats = bus.stats(channel)
  const last = stats.nextSeq - 1
  const start = Math.max(from ?? stats.firstSeq, stats.firstSeq)
  if (stats.retained === 0 || start > last || limit === 0) return []
  const out: Message[] = []
  let bytes = 0
  return new Promise<Message[]>((resolve, reject) => {
    let subscription: Subscription | undefined
    let done = false
    const finish = (): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      queueMicrotask(() => subscription?.unsubscribe())
      resolve(out)
    }
    const timer = setTimeout(finish, READ_WAIT_MS)
    const take = (message: Message): void => {
      if (done || message.seq < start) return
      if (message.seq > last) return finish()
      bytes += message.bytes.length
      if (out.length > 0 && bytes > PAGE_BYTES) return finish()
      out.push(message)
      if (out.length >= limit || message.seq >= last) finish()
    }
    const open = (at: StartFrom): Subscription =>
      bus.subscribe(channel, { from: at, overflow: 'drop-oldest', buffer: Math.max(limit, 16) }).subscribe({
        next: take,
        error: (error: unknown) => {
          if (done) return
          done = true
          clearTimeout(timer)
          reject(error)
        },
        complete: finish,
      })
    try {
      try {
        subscription = open({ seq: start })
      } catch (error) {
        // A transport that cannot start at a seq: read from the oldest and skip what comes before.
        if (!isOrreryError(error, 'CAPABILITY_UNSUPPORTED')) throw error
        subscription = open('earliest')
      }
    } catch (error) {
      done = true
      clearTimeout(timer)
      reject(error)
    }
  })
}

/**
 * The messages of `channel` as they come, from `from` on (default `latest`: only new ones),
 * through a buffer of 1,000 that drops its oldest when the reader falls behind.
 */
export function tailOf<V>(bus: Bus, channel: string, from: StartFrom, view: (message: Message) => V): Stream<V> {
  // Checked at the call (the subscribe refuses a bad channel or start before anything streams).
  const source = bus.subscribe(channel, { from, overflow: 'drop-oldest', buffer: TAIL_BUFFER })
  return new Stream<V>({
    start: (sink) => {
      const subscription = source.subscribe({
        next: (message) => sink.next(view(message)),
        error: (error: unknown) => sink.error(error),
        complete: () => sink.complete(),
      })
      return { stop: () => subscription.unsubscribe(), setPaused: () => {} }
    },
  })
}
