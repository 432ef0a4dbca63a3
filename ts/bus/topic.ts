/**
 * A typed channel: one schema validates every payload at publish and at receive, and its
 * output type flows to every handler. The schema id (`name@major.minor`) travels in each
 * message's envelope.
 */
import type { BatchItem, Bus, Published, PublishResult } from './bus.js'
import { PUBLISH_KEYS, REQUEST_KEYS, type PublishOptions, type SubscribeOptions } from './options.js'
import { keysOf, list, options as checkOptions, refuse } from '../check.js'
import { OrreryError } from '../errors.js'
import type { Group, GroupOptions } from './group.js'
import type { BusLink } from './link.js'
import type { Message } from './message.js'
import { checkSchema, validate, type InferOutput, type StandardSchemaV1 } from '../schema.js'
import type { Stream } from '../stream.js'

const SCHEMA_ID = /^[A-Za-z0-9._:/-]+@\d+\.\d+$/

/** Options of {@link Bus.topic}. */
export interface TopicOptions<S extends StandardSchemaV1> {
  schema: S
  /** The schema's name and version, `name@major.minor`, written into each envelope. */
  schemaId?: string
}
const TOPIC_KEYS = keysOf<TopicOptions<StandardSchemaV1>>()(['schema', 'schemaId'])

export class Topic<S extends StandardSchemaV1, T = InferOutput<S>> {
  /** @internal */
  static create<S extends StandardSchemaV1>(bus: Bus, link: BusLink, channel: string, options: TopicOptions<S>): Topic<S> {
    return new Topic(bus, link, channel, options)
  }

  private constructor(
    private readonly bus: Bus,
    link: BusLink,
    readonly channel: string,
    private readonly options: TopicOptions<S>,
  ) {
    // A topic without a schema failed with a TypeError at its first publish: refuse it here.
    if (options === undefined) refuse('argument', 'options', options, 'must be an object { schema, schemaId? }')
    checkSchema(checkOptions(options, 'options', 'argument', TOPIC_KEYS).schema)
    link.channelId(channel)
    if (options.schemaId !== undefined && (typeof options.schemaId !== 'string' || !SCHEMA_ID.test(options.schemaId))) {
      throw new OrreryError('INVALID_OPTION', 'schemaId must look like name@major.minor', { details: { option: 'schemaId', value: options.schemaId } })
    }
  }

  private get schema(): StandardSchemaV1<unknown, T> {
    return this.options.schema as StandardSchemaV1<unknown, T>
  }

  private async checked(payload: unknown): Promise<T> {
    return (await validate(this.options.schema, payload, `publish to ${this.channel}`, this.options.schemaId)) as T
  }

  private envelope(options: PublishOptions, keys: readonly string[] = PUBLISH_KEYS): PublishOptions {
    checkOptions(options, 'options', 'argument', keys)
    return this.options.schemaId ? { ...options, schema: this.options.schemaId } : options
  }

  /** Validates, then publishes; an invalid payload rejects with `SCHEMA_INVALID` naming the field and publishes nothing. */
  async publish(payload: T, options: PublishOptions = {}): Promise<PublishResult> {
    return this.bus.publish(this.channel, await this.checked(payload), this.envelope(options))
  }

  /** Validates every payload first; one invalid payload refuses the whole batch. */
  async publishBatch(items: ReadonlyArray<{ payload: T; options?: PublishOptions }>): Promise<Published> {
    const batch: BatchItem[] = []
    for (const item of list<{ payload: T; options?: PublishOptions }>(items, 'items')) {
      if (item === null || typeof item !== 'object') refuse('argument', 'items[]', item, 'must be an object { payload, options? }')
    }
    for (const item of items) batch.push({ channel: this.channel, payload: await this.checked(item.payload), options: this.envelope(item.options ?? {}) })
    return this.bus.publishBatch(batch)
  }

  /** Every valid message (invalid ones are skipped and reported on `bus.events`). */
  subscribe(options: Omit<SubscribeOptions<T>, 'schema'> = {}): Stream<Message<T>> {
    return this.bus.subscribe<T>(this.channel, { ...checkOptions(options), schema: this.schema })
  }

  /** A consumer group whose invalid messages are dead-lettered at once. */
  group(name: string, options: Omit<GroupOptions<T>, 'schema'> = {}): Group<T> {
    return this.bus.group<T>(this.channel, name, { ...checkOptions(options), schema: this.schema })
  }

  /** Sends a validated request. */
  async request<R = unknown>(payload: T, options: PublishOptions & { timeout?: number } = {}): Promise<Message<R>> {
    return this.bus.request<R>(this.channel, await this.checked(payload), this.envelope(options, REQUEST_KEYS))
  }
}
