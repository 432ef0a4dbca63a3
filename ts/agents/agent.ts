/**
 * The Agent base class users subclass: an identity, the capabilities it offers, lifecycle hooks,
 * handlers (per capability, per message schema, per message kind) with typed payloads, a
 * validated configuration that can change at run time, a logger, and an optional health check.
 * Running it (feeding, retrying, limiting, beating, restarting) is the mesh's job.
 */
import { callable, options, refuse, text } from '../check.js'
import type { Message } from '../bus/message.js'
import type { CapabilitySpec, Health } from './registry.js'
import type { InferOutput, StandardSchemaV1 } from '../schema.js'

/** The logging surface agents use: pino's (pass a pino instance); silent by default. */
export interface Logger {
  child(bindings: Record<string, unknown>): Logger
  debug(obj: unknown, msg?: string): void
  info(obj: unknown, msg?: string): void
  warn(obj: unknown, msg?: string): void
  error(obj: unknown, msg?: string): void
}

/** A logger that drops everything. */
export const silentLogger: Logger = {
  child: () => silentLogger,
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
}

/**
 * What a health check reports. Annotate an override with it (`healthCheck(): HealthReport`):
 * TypeScript does not type a method's returned object from the base class, so without the
 * annotation `status: 'degraded'` widens to `string` and the override is rejected.
 */
export interface HealthReport {
  status: Extract<Health, 'healthy' | 'degraded' | 'unhealthy'>
  reason?: string
}

/** What a handler gets besides its payload. */
export interface HandlerContext {
  readonly message: Message
  /**
   * 1 for the first delivery, 2 for the first retry, … A request's caller owns its retries (on
   * other agents, each a new request), so a request is 2 or more only when a next life of this
   * agent takes it again (its last one crashed or was ended while holding it): it may have run.
   * (An inbox on Kafka counts from 1 again in another process.)
   */
  readonly attempt: number
  /**
   * The agent's logger, with `traceId` and `spanId` bound: the handler's span where the Orrery
   * traces (docs/observability.md), else those the message's `traceparent` header carries.
   */
  readonly log: Logger
  /** Aborted when the handler's time is up or the agent is stopping. */
  readonly signal: AbortSignal
}

/** A handler: takes the payload, returns the reply (for requests) or nothing. */
export type Handler<T, R> = (payload: T, context: HandlerContext) => R | Promise<R>

/** An error no retry can fix (bad input): the message goes to the dead-letter channel at once. */
export class PermanentError extends Error {
  override readonly name: string = 'PermanentError'
}

/** An error that means the agent itself is broken: it crashes, and its supervisor restarts it. */
export class FatalError extends Error {
  override readonly name: string = 'FatalError'
}

/** @internal One registered handler. */
export interface HandlerEntry {
  readonly schema: StandardSchemaV1 | undefined
  readonly run: Handler<unknown, unknown>
}

/** A handler entry from `handle`/`on` arguments, checked: a handler that is not a function would fail only when a message came. */
function entry(a: { schema: StandardSchemaV1 } | Handler<unknown, unknown>, b: Handler<unknown, unknown> | undefined): HandlerEntry {
  if (typeof a === 'function') return { schema: undefined, run: a }
  const { schema } = options(a, 'options')
  if (typeof schema?.['~standard']?.validate !== 'function') refuse('option', 'schema', schema, 'must be a Standard Schema')
  return { schema, run: callable<Handler<unknown, unknown>>(b, 'handler') }
}

/**
 * What the mesh hands an agent's constructor: `constructor(context: AgentContext)`. `C` is the
 * configuration's type; the base class takes any context, since the mesh validated the
 * configuration against the class's `config` schema before building the agent.
 */
export interface AgentContext<C = unknown> {
  readonly id: string
  readonly type: string
  readonly config: C
  readonly log: Logger
  /** Capabilities given at spawn time, which replace the class's `capabilities`. */
  readonly capabilities?: readonly CapabilitySpec[] | undefined
}

