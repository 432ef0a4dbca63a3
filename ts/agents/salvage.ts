/**
 * Salvage of a dead process's inboxes in a mesh shared over a broker. An agent with a generated
 * id (`<type>-<n>.<process>`) is never started again once its process is gone, so what waits in
 * its inbox on the broker would wait there for ever. When such an agent is deregistered for
 * missed beats (and stays so while this process hears the others: see `Mesh.salvage`), every
 * surviving process joins its inbox's consumer group (`agent`, the one the agent read), with the
 * lease, delivery limit and longest retry delay the agent's registration told, and empties it:
 *
 * - a message sent for a capability (routed, or sent with the capability header) is sent on
 *   through routing to an agent offering it, with its id, headers and codec, then acked;
 * - a request is answered `CLOSED` (as an agent's stop answers it) and acked: its caller fell
 *   back when the agent went offline, or does now;
 * - a message whose time to live passed is acked and dropped;
 * - a message naming no capability is dead-lettered (`agent-gone: …`); one no agent takes is
 *   tried again each heartbeat interval, and dead-lettered by the group after `SALVAGE_TRIES`
 *   more deliveries than the agent's own limit.
 *
 * What the dead process held comes back once its lease runs out on the broker (the agent's own
 * lease: the broker's consumer keeps the settings its live readers gave it). A salvage ends once
 * the inbox gave nothing for `idle` ms, long enough for that, when an agent of that id registers
 * again, or with the mesh (a shutdown waits for the messages it is sending on), and reports what
 * it did (`salvaged`).
 */
import type { Subscription } from 'rxjs'

import type { Logger } from './agent.js'
import { runnerLink, type Bus } from '../bus/bus.js'
import type { Delivery, Group } from '../bus/group.js'
import { inboxOf, type PublishOptions } from '../bus/options.js'
import { frameHeader } from '../frame.js'
import { leaseThreshold } from '../transports/writes.js'
import { CAPABILITY_HEADER } from './runner.js'
import type { Registry } from './registry.js'
import type { InboxTerms } from './runner.js'

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
/** Deliveries a salvage gives a message beyond its agent's own limit before the group dead-letters it. */
export const SALVAGE_TRIES = 5

/** Whether `id` is one a mesh of `process` generated (see `Mesh.generatedId` and supervisors' children). */
export function generatedBy(id: string, process: string): boolean {
  const mark = `.${process.slice(0, 8)}`
  const at = id.lastIndexOf(mark)
  if (at <= 0) return false
  const rest = id.slice(at + mark.length)
  return rest === '' || /^-\d+$/.test(rest)
}

/**
 * How long a salvage waits with nothing delivered before it ends: what the dead process took
 * last (up to a beat after its last beat) comes back one broker threshold after it took it, and
 * one it nacked for a retry (on NATS, a delay the broker keeps) after that delay; the salvage
 * began at least a heartbeat deadline after that last beat; then a reclaim's period (1 s) and a
 * margin. At least 4 beats and 2 s.
 */
export function idleBefore(terms: InboxTerms, interval: number, deadline: number): number {
  const back = Math.max(leaseThreshold(terms.visibilityMs), terms.retryDelayMs)
  return Math.max(2_000, 4 * interval, back - deadline + interval + 2_000)
}

/** Empties one dead agent's inbox (see the module comment). */
export class Salvage {
  private readonly group: Group
  private subscription: Subscription | undefined
  private watch: Subscription | undefined
  private readonly timer: ReturnType<typeof setInterval>
  private lastActive = Date.now()
  private running = 0
  private ending = false
  private done = false
  private finished: Promise<void> | undefined
  private resolveFinished: (() => void) | undefined
  private rerouted = 0
  private dropped = 0
  private deadLettered = 0

  constructor(
    private readonly host: SalvageHost,
    readonly agent: string,
    readonly process: string,
    terms: InboxTerms,
    private readonly onEnd: (salvage: Salvage) => void,
  ) {
    const idle = idleBefore(terms, host.interval, host.deadline)
    this.group = host.bus.group(inboxOf(agent), 'agent', {
      from: 'earliest',
      visibilityTimeout: terms.visibilityMs,
      maxDeliveries: terms.maxDeliveries + SALVAGE_TRIES,
    })
    this.timer = setInterval(
      () => {
        if (this.running === 0 && Date.now() - this.lastActive >= idle) void this.end()
      },
      Math.max(50, Math.min(host.interval, idle / 4)),
    )
    ;(this.timer as { unref?: () => void }).unref?.()
    this.subscription = this.group.join({ maxInFlight: IN_FLIGHT }).subscribe({
      next: (delivery) => this.take(delivery),
      error: (error: unknown) => {
        host.logger.warn({ err: error, agent }, `the salvage of agent ${agent}'s inbox stopped`)
        void this.end(true)
      },
    })
    // An agent of that id is back (its process was cut off, not dead): it reads its inbox itself.
    if (!this.ending)
      this.watch = host.registry.events.subscribe((event) => {
        if (event.type === 'registered' && event.agent === agent) void this.end()
      })
  }

  /** Whether it ended (or is ending). */
  get ended(): boolean {
    return this.ending
  }

  /**
   * Stops taking messages; once those it is sending on are acked (at once with `now`), leaves the
   * group (what it holds goes back to the broker, and the group's reader here stops) and reports.
   */
  end(now = false): Promise<void> {
    if (!this.ending) {
      this.ending = true
      clearInterval(this.timer)
      this.watch?.unsubscribe()
      this.finished = new Promise((resolve) => (this.resolveFinished = resolve))
    }
    if (now || this.running === 0) this.finish()
    return this.finished!
  }

  private finish(): void {
    this.resolveFinished?.()
    if (this.done) return
    this.done = true
    this.subscription?.unsubscribe()
    this.subscription = undefined
    try {
      this.group.delete()
    } catch {
      // The bus closed: nothing of the group is left here.
    }
    const { agent, process, rerouted, dropped, deadLettered } = this
    if (rerouted + dropped + deadLettered > 0)
      this.host.logger.info({ agent, process, rerouted, dropped, deadLettered }, `salvaged the inbox of agent ${agent}`)
    this.host.report({ type: 'salvaged', agent, process, rerouted, dropped, deadLettered, at: this.host.now() })
    this.onEnd(this)
  }

  private take(delivery: Delivery): void {
    // Ending: left held, it goes back to the group with the member.
    if (this.ending) return
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
      if (this.ending && this.running === 0) this.finish()
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
