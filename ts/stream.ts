/**
 * A stream of deliveries: an rxjs Observable (push, with operators) that is also an
 * AsyncIterable (pull). Iterating pauses the consumer in the core while the local queue is
 * full, so backpressure reaches the publisher instead of piling up in JS.
 */
import { Observable, type Subscriber } from 'rxjs'

/** One started consumer: its teardown, and how to pause it in the core. */
export interface Started {
  stop(): void
  setPaused(paused: boolean): void
}

/** What a stream needs from the consumer behind it. */
export interface StreamSource<T> {
  /**
   * Starts a consumer for one subscription; `sink` receives each item. `exclusive` asks for a
   * consumer of its own (an iterator pauses and resumes it, which must not affect others).
   */
  start(sink: Subscriber<T>, exclusive: boolean): Started
}

/** Items an iterator holds before it pauses its consumer. */
const ITERATOR_HIGH_WATER = 256

export class Stream<T> extends Observable<T> implements AsyncIterable<T> {
  private readonly consumer: StreamSource<T>

  constructor(consumer: StreamSource<T>) {
    super((sink) => {
      const started = consumer.start(sink, false)
      return () => started.stop()
    })
    this.consumer = consumer
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    const queue: T[] = []
    let waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined
    let failed: { error: unknown } | undefined
    let done = false
    let paused = false
    let started: Started | undefined
    const subscription = new Observable<T>((sink) => {
      started = this.consumer.start(sink, true)
      const own = started
      return () => own.stop()
    }).subscribe({
      next: (item) => {
        if (waiting) {
          const { resolve } = waiting
          waiting = undefined
          resolve({ value: item, done: false })
          return
        }
        queue.push(item)
        if (!paused && queue.length >= ITERATOR_HIGH_WATER) {
          paused = true
          started?.setPaused(true)
        }
      },
      error: (error: unknown) => {
        failed = { error }
        waiting?.reject(error)
        waiting = undefined
      },
      complete: () => {
        done = true
        waiting?.resolve({ value: undefined, done: true })
        waiting = undefined
      },
    })
    return {
      next: () => {
        if (queue.length > 0) {
          const value = queue.shift()!
          if (paused && queue.length <= ITERATOR_HIGH_WATER / 4) {
            paused = false
            started?.setPaused(false)
          }
          return Promise.resolve({ value, done: false })
        }
        if (failed) return Promise.reject(failed.error)
        if (done) return Promise.resolve({ value: undefined, done: true })
        return new Promise((resolve, reject) => { waiting = { resolve, reject } })
      },
      return: () => {
        subscription.unsubscribe()
        done = true
        return Promise.resolve({ value: undefined, done: true })
      },
    }
  }
}
