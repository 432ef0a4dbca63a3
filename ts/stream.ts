/**
 * A stream of deliveries: an rxjs Observable (push, with operators) that is also an
 * AsyncIterable (pull). Iterating pauses the consumer in the core while the local queue is
 * full, so backpressure reaches the publisher instead of piling up in JS.
 */
import { Observable, type Observer, type Subscriber, type Subscription } from 'rxjs'

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
  /**
   * Where an error a subscriber's own callback threw goes (or a stream error it gave no error
   * callback for). Without it rxjs rethrows the error from a timer, which ends a Node process.
   */
  unhandled?(error: unknown): void
}

/** An rxjs Subscriber (an operator's, or `firstValueFrom`'s): it handles its own errors, so it is passed through. */
function isSubscriber(value: unknown): value is Subscriber<unknown> {
  if (value === null || typeof value !== 'object') return false
  const v = value as Record<string, unknown>
  return (
    typeof v['next'] === 'function' &&
    typeof v['error'] === 'function' &&
    typeof v['complete'] === 'function' &&
    typeof v['unsubscribe'] === 'function' &&
    typeof v['closed'] === 'boolean'
  )
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

  /**
   * Subscribes like any Observable, except that a callback that throws is reported to the
   * source (the bus's `subscriber-error` event) instead of being rethrown by rxjs from a timer,
   * which would end the process; delivery to it and to the others goes on.
   */
  override subscribe(observerOrNext?: Partial<Observer<T>> | ((value: T) => void) | null): Subscription
  /** @deprecated Use an observer object instead of several callbacks (as rxjs 8 will). */
  override subscribe(next?: ((value: T) => void) | null, error?: ((error: unknown) => void) | null, complete?: (() => void) | null): Subscription
  override subscribe(
    observerOrNext?: Partial<Observer<T>> | ((value: T) => void) | null,
    error?: ((error: unknown) => void) | null,
    complete?: (() => void) | null,
  ): Subscription {
    const report = this.consumer.unhandled?.bind(this.consumer)
    if (!report || isSubscriber(observerOrNext)) return super.subscribe(observerOrNext as Partial<Observer<T>>)
    let next: ((value: T) => void) | undefined
    let fail: ((error: unknown) => void) | undefined
    let done: (() => void) | undefined
    if (typeof observerOrNext === 'function') {
      next = observerOrNext
      fail = error ?? undefined
      done = complete ?? undefined
    } else if (observerOrNext) {
      const observer = observerOrNext
      next = observer.next && ((value: T) => observer.next!(value))
      fail = observer.error && ((e: unknown) => observer.error!(e))
      done = observer.complete && (() => observer.complete!())
    }
    return super.subscribe({
      next: next
        ? (value) => {
            try {
              next(value)
            } catch (thrown) {
              report(thrown)
            }
          }
        : () => {},
      error: (e) => {
        if (!fail) return report(e)
        try {
          fail(e)
        } catch (thrown) {
          report(thrown)
        }
      },
      complete: () => {
        try {
          done?.()
        } catch (thrown) {
          report(thrown)
        }
      },
    })
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
        return new Promise((resolve, reject) => {
          waiting = { resolve, reject }
        })
      },
      return: () => {
        subscription.unsubscribe()
        done = true
        return Promise.resolve({ value: undefined, done: true })
      },
    }
  }
}
