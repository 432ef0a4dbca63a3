/**
 * Salvage of a dead process's inboxes in a shared mesh. An agent with a generated id
 * (`<type>-<n>.<process>`) is never started again once its process is gone, so what waits in its
 * inbox on the broker would wait there for ever. When such an agent is deregistered for missed
 * beats, every surviving process joins its inbox's consumer group (`agent`, the one the agent
 * read) and empties it:
 *
 * - a message sent for a capability (routed, or sent with the capability header) is sent on
 *   through routing to an agent offering it, with its id, headers and codec, then acked;
 * - a request is answered `CLOSED` (as an agent's stop answers it) and acked: its caller fell
 *   back when the agent went offline, or does now;
 * - a message whose time to live passed is acked and dropped;
 * - a message naming no capability is dead-lettered (`agent-gone: …`), as is one no agent can
 *   take after the group's `maxDeliveries` tries, a heartbeat interval apart.
 *
 * Its visibility timeout is the heartbeat deadline: what the dead process held is older than that
 * (it beat no more since), so the broker hands it over at once. A salvage ends once the inbox gave
 * nothing for `idle` ms, when an agent of that id registers again, or with the mesh, and reports
 * what it did (`salvaged`).
 */
import type { Subscription } from 'rxjs'

import type { Logger } from './agent.js'
import { runnerLink, type Bus } from '../bus/bus.js'
import type { Delivery } from '../bus/group.js'
import { inboxOf, type PublishOptions } from '../bus/options.js'
import { frameHeader } from '../frame.js'
import { CAPABILITY_HEADER } from './runner.js'
import type { Registry } from './registry.js'

/** What a salvage did, reported when it ends. */
export interface SalvageReport {
  type: 'salvaged'
  /** The agent whose inbox was emptied. */
  agent: string
  /** Its process. */
  process: string
  /** Messages sent on to other agents. */
  rerouted: number
  /** Requests (answered `CLOSED`) and expired messages acked without being run. */
  dropped: number
  /** Messages dead-lettered because they name no capability (those no agent took are dead-lettered by the group). */
  deadLettered: number
  at: number
}

/** What a salvage needs of its mesh. */
export interface SalvageHost {
  readonly bus: Bus
  readonly registry: Registry
  readonly logger: Logger
  /** The heartbeat interval, in ms. */
  readonly interval: number
  /** The heartbeat deadline (offline, then deregistered), in ms. */
  readonly deadline: number
  now(): number
  /** Routes a message to an agent offering `capability` (`mesh.send`). */
  send(capability: string, payload: unknown, options: PublishOptions): Promise<unknown>
  report(report: SalvageReport): void
}

/** In-flight deliveries a salvage holds at most. */
const IN_FLIGHT = 16

/** Whether `id` is one a mesh of `process` generated (see `Mesh.nextId` and supervisors' children). */
export function generatedBy(id: string, process: string): boolean {
  const mark = `.${process.slice(0, 8)}`
  const at = id.lastIndexOf(mark)
  if (at <= 0) return false
  const rest = id.slice(at + mark.length)
  return rest === '' || /^-\d+$/.test(rest)
}

/** Empties one dead agent's inbox (see the module comment). */
export class Salvage {
  private subscription: Subscription | undefined
  private readonly watch: Subscription
  private timer: ReturnType<typeof setInterval> | undefined
  private lastActive: number
  private running = 0
  private ended = false
  private rerouted = 0
  private dropped = 0
  private deadLettered = 0

