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
   * Holds what clients send (read from no client, so nothing reaches the server) until `cut`: a
   * command sent meanwhile is on its way, unanswered, when the cut drops its connection.
   */
  hold(): void
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
  const holdOne = (client: Socket, upstream: Socket): void => {
    client.unpipe(upstream)
    client.pause()
  }
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
        upstream.destroy()
      })
      upstream.on('close', () => client.destroy())
      clients.set(client, upstream)
      client.pipe(upstream).pipe(client)
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
    restore: async () => {
      if (server !== undefined) return
      server = make()
      await listen(server, own)
    },
    close: stop,
  }
}
