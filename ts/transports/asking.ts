/**
 * Asking a broker until it answers: how a driver's looks that a reader cannot start without (a
 * stream's or topic's state, a start marker, a consumer's making) ride out an outage, as a Redis
 * read does, instead of failing the subscriber that waits on them.
 */

/** How long a look that failed of the moment waits before it is made again. */
export const ASK_AGAIN_MS = 200

/** What a driver tells `askUntilAnswered` of its broker and its errors. */
export interface Asker {
  /** Whether the transport closed (asking ends with the last error). */
  closed(): boolean
  /** Whether the connection is up: asking waits while it is not, and says nothing of it meanwhile. */
  connected(): boolean
  /** Whether `error` may pass (a dropped connection, a timeout): asked again. */
  passing(error: unknown): boolean
  /** Whether `error` says the stream or topic is gone, having it made again before the next look: asked again. */
  mended(error: unknown): boolean
  /** After how long unanswered (the connection up) the last error is reported, once. */
  readonly reportAfterMs: number
  /** Reports an error that goes on (asking goes on too). */
  report(error: unknown): void
}

/**
 * `call`, made again every ASK_AGAIN_MS until it is answered, while its errors pass or mend. Any
 * other error (a refusal, a permission, a bug), the transport's close, or `stopped()` ends it
 * with that error.
 */
export async function askUntilAnswered<T>(asker: Asker, call: () => Promise<T>, stopped: () => boolean): Promise<T> {
  const since = Date.now()
  let reported = false
  for (;;) {
    try {
      return await call()
    } catch (error) {
      if (asker.closed() || stopped()) throw error
      if (!asker.mended(error)) {
        if (!asker.passing(error)) throw error
        if (!reported && asker.connected() && Date.now() - since > asker.reportAfterMs) {
          // Unanswered longer than a connection may take, the connection up (an outage is said by
          // the connection itself): said once.
          reported = true
          asker.report(error)
        }
      }
      do await new Promise((r) => setTimeout(r, ASK_AGAIN_MS))
      while (!asker.connected() && !asker.closed() && !stopped())
      // Ended while it waited: not asked once more (a look may take the client's own timeout).
      if (asker.closed() || stopped()) throw error
    }
  }
}
