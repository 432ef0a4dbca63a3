/**
 * The API's JSON as the CLI reads it: the views `Control` returns (ts/control/views.ts), which the
 * HTTP API sends as they are.
 */
import type { WorkflowEvent } from '../workflows/history.js'

export type { AgentView, DeadLetterView, MessageView, Overview, RunDetail, RunView } from '../control/views.js'

/** One history event of a run (runs.ts prints it by its type). */
export type RunEvent = WorkflowEvent
