/**
 * Replicas on worker threads (`mesh.autoscale(type, { worker })`, Node, native engine): each is a
 * worker thread of its own that attaches to this Orrery's core (`Orrery.attach`), runs a mesh
 * whose registry is shared with this thread's (`threads: true`) and serves one agent of the type
 * (`serveAgents`, serve.ts). Its inbox is a channel of the shared core, so the autoscaler reads
 * its backlog as it reads an in-process replica's, and what it had not acknowledged when its
 * thread died is redelivered to whatever serves that inbox next.
 *
 * The thread and this one speak by `postMessage`: `attached` (its mesh's process id, before its
 * agent starts), `ready` (its agent runs), `failed` (it could not start: the error's code,
 * message and details), `crashed` (its agent crashed after it started), `alive` (from
 * `attached` on, once per heartbeat interval while its event loop turns); this thread sends
 * `drain` (out of routing, its inbox still served) and `stop` (a graceful shutdown of its mesh,
 * then the thread ends).
 *
 * A thread silent for its deadline (a handler holds its loop) is ended. Its silence is counted in
 * this thread's ticks, not in time: a stall of this thread's own loop, after which the thread's
 * signals are read only after the late tick, ends no thread.
 */
import { OrreryError, type ErrorCode } from '../errors.js'
import type { AgentState } from './runner.js'
import type { SpawnOptions } from './mesh.js'

/** The key of `workerData` under which a replica's thread finds what to serve. */
export const WORKER_DATA_KEY = 'orreryReplica'

/** Mesh options a replica's thread takes from the mesh that started it (plain data only). */
export interface ThreadMeshOptions {
  heartbeat?: Record<string, unknown>
  breaker?: Record<string, unknown>
  shutdownTimeout?: number
}

/** What a replica's thread is given (`workerData[WORKER_DATA_KEY]`). */
export interface ReplicaData {
  /** The core to attach to (`orrery.share()`). */
  handle: number
  type: string
  id: string
  spawn: SpawnOptions
  mesh: ThreadMeshOptions
  /** How often the thread says it is `alive`, in ms (the mesh's heartbeat interval). */
  alive: number
}

/** How a replica watches its thread's loop: it is `alive` each `interval` ms, ended after `deadline` ms silent. */
export interface Liveness {
  interval: number
  deadline: number
}

/** Messages between a replica's thread and the thread that started it. */
export type ToParent =
  | { t: 'attached'; process: string }
  | { t: 'ready'; process: string }
  | { t: 'failed'; error: { code: string; message: string; details: Record<string, unknown> } }
  | { t: 'crashed'; reason: string }
  | { t: 'alive' }
export type ToReplica = { t: 'drain' } | { t: 'stop'; timeout: number }

/** The part of a Node `Worker` a replica uses. */
export interface WorkerThread {
  postMessage(message: ToReplica): void
  on(event: 'message', listener: (message: ToParent) => void): unknown
  on(event: 'error', listener: (error: Error) => void): unknown
  on(event: 'exit', listener: (code: number) => void): unknown
  terminate(): Promise<number>
}

/** Starts a worker thread running `module` with `workerData` (given by the Node entry). */
export type StartThread = (module: string | URL, workerData: Record<string, unknown>) => WorkerThread

let startThread: StartThread | undefined

/** @internal The Node entry gives the way to start worker threads; elsewhere there is none. */
export function useWorkerThreads(start: StartThread): void {
  startThread = start
}

/** Whether this runtime can start worker threads (the Node entry). */
export function canStartThreads(): boolean {
  return startThread !== undefined
}

/** What a replica tells its mesh. */
export interface ReplicaHost {
  /** Its thread's agent started, stopped or crashed (mesh events). */
  report(event: { type: 'started' | 'stopped'; agent: string } | { type: 'crashed'; agent: string; reason: string; error: string }): void
  /**
   * Its thread ended (`asked`: by a stop): the agents its mesh had registered here go at once
   * (not at a heartbeat deadline).
   */
  gone(process: string, asked: boolean): void
}

/** How long past a graceful stop's timeout a thread may take to end before it is terminated. */
const STOP_MARGIN_MS = 2_000
/** How long a thread may take to start its agent (load its module, define, spawn) before it is terminated. */
export const START_TIMEOUT_MS = 30_000

/**
 * One replica of a type on a worker thread, as the autoscaler sees an agent: its id, state, and
 * whether it drains. Its handlers in flight are not counted here: they hold deliveries of its
 * inbox (pending there until acknowledged), which the autoscaler reads before it stops it.
 */
export class WorkerReplica {
  state: AgentState = 'starting'
  draining = false
  readonly inFlight = 0
  /** Its thread's mesh process id, once its mesh is attached. */
  process: string | undefined
  /** Resolves once its agent runs; rejects if the thread could not start it. */
  readonly started: Promise<void>
  private readonly thread!: WorkerThread
  /** Resolves with its thread's exit code once the thread ended. */
  readonly exited: Promise<number>
  private stopAsked = false
  /** Why its thread failed or was ended, when it knows. */
  private failure: OrreryError | undefined
  /** Signals from its thread since the last tick of its watch. */
  private signals = 0
  /** The watch's ticks in a row without a signal. */
  private silent = 0
  private watch: ReturnType<typeof setInterval> | undefined

