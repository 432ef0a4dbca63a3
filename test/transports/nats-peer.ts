/**
 * The Node side of test/transports/nats-ws.test.ts: test/fixtures/nats-peer.mjs started as a child
 * process on the built package, joined to NATS over TCP. Node tests call these functions directly;
 * the browser project reaches them through vitest's browser commands (vitest.config.ts), which
 * run here, in vitest's own process, so a page can talk to a Node process through the server.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const FIXTURE = fileURLToPath(new URL('../fixtures/nats-peer.mjs', import.meta.url))

/** A line the peer printed: `ready`, `seen` (a message of `<prefix>page`), `stopped`. */
export type PeerLine = Record<string, unknown> & { event: string; pid: number }

/** How a peer ended, and everything it said. */
export interface PeerEnd {
  readonly code: number | null
  readonly lines: PeerLine[]
  readonly stderr: string
}

interface Peer {
  readonly proc: ChildProcess
  readonly lines: PeerLine[]
  stderr: string
  readonly exited: Promise<number | null>
}

const peers = new Map<number, Peer>()
let reaping = false

/**
 * Starts a peer bound to `<prefix>*` on the NATS server at `url` (nats://), on `engine`; resolves
 * with its pid once it is ready (consuming, responding, subscribed).
 */
export async function startPeer(url: string, prefix: string, engine = 'native', readyMs = 20_000, strong?: string): Promise<number> {
  if (!reaping) {
    reaping = true
    // A test that failed before stopping its peer leaves no process behind.
    process.once('exit', () => {
      for (const p of peers.values()) p.proc.kill('SIGKILL')
    })
  }
  const proc = spawn(process.execPath, [FIXTURE, url, prefix, ...(strong === undefined ? [] : [strong])], {
    env: { ...process.env, ORRERY_ENGINE: engine },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const peer: Peer = { proc, lines: [], stderr: '', exited: new Promise((resolve) => proc.on('close', (code) => resolve(code))) }
  let out = ''
  proc.stdout!.setEncoding('utf8')
  proc.stdout!.on('data', (chunk: string) => {
    out += chunk
    const complete = out.split('\n')
    out = complete.pop()!
    for (const line of complete) peer.lines.push(JSON.parse(line) as PeerLine)
  })
  proc.stderr!.setEncoding('utf8')
  proc.stderr!.on('data', (chunk: string) => {
    peer.stderr += chunk
  })
  peers.set(proc.pid!, peer)
  const deadline = Date.now() + readyMs
  while (!peer.lines.some((l) => l.event === 'ready')) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL')
      peers.delete(proc.pid!)
      throw new Error(`the NATS peer (${FIXTURE}) was not ready (exit ${proc.exitCode}): ${peer.stderr.slice(-2000)}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return proc.pid!
}

/** What peer `pid` printed so far. */
export function peerLines(pid: number): PeerLine[] {
  return [...(peers.get(pid)?.lines ?? [])]
}

/** Asks peer `pid` to shut down and waits for it (killed after `ms`); says how it ended. */
export async function stopPeer(pid: number, ms = 20_000): Promise<PeerEnd> {
  const peer = peers.get(pid)
  if (peer === undefined) throw new Error(`no NATS peer ${pid}`)
  peer.proc.stdin!.end('stop\n')
  const timer = setTimeout(() => peer.proc.kill('SIGKILL'), ms)
  const code = await peer.exited
  clearTimeout(timer)
  peers.delete(pid)
  return { code, lines: peer.lines, stderr: peer.stderr }
}
