/**
 * A stream of deliveries: an rxjs Observable (push, with operators) that is also an
 * AsyncIterable (pull). Iterating pauses the consumer in the core while the local queue is
 * full, so backpressure reaches the publisher instead of piling up in JS.
 */
import { Observable, type Subscriber } from 'rxjs'

/** What a stream needs from the consumer behind it. */
export interface StreamSource<T> {
  /**
   * Starts the consumer; `sink` receives each item. Returns the teardown. `exclusive` asks for a
   * consumer of its own (an iterator pauses and resumes it, which must not affect others).
   */
  start(sink: Subscriber<T>, exclusive: boolean): () => void
  /** Pauses or resumes the consumer in the core. */
  setPaused(paused: boolean): void
}

/** Items an iterator holds before it pauses its consumer. */
const ITERATOR_HIGH_WATER = 256

export class Stream<T> extends Observable<T> implements AsyncIterable<T> {
  private readonly consumer: StreamSource<T>

  constructor(consumer: StreamSource<T>) {
    super((sink) => consumer.start(sink, false))
    this.consumer = consumer
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    const queue: T[] = []
    let waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined
    let failed: { error: unknown } | undefined
    let done = false
    let paused = false
    const subscription = new Observable<T>((sink) => this.consumer.start(sink, true)).subscribe({
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
          this.consumer.setPaused(true)
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
            this.consumer.setPaused(false)
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
