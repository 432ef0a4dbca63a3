/**
 * The native workflow core: a napi class whose methods are the WorkflowCore calls (see
 * workflow.ts for why no call block). `drain` and `due` come back as `Float64Array`s over memory
 * the addon hands to JS, without a copy.
 */
import type { WorkflowCore } from './backend.js'
import { NATIVE_FAILURES } from './failures.js'
import { adaptWorkflows } from './workflow.js'

/** The workflow class of `bindings/node` (its generated `binding.d.cts` must satisfy this). */
export interface NativeWorkflowBinding {
  NativeWorkflows: new () => WorkflowCore
}

export function createNativeWorkflows(b: NativeWorkflowBinding): WorkflowCore {
  // The instance is the raw core: same names, and `close` releases its state at once.
  return adaptWorkflows(() => new b.NativeWorkflows(), NATIVE_FAILURES)
}
