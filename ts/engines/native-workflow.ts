/**
 * The native workflow core. The napi class owns a core's lifetime and its cold calls; the calls
 * a run makes at every step are plain functions that read the core's handle and their arguments
 * from this thread's workflow call block and leave their result in slot 0 (a class method cost
 * ~300 ns a call, a seq-3 run makes about 17, and a call through the block costs tens of ns).
 * Records are written into a buffer JS owns and handed over once; what a drain returns is a
 * copy of the part in use.
 */
import type { WorkflowCore } from './backend.js'
import { callBlock } from './call-block.js'
import { NATIVE_FAILURES } from './failures.js'
import { adaptWorkflows, drainBuffer, EMPTY, fitted, type RawWorkflows } from './workflow.js'

/** The class side of a native workflow core: its handle and its cold calls. */
export interface NativeWorkflowsHandle {
  readonly handle: number
  define(program: Float64Array): number
  due(now: number): Float64Array
  outstanding(run: number): void
  useOut(out: Float64Array): void
  close(): void
}

/** The workflow part of `bindings/node` (its generated `binding.d.cts` must satisfy this). */
export interface NativeWorkflowBinding {
  NativeWorkflows: new () => NativeWorkflowsHandle
  workflowUseCallBlock(block: Float64Array): void
  workflowStart(): void
  workflowComplete(): void
  workflowDecide(): void
  workflowSignal(): void
  workflowCancel(): void
  workflowFire(): void
  workflowNextDeadline(): void
  workflowRelease(): void
  workflowDrain(): void
}

export function createNativeWorkflows(b: NativeWorkflowBinding): WorkflowCore {
  return adaptWorkflows(() => rawWorkflows(b, new b.NativeWorkflows()), NATIVE_FAILURES)
}

function rawWorkflows(b: NativeWorkflowBinding, w: NativeWorkflowsHandle): RawWorkflows {
  const call = callBlock(b, 'workflow', (block) => b.workflowUseCallBlock(block))
  const h = w.handle
  /** Calls `fn` with this core's handle and up to four arguments in the call block: its result. */
  const hot = (fn: () => void, a = 0, c = 0, d = 0, e = 0): number => {
    call[0] = h
    call[1] = a
    call[2] = c
    call[3] = d
    call[4] = e
    fn()
    return call[0]!
  }
  let out = drainBuffer()
  w.useOut(out)
  return {
    define: (program) => w.define(program),
    start: (def, seed, now, deadline) => hot(b.workflowStart, def, seed, now, deadline),
    complete: (run, token, outcome, now) => hot(b.workflowComplete, run, token, outcome, now) === 1,
    decide: (run, token, value, now) => hot(b.workflowDecide, run, token, value, now) === 1,
    signal: (run, index, now) => void hot(b.workflowSignal, run, index, now),
    cancel: (run, now) => void hot(b.workflowCancel, run, now),
    fire: (run, timer, now) => hot(b.workflowFire, run, timer, now) === 1,
    due: (now) => w.due(now),
    nextDeadline: () => hot(b.workflowNextDeadline),
    outstanding: (run) => w.outstanding(run),
    release: (run) => void hot(b.workflowRelease, run),
    drain(view) {
      for (;;) {
        call[0] = h
        b.workflowDrain()
        const n = call[0]!
        if (n === 0) return EMPTY
        if (n > 0) {
          const records = view ? out.subarray(0, n) : out.slice(0, n)
          const next = fitted(out, n)
          if (next !== out) {
            out = next
            w.useOut(out)
          }
          return records
        }
        out = fitted(out, -n)
        w.useOut(out)
      }
    },
    close: () => w.close(),
  }
}