/** A class of agents, as the mesh builds them. */
export interface AgentClass<C = unknown> {
  new (context: AgentContext<C>): Agent<C>
  /** The agent type (default: the class name). */
  readonly type?: string
  /** What agents of this class can do. */
  readonly capabilities?: readonly CapabilitySpec[]
  /** Validates (and types) the configuration. */
  readonly config?: StandardSchemaV1<unknown, C>
}

/**
 * An agent. Subclass it, declare `static capabilities`, register handlers in the constructor
 * with `handle` and `on`, and override the hooks you need.
 */
export abstract class Agent<C = unknown> {
  readonly id: string
  readonly type: string
  readonly capabilities: readonly CapabilitySpec[]
  /** The logger, bound to this agent's id and type. */
  readonly log: Logger
  private current: C
  /** @internal */
  readonly handlers = new Map<string, HandlerEntry>()
  /** @internal */
  readonly messageHandlers = new Map<string, HandlerEntry>()

  constructor(context: AgentContext) {
    this.id = context.id
    this.type = context.type
    this.current = context.config as C
    this.log = context.log
    this.capabilities = context.capabilities ?? (this.constructor as AgentClass<C>).capabilities ?? []
  }

  /** The configuration in force. */
  get config(): C {
    return this.current
  }

  /** @internal Replaces the configuration (already validated) and tells the agent. */
  async applyConfig(next: C): Promise<void> {
    const previous = this.current
    this.current = next
    await this.onConfig?.(next, previous)
  }

  /**
   * Handles requests and messages for `capability`; with `schema`, payloads are validated (an
   * invalid one is a permanent error) and typed.
   */
  protected handle<S extends StandardSchemaV1, R>(capability: string, options: { schema: S }, handler: Handler<InferOutput<S>, R>): void
  protected handle<T, R>(capability: string, handler: Handler<T, R>): void
  protected handle(capability: string, a: { schema: StandardSchemaV1 } | Handler<unknown, unknown>, b?: Handler<unknown, unknown>): void {
    this.handlers.set(text(capability, 'capability', { nonEmpty: true }), entry(a, b))
  }

  /**
   * Handles direct messages without a capability: by the message's schema name
   * (`name@major.minor`) when it has one and a handler for it exists, else by its kind
   * (`data`, `command`, `event`, `query`…).
   */
  protected on<S extends StandardSchemaV1>(kindOrSchema: string, options: { schema: S }, handler: Handler<InferOutput<S>, unknown>): void
  protected on<T>(kindOrSchema: string, handler: Handler<T, unknown>): void
  protected on(kindOrSchema: string, a: { schema: StandardSchemaV1 } | Handler<unknown, unknown>, b?: Handler<unknown, unknown>): void {
    this.messageHandlers.set(text(kindOrSchema, 'kindOrSchema', { nonEmpty: true }), entry(a, b))
  }

  /** Called once before the agent takes messages; throwing fails the start. */
  onStart?(): void | Promise<void>
  /** Called once after it stopped taking messages and its handlers finished (or timed out). */
  onStop?(): void | Promise<void>
  /** Called when the agent is paused (it takes no messages; its queue waits). */
  onPause?(): void | Promise<void>
  /** Called when it resumes. */
  onResume?(): void | Promise<void>
  /**
   * Called after a new configuration was validated and applied. An override names the
   * parameters' type (`onConfig(next: Config, previous: Config)`): TypeScript does not take a
   * method's parameter types from the base class.
   */
  onConfig?(next: C, previous: C): void | Promise<void>
  /**
   * Reports health with each heartbeat; a check that does not answer in time misses the beat.
   * Annotate an override's return type: `healthCheck(): HealthReport` (or
   * `Promise<HealthReport>`), see {@link HealthReport}.
   */
  healthCheck?(): HealthReport | Promise<HealthReport>
}