  constructor(
    private readonly host: SalvageHost,
    readonly agent: string,
    readonly process: string,
    idle: number,
    private readonly onEnd: (salvage: Salvage) => void,
  ) {
    this.lastActive = Date.now()
    // An agent of that id is back (its process was cut off, not dead): it reads its inbox itself.
    this.watch = host.registry.events.subscribe((event) => {
      if (event.type === 'registered' && event.agent === agent) this.end()
    })
    const group = host.bus.group(inboxOf(agent), 'agent', { from: 'earliest', visibilityTimeout: host.deadline })
    this.subscription = group.join({ maxInFlight: IN_FLIGHT }).subscribe({
      next: (delivery) => this.take(delivery),
      error: (error: unknown) => {
        host.logger.warn({ err: error, agent }, `the salvage of agent ${agent}'s inbox stopped`)
        this.end()
      },
    })
    this.timer = setInterval(
      () => {
        if (this.running === 0 && Date.now() - this.lastActive >= idle) this.end()
      },
      Math.max(50, Math.min(host.interval, idle / 4)),
    )
    ;(this.timer as { unref?: () => void }).unref?.()
  }

  /** Stops reading the inbox (what it holds goes back to the group) and reports. */
  end(): void {
    if (this.ended) return
    this.ended = true
    clearInterval(this.timer)
    this.watch.unsubscribe()
    this.subscription?.unsubscribe()
    this.subscription = undefined
    const { agent, process, rerouted, dropped, deadLettered } = this
    if (rerouted + dropped + deadLettered > 0)
      this.host.logger.info({ agent, process, rerouted, dropped, deadLettered }, `salvaged the inbox of agent ${agent}`)
    this.host.report({ type: 'salvaged', agent, process, rerouted, dropped, deadLettered, at: this.host.now() })
    this.onEnd(this)
  }

  private take(delivery: Delivery): void {
    this.lastActive = Date.now()
    const message = delivery.message
    if ((message as { replyToken?: number }).replyToken) {
      this.dropped++
      const why = `agent ${this.agent} is gone (its process ${this.process} stopped beating) before it answered`
      return this.settle(() => {
        runnerLink(this.host.bus).answer(message, undefined, { message: why, code: 'CLOSED', permanent: false, abandoned: true })
        delivery.ack()
      })
    }
    if (message.expiresAt !== undefined && message.expiresAt <= this.host.now()) {
      this.dropped++
      return this.settle(() => delivery.ack())
    }
    const capability = frameHeader(message.bytes, CAPABILITY_HEADER, undefined)
    if (capability === undefined) {
      this.deadLettered++
      return this.settle(() =>
        delivery.nack({
          deadLetter: `agent-gone: agent ${this.agent}'s process ${this.process} is gone, and the message names no capability to send it on by`,
        }),
      )
    }
    this.running++
    void this.reroute(delivery, capability).finally(() => {
      this.running--
      this.lastActive = Date.now()
    })
  }

  private async reroute(delivery: Delivery, capability: string): Promise<void> {
    const message = delivery.message
    try {
      const { [CAPABILITY_HEADER]: _capability, ...headers } = message.headers
      const ttl = message.expiresAt === undefined ? undefined : Math.max(1, message.expiresAt - this.host.now())
      await this.host.send(capability, message.payload, {
        id: message.id,
        kind: message.kind,
        priority: message.priority,
        codec: message.codec,
        headers,
        ...(ttl !== undefined && { ttl }),
        ...(message.sender !== undefined && { sender: message.sender }),
        ...(message.correlationId !== undefined && { correlationId: message.correlationId }),
        ...(message.causationId !== undefined && { causationId: message.causationId }),
        ...(message.schema !== undefined && { schema: message.schema }),
      })
    } catch (error) {
      // No agent takes it now (or the broker refused the send): tried again an interval later,
      // dead-lettered by the group past its deliveries.
      this.host.logger.debug({ err: error, agent: this.agent, capability }, `a message of agent ${this.agent}'s inbox could not be sent on`)
      return this.settle(() => delivery.nack({ delay: this.host.interval }))
    }
    this.rerouted++
    this.settle(() => delivery.ack())
  }

  /** Settles a delivery; one whose lease ended, or whose bus closed, went back already. */
  private settle(settle: () => void): void {
    try {
      settle()
    } catch {
      // STALE_ACK or CLOSED: the group has it again.
    }
  }
}
