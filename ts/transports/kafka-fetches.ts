/**
 * Keeps a consumer's stream from taking a fetch's answer for a partition whose position moved
 * while the fetch was out. The client's stream sets a partition's next offset from each answer
 * (past its last record), whenever that answer arrives. A fetch sent before a partition left this
 * process and answered after it came back (two group moves later) would then set the position
 * past records the interim owner never committed: the group would skip them. The stream's
 * position of a partition moves only when an answer for it is taken, or when it is set anew (the
 * group reader takes it back when the partition comes back; the stream then reads the last commit
 * into it). So an answer is taken for a partition only where the stream still reads it from the
 * offset the fetch asked for; otherwise its records are dropped before the stream sees them, and
 * the next fetch asks from the position the stream holds now.
 *
 * The client announces each fetch and its answer on the `consumer:fetches` diagnostics channel it
 * exports, the answer before the stream is handed it: that is where the answer is looked at.
 *
 * There the records a group reads can also be taken (`Take`) straight from the decoded batches:
 * the stream would otherwise make an object, a header map, a bound commit function and a
 * diagnostics context for each record, most of a consumer's time. What is taken leaves its batch
 * (the stream still moves its positions from the batches, and pushes what is left). The client's
 * own `consumer:receives` events and consumed-messages metric then do not count taken records,
 * and other listeners to `consumer:fetches` see the batches as they are left.
 */
import type { KafkaModule } from './kafka.js'
import type { RecordBatch } from './kafka-shared.js'

/** Where the stream of a consumer reads a partition now (undefined: nowhere yet, it is being set). */
export type Position = (partition: number) => bigint | undefined

/**
 * Takes records of a fetch's answer for `partition`, asked from offset `from` (the batches may
 * begin before it): those it takes it removes from their batch; what it leaves goes to the stream.
 */
export type Take = (partition: number, from: bigint, batches: readonly RecordBatch[]) => void

/** A fetch as the client announces it: what it asked for and, once answered, the answer. */
interface FetchEvent {
  readonly client?: unknown
  readonly error?: unknown
  readonly options?: {
    readonly topics?: readonly { readonly topicId: string; readonly partitions: readonly { readonly partition: number; readonly fetchOffset: bigint }[] }[]
  }
  readonly result?: {
    readonly responses?: readonly {
      readonly topicId: string
      readonly partitions: readonly { readonly partitionIndex: number; records?: RecordBatch[] | null | undefined }[]
    }[]
  }
}

/** The position of each guarded consumer's stream (a consumer reads one topic), and what takes its records. */
const guarded = new WeakMap<object, { readonly position: Position; readonly take: Take | undefined }>()
/** The channels listened to (one per copy of the client loaded). */
const listened = new WeakSet<object>()

/**
 * Drops, from each answer to a fetch of `consumer`, the records of a partition whose position in
 * its stream is no longer the offset the fetch asked from (for as long as the consumer lives);
 * `take` is offered the others.
 */
export function guardFetches(kafka: KafkaModule, consumer: object, position: Position, take?: Take): void {
  guarded.set(consumer, { position, take })
  const channel = kafka.consumerFetchesChannel
  if (listened.has(channel)) return
  listened.add(channel)
  channel.asyncStart.subscribe((event) => keepCurrent(event as FetchEvent))
}

function keepCurrent(event: FetchEvent): void {
  const guard = event.client === undefined || event.client === null ? undefined : guarded.get(event.client)
  if (guard === undefined || event.error !== undefined || event.result?.responses === undefined) return
  const asked = new Map<string, bigint>()
  for (const topic of event.options?.topics ?? []) for (const p of topic.partitions) asked.set(`${topic.topicId}:${p.partition}`, p.fetchOffset)
  for (const topic of event.result.responses) {
    for (const p of topic.partitions) {
      if (p.records === undefined || p.records === null) continue
      const from = asked.get(`${topic.topicId}:${p.partitionIndex}`)
      if (from !== guard.position(p.partitionIndex)) p.records = undefined
      else if (from !== undefined) guard.take?.(p.partitionIndex, from, p.records)
    }
  }
}
