/**
 * The wasm workflow core: a wasm_bindgen class whose methods are the WorkflowCore calls (see
 * workflow.ts). `due` comes back as a `Float64Array` copy; drained records stay in the instance's
 * memory and are copied into a buffer JS owns (a copy made per drain was an ArrayBuffer each
 * time, whose external memory set off a scavenge every ~40 runs). A view handed to the pump is of
 * that buffer, never of the instance's memory, which a store write may grow and detach.
 */
import type { WorkflowCore } from './backend.js'
import type { EngineFailures } from './failures.js'
import { adaptWorkflows, directCalls, drainBuffer, EMPTY, fitted, type RawWorkflows } from './workflow.js'

export interface WasmWorkflowsHandle extends Omit<RawWorkflows, 'close' | 'drain'> {
  drainShared(): number
  drainedPtr(): number
  free(): void
}

export type WasmWorkflowsClass = new () => WasmWorkflowsHandle

export function createWasmWorkflows(cls: WasmWorkflowsClass, memory: WebAssembly.Memory, failures: EngineFailures): WorkflowCore {
  return adaptWorkflows(() => rawWorkflows(new cls(), memory), failures)
}

function rawWorkflows(w: WasmWorkflowsHandle, memory: WebAssembly.Memory): RawWorkflows {
  let out = drainBuffer()
  return {
    ...directCalls(w),
    drain(view) {
      const n = w.drainShared()
      if (n === 0) return EMPTY
      const records = new Float64Array(memory.buffer, w.drainedPtr(), n)
      if (!view) return records.slice()
      out = fitted(out, n)
      out.set(records)
      return out.subarray(0, n)
    },
    close() {
      try {
        w.free()
      } catch {
        /* poisoned: nothing left to release */
      }
    },
  }
}
