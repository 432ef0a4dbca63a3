/**
 * What the dashboard asks of an Orrery: the Control's methods, every one async, so one interface
 * covers a Control over HTTP (http-client.ts), a Control in the page (in-page-client.ts) and an
 * exported snapshot opened offline (snapshot-client.ts, read-only).
 */
import type {
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
  RunStatus,
  RunView,
} from './views.js'

/** Ends a live feed. */
export type Unsubscribe = () => void

export interface ControlClient {
  /** Where the views come from, shown in the header. */
  readonly source: string
  /** A snapshot: the buttons that would change something are not shown. */
  readonly readOnly: boolean

  overview(): Promise<Overview>
  agents(): Promise<AgentView[]>
  pauseAgent(id: string): Promise<void>
  resumeAgent(id: string): Promise<void>
  stopAgent(id: string): Promise<void>

  channels(): Promise<ChannelView[]>
  messages(channel: string, options?: { from?: number; limit?: number }): Promise<MessageView[]>
  publish(channel: string, payload: unknown): Promise<void>
  groups(): Promise<GroupView[]>
  deadLetters(channel: string, options?: { limit?: number }): Promise<DeadLetterView[]>
  replayDeadLetter(channel: string, seq: number): Promise<void>
  discardDeadLetter(channel: string, seq: number): Promise<void>

  namespaces(): Promise<NamespaceView[]>
  entries(ns: string, options?: { prefix?: string; limit?: number }): Promise<EntryView[]>

  definitions(): Promise<DefinitionView[]>
  runs(filter?: { status?: RunStatus; definition?: string; limit?: number }): Promise<RunView[]>
  run(id: string): Promise<RunDetail>
  /** Starts a run of the newest version of workflow `definition` (a name). */
  startRun(definition: string, input: unknown, options?: { id?: string }): Promise<RunView>
  signalRun(id: string, name: string, payload: unknown): Promise<void>
  cancelRun(id: string): Promise<void>

  /** Live: every event the Control sees (mesh, bus, runs); `onError` when the feed breaks. */
  events(onEvent: (event: ControlEvent) => void, onError?: (error: unknown) => void): Unsubscribe
  /** Live: a channel's messages from `from` on ('latest' when left out). */
  tail(channel: string, onMessage: (message: MessageView) => void, options?: { from?: 'latest' | 'earliest' | number }): Unsubscribe

  snapshot(): Promise<ControlSnapshot>
  /** Ends what the client holds (an in-page Orrery closes). */
  close(): void
}

/** A refusal of the Control, carried with its code (the API's `{ error: { code, message } }`). */
export class ControlError extends Error {
  override readonly name = 'ControlError'
  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
  ) {
    super(message)
  }
}
