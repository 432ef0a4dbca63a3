/**
 * The wasm workflow core: a wasm_bindgen class whose methods are the WorkflowCore calls (see
 * workflow.ts for why no `io` buffer). `drain` and `due` come back as `Float64Array` copies out
 * of the instance's memory, so they stay valid after later calls.
 */
import type { WorkflowCore } from './backend.js'
import type { EngineFailures } from './failures.js'
import { adaptWorkflows, type RawWorkflows } from './workflow.js'

export interface WasmWorkflowsHandle extends Omit<RawWorkflows, 'close'> {
  free(): void
}

export type WasmWorkflowsClass = new () => WasmWorkflowsHandle

export function createWasmWorkflows(cls: WasmWorkflowsClass, failures: EngineFailures): WorkflowCore {
  return adaptWorkflows(() => rawWorkflows(new cls()), failures)
}

function rawWorkflows(w: WasmWorkflowsHandle): RawWorkflows {
  return {
    define: (program) => w.define(program),
    start: (def, seed, now, deadline) => w.start(def, seed, now, deadline),
    complete: (run, token, outcome, now) => w.complete(run, token, outcome, now),
    decide: (run, token, value, now) => w.decide(run, token, value, now),
    signal: (run, index, now) => w.signal(run, index, now),
    cancel: (run, now) => w.cancel(run, now),
    fire: (run, timer, now) => w.fire(run, timer, now),
    due: (now) => w.due(now),
    nextDeadline: () => w.nextDeadline(),
    outstanding: (run) => w.outstanding(run),
    drain: () => w.drain(),
    release: (run) => w.release(run),
    close() {
      try {
        w.free()
      } catch {
        /* poisoned: nothing left to release */
      }
    },
  }
}
