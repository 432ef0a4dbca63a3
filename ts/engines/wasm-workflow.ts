/**
 * The wasm workflow core: a wasm_bindgen class whose methods are the WorkflowCore calls (see
 * workflow.ts for why no `io` buffer). `drain` and `due` come back as `Float64Array` copies out
 * of the instance's memory, so they stay valid after later calls.
 */
import type { WorkflowCore } from './backend.js'
import type { EngineFailures } from './failures.js'
import { adaptWorkflows, directCalls, type RawWorkflows } from './workflow.js'

export interface WasmWorkflowsHandle extends Omit<RawWorkflows, 'close' | 'drain'> {
  drain(): Float64Array
  free(): void
}

export type WasmWorkflowsClass = new () => WasmWorkflowsHandle

export function createWasmWorkflows(cls: WasmWorkflowsClass, failures: EngineFailures): WorkflowCore {
  return adaptWorkflows(() => rawWorkflows(new cls()), failures)
}

function rawWorkflows(w: WasmWorkflowsHandle): RawWorkflows {
  return {
    ...directCalls(w),
    // A copy out of the instance's memory either way.
    drain: () => w.drain(),
    close() {
      try {
        w.free()
      } catch {
        /* poisoned: nothing left to release */
      }
    },
  }
}
