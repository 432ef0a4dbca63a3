/**
 * The native workflow core: a napi class whose methods are the WorkflowCore calls (see
 * workflow.ts for why no call block), except `drain`: records are written into a buffer JS owns
 * and handed over once, and what a drain returns is a copy of the part in use. A `Float64Array`
 * made by the addon per drain cost ~2 µs (an external buffer with a finalizer), most of a
 * 3-step run's time; the copy costs tens of ns.
 */
import type { WorkflowCore } from './backend.js'
import { NATIVE_FAILURES } from './failures.js'
import { adaptWorkflows, directCalls, type RawWorkflows } from './workflow.js'

export interface NativeWorkflowsHandle extends Omit<RawWorkflows, 'drain'> {
  useOut(out: Float64Array): void
  /** How many numbers it wrote into the `useOut` buffer, or minus the length it needs. */
  drainInto(): number
}

/** The workflow class of `bindings/node` (its generated `binding.d.cts` must satisfy this). */
export interface NativeWorkflowBinding {
  NativeWorkflows: new () => NativeWorkflowsHandle
}

/** Room for 128 records to start with; it grows for a larger drain and shrinks after it. */
const OUT_WORDS = 1024

const EMPTY = new Float64Array(0)

export function createNativeWorkflows(b: NativeWorkflowBinding): WorkflowCore {
  return adaptWorkflows(() => rawWorkflows(new b.NativeWorkflows()), NATIVE_FAILURES)
}

function rawWorkflows(w: NativeWorkflowsHandle): RawWorkflows {
  let out = new Float64Array(OUT_WORDS)
  w.useOut(out)
  return {
    ...directCalls(w),
    drain() {
      for (;;) {
        const n = w.drainInto()
        if (n === 0) return EMPTY
        if (n > 0) {
          const records = out.slice(0, n)
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
