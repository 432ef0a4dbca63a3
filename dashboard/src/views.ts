/**
 * The Control's views (ts/control/views.ts) as the dashboard reads them: plain JSON, the same
 * whether they came over HTTP, from a Control in the page or from an exported snapshot.
 */
export type {
  AgentView,
  ChannelView,
  ControlEvent,
  ControlSnapshot,
  DeadLetterView,
  DefinitionView,
  EntryView,
  GroupView,
  MessageView,
  NamespaceView,
  Overview,
  RunDetail,
  RunView,
} from '../../ts/control/views.js'
export type { AgentState, BreakerState, Health, RunState, RunStatus, WorkflowDefinition, WorkflowEvent } from '../../ts/browser.js'
