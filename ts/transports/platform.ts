/**
 * Where this process's transports run, as its entry says: `node` (TCP sockets: every kind) or
 * `browser` (a page or a worker, which opens WebSocket connections only: a nats transport with
 * `ws://` or `wss://` servers). config.ts refuses what the platform cannot do before anything loads.
 */
export type Platform = 'node' | 'browser'

let current: Platform = 'node'

/** Called by the browser entry (ts/browser.ts) as it loads. */
export function usePlatform(value: Platform): void {
  current = value
}

export function platform(): Platform {
  return current
}
