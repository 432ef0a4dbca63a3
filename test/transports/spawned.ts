/**
 * Servers a test file starts for itself (a configuration the shared servers of
 * scripts/servers.sh do not have: TLS, credentials), on free loopback ports, killed by `stopAll`.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { homedir } from 'node:os'
import { join } from 'node:path'

/** The nats-server scripts/servers.sh builds into its cache. */
export const NATS_SERVER = join(process.env['ORRERY_SERVER_CACHE'] ?? join(homedir(), '.cache', 'orrery', 'servers'), 'bin', 'nats-server')

/** Why such servers cannot run here, if they cannot. */
export const SPAWN_SKIP =
  process.env['ORRERY_SERVERS'] === 'none'
    ? 'ORRERY_SERVERS=none'
    : !existsSync(NATS_SERVER)
      ? `no ${NATS_SERVER} (bash scripts/servers.sh install nats)`
      : undefined

const started: ChildProcess[] = []

/** A port free now, on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** Starts `command` and resolves once it accepts TCP connections on `port` (10 s at most). */
export async function serve(command: string, args: readonly string[], port: number): Promise<ChildProcess> {
  const child = spawn(command, args, { stdio: 'ignore' })
  started.push(child)
  const end = Date.now() + 10_000
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (up) return child
    if (child.exitCode !== null || Date.now() > end) throw new Error(`${command} does not listen on ${port} (exit ${child.exitCode})`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/**
 * A redis-server on 127.0.0.1 with nothing on disk but in `dir`: `port` plain, or with `tlsPort`
 * TLS only (the plain port off); `args` adds to its configuration.
 */
export function serveRedis(dir: string, listen: { port: number } | { tlsPort: number }, args: readonly string[]): Promise<ChildProcess> {
  const ports = 'port' in listen ? ['--port', String(listen.port)] : ['--port', '0', '--tls-port', String(listen.tlsPort)]
  const port = 'port' in listen ? listen.port : listen.tlsPort
  return serve('redis-server', ['--bind', '127.0.0.1', ...ports, '--save', '', '--appendonly', 'no', '--dir', dir, ...args], port)
}

/** Kills every server started here. */
export function stopAll(): void {
  for (const child of started.splice(0)) child.kill('SIGKILL')
}
