/**
 * A TCP proxy in front of a test server, so a test can take the broker away from one Orrery
 * (`cut`: every connection through it dropped, new ones refused) and give it back (`restore`:
 * the same port accepts again) while the shared server itself stays up for every other test.
 * Node only.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'

export interface TcpProxy {
  /** Where clients connect: `127.0.0.1:<port>`. */
  readonly address: string
  /** Drops every connection through the proxy and refuses new ones until `restore`. */
  cut(): Promise<void>
  /**
   * Holds what clients send (kept here, so nothing reaches the server) until `cut`: a command
   * sent meanwhile is on its way, unanswered, when the cut drops its connection.
   */
  hold(): void
  /** What clients sent while held and the proxy still holds (see `release`), as latin1 text. */
  heldText(): string
  /**
   * Passes on what each client sent while held: all of it, no longer holding; or, given `before`
   * (latin1), only what it sent before `before`, still holding the rest and what comes.
   */
  release(before?: string): void
  /**
   * Once a client sends `text` (latin1), stops passing the server's replies on (to every client,
   * until `cut`): what was sent reaches the server and is done, but its answers never come back.
   */
  dropRepliesAfter(text: string): void
  /** Accepts connections again on the same port. */
  restore(): Promise<void>
  /** Stops the proxy for good. */
  close(): Promise<void>
}

/** A proxy to `host:port` (a server URL's host and port). */
export async function proxyTo(host: string, port: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  /** The client side of each connection, and whether the proxy holds what clients send. */
  const clients = new Map<Socket, Socket>()
  let held = false
  /** What each held client sent, and the listener that keeps it. */
  const heldBy = new Map<Socket, { chunks: Buffer[]; keep: (chunk: Buffer) => void }>()
  const holdOne = (client: Socket, upstream: Socket): void => {
    if (heldBy.has(client)) return
    client.unpipe(upstream)
    const chunks: Buffer[] = []
    const keep = (chunk: Buffer): void => void chunks.push(chunk)
    heldBy.set(client, { chunks, keep })
    client.on('data', keep)
    // Unpiped, it was paused: read on, into the held data.
    client.resume()
  }
  /** Stops passing the server's replies on (see `dropRepliesAfter`). */
  const dropReplies = (): void => {
    for (const [client, upstream] of clients) {
      upstream.unpipe(client)
      // Unpiped, it was paused: read on, into nothing.
      upstream.on('data', () => {})
      upstream.resume()
    }
  }
  let trigger: string | undefined
  const make = (): Server =>
    createServer((client) => {
      const upstream = tcpConnect(port, host)
      for (const s of [client, upstream]) {
        sockets.add(s)
        s.on('close', () => sockets.delete(s))
        s.on('error', () => {})
      }
      client.on('close', () => {
        clients.delete(client)
        heldBy.delete(client)
        upstream.destroy()
      })
      upstream.on('close', () => client.destroy())
      clients.set(client, upstream)
      client.pipe(upstream).pipe(client)
      client.on('data', (chunk: Buffer) => {
        if (trigger === undefined || !chunk.toString('latin1').includes(trigger)) return
        trigger = undefined
        dropReplies()
      })
      if (held) holdOne(client, upstream)
    })
  const listen = (server: Server, at: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(at, '127.0.0.1', () => resolve((server.address() as { port: number }).port))
    })
  let server: Server | undefined = make()
  const own = await listen(server, 0)
  const stop = async (): Promise<void> => {
    const s = server
    server = undefined
    held = false
    heldBy.clear()
    trigger = undefined
    clients.clear()
    for (const socket of sockets) socket.destroy()
    sockets.clear()
    if (s !== undefined) await new Promise<void>((resolve) => s.close(() => resolve()))
  }
  return {
    address: `127.0.0.1:${own}`,
    cut: stop,
    hold: () => {
      held = true
      for (const [client, upstream] of clients) holdOne(client, upstream)
    },
    heldText: () => Buffer.concat([...heldBy.values()].flatMap((h) => h.chunks)).toString('latin1'),
    release: (before) => {
      for (const [client, upstream] of clients) {
        const hold = heldBy.get(client)
        if (hold === undefined) continue
        const all = Buffer.concat(hold.chunks)
        const at = before === undefined ? -1 : all.indexOf(before, 0, 'latin1')
        upstream.write(at === -1 ? all : all.subarray(0, at))
        hold.chunks.length = 0
        if (at !== -1) hold.chunks.push(all.subarray(at))
        else if (before === undefined) {
          client.off('data', hold.keep)
          heldBy.delete(client)
          client.pipe(upstream)
        }
      }
      if (before === undefined) held = false
    },
    dropRepliesAfter: (text) => {
      trigger = text
    },
    restore: async () => {
      if (server !== undefined) return
      server = make()
      await listen(server, own)
    },
    close: stop,
  }
}
