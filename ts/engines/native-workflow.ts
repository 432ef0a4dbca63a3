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
import { adaptWorkflows, type RawWorkflows } from './workflow.js'

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

/** Room for 128 records to start with; it grows for a larger drain and shrinks after it. */
const OUT_WORDS = 1024

const EMPTY = new Float64Array(0)

export function createNativeWorkflows(b: NativeWorkflowBinding): WorkflowCore {
  return adaptWorkflows(() => rawWorkflows(b, new b.NativeWorkflows()), NATIVE_FAILURES)
}

function rawWorkflows(b: NativeWorkflowBinding, w: NativeWorkflowsHandle): RawWorkflows {
  const call = callBlock(b, 'workflow', (block) => b.workflowUseCallBlock(block))
  const h = w.handle
  let out = new Float64Array(OUT_WORDS)
  w.useOut(out)
  return {
    define: (program) => w.define(program),
    start(def, seed, now, deadline) {
      call[0] = h
      call[1] = def
      call[2] = seed
      call[3] = now
      call[4] = deadline
      b.workflowStart()
      return call[0]!
    },
    complete(run, token, outcome, now) {
      call[0] = h
      call[1] = run
      call[2] = token
      call[3] = outcome
      call[4] = now
      b.workflowComplete()
      return call[0] === 1
    },
    decide(run, token, value, now) {
      call[0] = h
      call[1] = run
      call[2] = token
      call[3] = value
      call[4] = now
      b.workflowDecide()
      return call[0] === 1
    },
    signal(run, index, now) {
      call[0] = h
      call[1] = run
      call[2] = index
      call[3] = now
      b.workflowSignal()
    },
    cancel(run, now) {
      call[0] = h
      call[1] = run
      call[2] = now
      b.workflowCancel()
    },
    fire(run, timer, now) {
      call[0] = h
      call[1] = run
      call[2] = timer
      call[3] = now
      b.workflowFire()
      return call[0] === 1
    },
    due: (now) => w.due(now),
    nextDeadline() {
      call[0] = h
      b.workflowNextDeadline()
      return call[0]!
    },
    outstanding: (run) => w.outstanding(run),
    release(run) {
      call[0] = h
      call[1] = run
      b.workflowRelease()
    },
    drain(view) {
      for (;;) {
        call[0] = h
        b.workflowDrain()
        const n = call[0]!
        if (n === 0) return EMPTY
        if (n > 0) {
          const records = view ? out.subarray(0, n) : out.slice(0, n)
          // A buffer grown for a burst (a forEach of a million items) is given back once drains
          // are small again: it would otherwise hold the largest drain ever seen.
          if (out.length > OUT_WORDS && n * 8 <= out.length) {
            out = new Float64Array(Math.max(OUT_WORDS, n * 2))
            w.useOut(out)
          }
          return records
        }
        out = new Float64Array(Math.max(-n, out.length * 2))
        w.useOut(out)
      }
    },
    close: () => w.close(),
  }
}
