/**
 * The spare servers (scripts/servers.sh `redis-spare` on 16380, `nats-spare` on 14224, `kafka-spare`
 * on 19094) for the tests that stop or restart their server, so the shared servers every other test file uses stay up.
 *
 * A test takes a spare with `withSpare(name, body)`: the server is started for this process (or
 * joined), and the spare is this test's alone while `body` runs, across processes (the native and
 * wasm projects run the same file at the same time: one's outage must not land in the other's
 * test). Node only: the browser project skips these files.
 */
type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? {}

export type Spare = 'redis-spare' | 'nats-spare' | 'kafka-spare'

/** Where each spare listens (scripts/servers.sh `env`; Kafka's is a broker list, `host:port`). */
export const SPARE_URL: Record<Spare, string> = {
  'redis-spare': 'redis://127.0.0.1:16380',
  'nats-spare': 'nats://127.0.0.1:14224',
  'kafka-spare': '127.0.0.1:19094',
}

/** Why the spare tests do not run here (undefined: they run). */
export const SPARE_SKIP: string | undefined =
  env['ORRERY_SERVERS'] === 'none'
    ? 'ORRERY_SERVERS=none: no test servers on this run'
    : env['ORRERY_SERVERS'] === 'external'
      ? 'ORRERY_SERVERS=external: the tests that stop a server need scripts/servers.sh to run their spare'
      : env['ORRERY_NO_RESTART'] === '1'
        ? 'ORRERY_NO_RESTART=1'
        : undefined

export interface Run {
  status: number | null
  stdout: string
  stderr: string
}

/**
 * Runs scripts/servers.sh with `args` from the repository's root, without blocking this process
 * (its clients see the server go and come back as they would in production), and with every
 * descriptor past stdio closed: a server it starts must not inherit the heavy-command lock of
 * `flock`, which it would then hold for as long as it runs.
 */
export async function servers(...args: string[]): Promise<Run> {
  // Node-only modules, loaded here: this file also loads (and skips) in a browser page.
  const { spawn } = await import('node:child_process')
  const { fileURLToPath } = await import('node:url')
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const closeInherited = 'for fd in $(ls /proc/$$/fd); do if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi; done 2>/dev/null; exec bash scripts/servers.sh "$@"'
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', closeInherited, 'servers', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    child.on('error', (error) => resolve({ status: null, stdout, stderr: `${stderr}${error.message}` }))
    child.on('close', (status) => resolve({ status, stdout, stderr }))
  })
}

/** servers.sh `args`, failing with its output if it fails. */
export async function mustRun(...args: string[]): Promise<string> {
  const run = await servers(...args)
  if (run.status !== 0) throw new Error(`scripts/servers.sh ${args.join(' ')} failed (${run.status}):\n${run.stdout}${run.stderr}`)
  return run.stdout
}

/** servers.sh's state folder (its pid files, and the spares' test locks). */
function stateDir(os: typeof import('node:os')): string {
  return env['ORRERY_SERVER_STATE'] ?? `${env['TMPDIR'] ?? os.tmpdir()}/orrery-servers-${os.userInfo().uid}`
}

/**
 * Holds an exclusive lock on `spare` (a file next to servers.sh's state) until the returned
 * function is called: a `flock` child holds it, so a process that dies lets it go.
 */
async function lock(spare: Spare): Promise<() => void> {
  const { spawn } = await import('node:child_process')
  const { mkdirSync } = await import('node:fs')
  const dir = stateDir(await import('node:os'))
  mkdirSync(dir, { recursive: true })
  // `flock` prints once it holds the lock, then waits for its stdin to close.
  const child = spawn('flock', [`${dir}/${spare}.test.lock`, '-c', 'echo held; exec cat >/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
  await new Promise<void>((resolve, reject) => {
    let err = ''
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString()
    })
    child.stdout.once('data', () => resolve())
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`flock on ${spare} exited (${code}): ${err}`)))
  })
  child.removeAllListeners('exit')
  return () => child.stdin.end()
}

/**
 * Runs `body` with `spare` running and this test's alone: started (or joined) for this process,
 * and locked against every other test that stops or restarts it. The server is left running for
 * the next such test; servers.sh stops it once no process that started it is alive.
 */
export async function withSpare<T>(spare: Spare, body: (url: string) => Promise<T>): Promise<T> {
  const unlock = await lock(spare)
  try {
    await mustRun('start', '--for', String(process.pid), spare)
    return await body(SPARE_URL[spare])
  } finally {
    // Running again for the next test even if this one left it stopped.
    await servers('start', '--keep', '--for', String(process.pid), spare)
    unlock()
  }
}

/**
 * Kills `spare` with SIGKILL (a crash: nothing flushed, no goodbye to clients) and waits until it
 * is gone; `mustRun('start', '--keep', ...)` brings it back on its data. Call it inside `withSpare`.
 */
export async function killSpare(spare: Spare): Promise<void> {
  const { readFileSync } = await import('node:fs')
  const pid = Number(readFileSync(`${stateDir(await import('node:os'))}/${spare}.pid`, 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no pid for ${spare}`)
  process.kill(pid, 'SIGKILL')
  const deadline = Date.now() + 10_000
  for (;;) {
    try {
      process.kill(pid, 0)
    } catch {
      return
    }
    if (Date.now() > deadline) throw new Error(`${spare} (pid ${pid}) still alive 10 s after SIGKILL`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/**
 * Sends `signal` to `spare`'s process: SIGSTOP freezes it (its sockets stay open and take what is
 * sent, unanswered, until SIGCONT), SIGCONT wakes it. Call it inside `withSpare`, and send
 * SIGCONT in a `finally`.
 */
export async function signalSpare(spare: Spare, signal: 'SIGSTOP' | 'SIGCONT'): Promise<void> {
  const { readFileSync } = await import('node:fs')
  const pid = Number(readFileSync(`${stateDir(await import('node:os'))}/${spare}.pid`, 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no pid for ${spare}`)
  process.kill(pid, signal)
}

/** Stops this process's use of `spare` (an afterAll): servers.sh stops it once no user is left. */
export async function leaveSpare(spare: Spare): Promise<void> {
  // Under the lock: a test of another process may have the spare stopped and be about to start it.
  const unlock = await lock(spare)
  try {
    await servers('stop', '--for', String(process.pid), spare)
  } finally {
    unlock()
  }
}
