/**
 * A Control in this page (an Orrery on the wasm engine, made here: the demo, or an app embedding
 * the dashboard) as a ControlClient: each method the Control's own, answered in the same turn
 * (the sync ones resolved at once), the live feeds its Streams.
 */
import type { Control } from '../../ts/control/control.js'
import type { ControlClient } from './client.js'
import { wholeRun } from './run-pages.js'

/** `onClose`: what else to end with the client (the demo's Orrery and timers). */
export function inPageClient(control: Control, source = 'this page (wasm)', onClose?: () => void): ControlClient {
  const c = control
  return {
    source,
    readOnly: false,
    overview: async () => c.overview(),
    agents: async () => c.agents(),
    pauseAgent: async (id) => {
      await c.pauseAgent(id)
    },
    resumeAgent: async (id) => {
      await c.resumeAgent(id)
    },
    stopAgent: async (id) => {
      await c.stopAgent(id)
    },
    channels: async () => c.channels(),
    messages: async (channel, options) => c.messages(channel, options ?? {}),
    publish: async (channel, payload) => {
      await c.publish(channel, payload)
    },
    groups: async () => c.groups(),
    deadLetters: async (channel, options) => c.deadLetters(channel, options ?? {}),
    replayDeadLetter: async (channel, seq) => {
      await c.replayDeadLetter(channel, seq)
    },
    discardDeadLetter: async (channel, seq) => {
      await c.discardDeadLetter(channel, seq)
    },
    namespaces: async () => c.namespaces(),
    entries: async (ns, options) => c.entries(ns, options ?? {}),
    definitions: async () => c.definitions(),
    runs: async (filter) => c.runs(filter ?? {}),
    run: (id) => wholeRun(async (historyFrom, historyLimit) => c.run(id, { historyFrom, historyLimit })),
    startRun: (definition, input, options) => c.startRun(definition, input, options?.id ? { id: options.id } : {}),
    signalRun: async (id, name, payload) => {
      await c.signalRun(id, name, payload)
    },
    cancelRun: async (id) => {
      await c.cancelRun(id)
    },
    events: (onEvent, onError) => {
      const sub = c.events().subscribe({ next: onEvent, error: onError ?? (() => {}) })
      return () => sub.unsubscribe()
    },
    tail: (channel, onMessage, options) => {
      const sub = c.tail(channel, options ?? {}).subscribe({ next: onMessage, error: () => {} })
      return () => sub.unsubscribe()
    },
    snapshot: async () => c.snapshot(),
    close: () => onClose?.(),
  }
}
