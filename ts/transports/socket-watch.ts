/**
 * The TCP sockets one connect attempt opens, so that a failed attempt leaves none open. nats.js
 * (`@nats-io/transport-node` 3.4) does not close them itself: when its connect timeout fires while
 * the socket is still connecting (an address that never answers) or waiting for the server's INFO
 * (a server that accepts the connection and never writes), the socket stays open after `connect`
 * rejected, and keeps the process alive. Sockets are told apart by the async context they are made
 * in (Node's `net.client.socket` diagnostics channel read with an AsyncLocalStorage), so a socket
 * another connection makes meanwhile is never touched. Node only: elsewhere nothing is watched.
 */
import type { AsyncLocalStorage } from 'node:async_hooks'
import type { Socket } from 'node:net'

export interface SocketWatch {
  /** Runs `attempt`: every client socket made in its async context, however deep, is this watch's. */
  run<T>(attempt: () => Promise<T>): Promise<T>
  /**
   * Destroys every socket the attempt made, and from now on each one it still makes (a client
   * going on to its next server) as soon as it is made.
   */
  closeAll(): void
  /** The attempt is over: nothing more is watched (a connection that worked keeps its sockets). */
  end(): void
}

interface Attempt {
  readonly sockets: Set<Socket>
  closing: boolean
  ended: boolean
}

interface Hooks {
  readonly storage: AsyncLocalStorage<Attempt>
  readonly channel: { subscribe(f: (message: unknown) => void): void; unsubscribe(f: (message: unknown) => void): void }
}

let hooks: Promise<Hooks | undefined> | undefined
/** Attempts under way: the channel is listened to, and the storage enabled, only while there are some. */
let watching = 0

function load(): Promise<Hooks | undefined> {
  // Specifiers bundlers do not follow: this module is only ever loaded by a Node transport driver.
  const names = ['node:async_hooks', 'node:diagnostics_channel']
  hooks ??= Promise.all(names.map((n) => import(/* @vite-ignore */ n))).then(
    ([asyncHooks, diagnostics]) => ({
      storage: new (asyncHooks as typeof import('node:async_hooks')).AsyncLocalStorage<Attempt>(),
      channel: (diagnostics as typeof import('node:diagnostics_channel')).channel('net.client.socket') as unknown as Hooks['channel'],
    }),
    () => undefined,
  )
  return hooks
}

/** Destroyed on the next turn: `net.connect` starts connecting after it announced the socket. */
const destroySoon = (socket: Socket): void => void setImmediate(() => socket.destroy())

/** A client socket was made: it belongs to the attempt whose async context made it, if any. */
function made(h: Hooks, message: unknown): void {
  const attempt = h.storage.getStore()
  const socket = (message as { socket?: Socket }).socket
  if (attempt === undefined || attempt.ended || socket === undefined) return
  if (attempt.closing) destroySoon(socket)
  else attempt.sockets.add(socket)
}
let listener: ((message: unknown) => void) | undefined

export async function watchSockets(): Promise<SocketWatch> {
  const h = await load()
  if (h === undefined) return { run: (f) => f(), closeAll: () => {}, end: () => {} }
  const attempt: Attempt = { sockets: new Set(), closing: false, ended: false }
  if (watching++ === 0) {
    listener = (message) => made(h, message)
    h.channel.subscribe(listener)
  }
  return {
    run: (f) => h.storage.run(attempt, f),
    closeAll: () => {
      if (attempt.ended) return
      attempt.closing = true
      for (const s of attempt.sockets) s.destroy()
      attempt.sockets.clear()
    },
    end: () => {
      if (attempt.ended) return
      attempt.ended = true
      attempt.sockets.clear()
      if (--watching > 0) return
      h.channel.unsubscribe(listener!)
      listener = undefined
      // While enabled, the storage costs every Promise of the process a little (Node 20).
      h.storage.disable()
    },
  }
}