  constructor(
    host: ReplicaHost,
    readonly id: string,
    readonly type: string,
    module: string | URL,
    data: ReplicaData,
    liveness: Liveness,
  ) {
    if (startThread === undefined)
      throw new OrreryError('UNSUPPORTED', "replicas on worker threads need Node (the package's Node entry)", { details: { option: 'worker' } })
    let ready: () => void = () => {}
    let refused: (error: OrreryError) => void = () => {}
    this.started = new Promise<void>((resolve, reject) => {
      ready = resolve
      refused = reject
    })
    // Nobody may wait (a revived replica's start is awaited, a late failure is the exit's).
    this.started.catch(() => {})
    /** Whether `started` settled (its agent ran, or the thread failed or ended first). */
    let settled = false
    const where = { agent: id, worker: String(module) }
    try {
      this.thread = startThread(module, { [WORKER_DATA_KEY]: data })
    } catch (error) {
      // Node refuses the module's name (a relative path without ./) or the data at once.
      throw new OrreryError(
        'INVALID_OPTION',
        `worker: the worker thread of agent ${id} could not start: ${error instanceof Error ? error.message : String(error)}`,
        {
          cause: error,
          details: { option: 'worker', ...where },
        },
      )
    }
    const startTimer = setTimeout(() => {
      this.failure ??= new OrreryError('TIMEOUT', `the worker thread of agent ${id} did not start its agent within ${START_TIMEOUT_MS} ms`, { details: where })
      void this.thread.terminate()
    }, START_TIMEOUT_MS)
    this.thread.on('message', (message) => {
      this.signals++
      if (message?.t === 'attached') {
        this.process = message.process
        this.watchLoop(liveness)
      } else if (message?.t === 'ready') {
        clearTimeout(startTimer)
        this.process = message.process
        if (this.state === 'starting') this.state = 'running'
        settled = true
        this.watchLoop(liveness)
        host.report({ type: 'started', agent: id })
        ready()
      } else if (message?.t === 'failed') {
        const { code, message: text, details } = message.error
        this.failure = new OrreryError(code as ErrorCode, text, { details: { ...details, ...where } })
      } else if (message?.t === 'crashed') {
        this.failure = new OrreryError('AGENT_FAILED', `agent ${id} crashed on its worker thread: ${message.reason}`, { details: { agent: id } })
      }
    })
    this.thread.on('error', (error) => {
      this.failure ??= new OrreryError('AGENT_FAILED', `the worker thread of agent ${id} failed: ${error.message}`, { cause: error, details: where })
    })
    this.exited = new Promise<number>((resolve) => {
      this.thread.on('exit', (code) => {
        clearTimeout(startTimer)
        clearInterval(this.watch)
        const was = this.state
        // Asked to stop: stopped, even if it had to be terminated past its timeout.
        this.state = this.stopAsked ? 'stopped' : 'crashed'
        try {
          if (this.process !== undefined) host.gone(this.process, this.stopAsked)
          if (!settled) {
            settled = true
            refused(
              this.failure ??
                new OrreryError('AGENT_FAILED', `the worker thread of agent ${id} ended (exit code ${code}) before its agent started`, { details: where }),
            )
          } else if (this.stopAsked) {
            host.report({ type: 'stopped', agent: id })
          } else if (was !== 'stopped' && was !== 'crashed') {
            const reason = this.failure?.message ?? `its worker thread ended (exit code ${code})`
            host.report({ type: 'crashed', agent: id, reason, error: this.failure?.code ?? 'AGENT_FAILED' })
          }
        } finally {
          resolve(code)
        }
      })
    })
  }

  /**
   * Ends its thread once it has said nothing for `deadline` ms of this thread's ticks (whatever
   * its agent's state: a drained replica is out of the registry, so its agent's beats are not
   * watched there). Not while it stops: a stop has its own deadline.
   */
  private watchLoop({ interval, deadline }: Liveness): void {
    if (this.watch !== undefined) return
    // At least 3: one late signal, or a stall here (its tick runs before the signals queued meanwhile are read), is not silence.
    const ticks = Math.max(3, Math.ceil(deadline / interval))
    this.watch = setInterval(() => {
      if (this.signals > 0) {
        this.signals = 0
        this.silent = 0
      } else if (++this.silent >= ticks && !this.stopAsked) {
        clearInterval(this.watch)
        this.kill(
          new OrreryError('TIMEOUT', `agent ${this.id} held its worker thread past its heartbeat deadline (${deadline} ms without a turn of its event loop)`, {
            details: { agent: this.id, deadline },
          }),
        )
      }
    }, interval)
    ;(this.watch as { unref?: () => void }).unref?.()
  }

  /** Out of routing; its thread goes on serving its inbox until it is stopped. */
  drain(): void {
    if (this.state !== 'running' || this.draining) return
    this.draining = true
    this.thread.postMessage({ t: 'drain' })
  }

  /** Stops its agent gracefully (its handlers get `timeout` ms), then its thread; terminated past that. */
  async stop(timeout: number): Promise<void> {
    if (this.state === 'stopped' || this.state === 'crashed') return
    this.stopAsked = true
    this.state = 'stopping'
    this.thread.postMessage({ t: 'stop', timeout })
    let timer: ReturnType<typeof setTimeout> | undefined
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeout + STOP_MARGIN_MS)
    })
    const ended = await Promise.race([this.exited, late])
    clearTimeout(timer)
    if (ended === 'late') {
      // Not ended in time: the thread is terminated (what it had not acknowledged is redelivered,
      // or dead-lettered if delivered its maximum times).
      await this.thread.terminate()
      await this.exited
    }
  }

  /**
   * Ends its thread at once (its mesh is closing, or `why`: its loop is wedged): unacknowledged
   * work stays in its inbox (dead-lettered if delivered its maximum times).
   */
  kill(why?: OrreryError): void {
    if (this.state === 'stopped' || this.state === 'crashed') return
    this.failure ??= why
    void this.thread.terminate()
  }
}
