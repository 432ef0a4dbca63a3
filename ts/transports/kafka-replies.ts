/**
 * This process's reply address on Kafka: a topic of its own, `<prefix>-reply-<address>` (one
 * partition), made by its first request and read from its end on a client of its own; each record
 * is a reply, ingested as it comes. The topic is deleted when the process shuts down gracefully
 * (one left by a process that died is only a few records: its retention is one minute).
 */
import type { Consumer } from '@platformatic/kafka'

import type { KafkaDriver } from './kafka.js'
import { closeClient, FETCH_BYTES, FETCH_PARTITION_BYTES, FETCH_WAIT_MS, RETRY_MS, recordSignature, type TopicLayout } from './kafka-shared.js'
import { IngestWriter } from './records.js'

export class ReplyReader {
  private stopped = false
  private client: Consumer<Buffer, Buffer, Buffer, Buffer> | undefined
  private next = 0n
  private readonly writer = new IngestWriter()

  constructor(
    private readonly driver: KafkaDriver,
    readonly topic: string,
    /** This process's reply address (what a signed reply must be signed for). */
    private readonly address: string,
  ) {}

  /** Makes the topic and starts reading at its end: resolves once a reply produced from now on would be read. */
  async open(): Promise<void> {
    const driver = this.driver
    await driver.ensureReplyTopic(this.topic)
    const layout = await driver.layout(this.topic)
    this.next = (await driver.offsets(this.topic, -1n)).get(0) ?? 0n
    if (this.stopped) return
    this.client = new driver.kafka.Consumer({ ...(driver.clientOptions() as object), groupId: `${driver.config.prefix}-replies` } as never)
    void this.run(layout)
  }

  private async run(first: TopicLayout): Promise<void> {
    let layout: TopicLayout | undefined = first
    let id = first.id
    while (!this.stopped && !this.driver.isClosed) {
      try {
        if (layout === undefined) {
          layout = await this.layout()
          // Made again (the broker came back without its data): read from its start.
          if (layout.id !== id) {
            this.next = (await this.driver.offsets(this.topic, -2n)).get(0) ?? 0n
            id = layout.id
          }
        }
        const client = this.client
        if (client === undefined) return
        const response = await client.fetch({
          node: layout.leaders[0]!,
          topics: [
            {
              topicId: layout.id,
              partitions: [{ partition: 0, fetchOffset: this.next, currentLeaderEpoch: -1, lastFetchedEpoch: -1, partitionMaxBytes: FETCH_PARTITION_BYTES }],
            },
          ],
          maxWaitTime: FETCH_WAIT_MS,
          minBytes: 1,
          maxBytes: FETCH_BYTES,
          isolationLevel: this.driver.kafka.FetchIsolationLevels.READ_UNCOMMITTED,
        })
        if (this.stopped) return
        for (const t of response.responses)
          for (const part of t.partitions) {
            if (part.errorCode !== 0) throw new Error(`kafka fetch of ${this.topic} failed with error code ${part.errorCode}`)
            for (const batch of part.records ?? []) {
              for (const record of batch.records) {
                const offset = batch.firstOffset + BigInt(record.offsetDelta)
                if (offset < this.next || record.value === null) continue
                const signing = this.driver.signing
                if (signing !== undefined && !signing.acceptReply(recordSignature(record.headers), this.address, record.value)) continue
                this.writer.replied(record.value)
              }
              const end = batch.firstOffset + BigInt(batch.lastOffsetDelta) + 1n
              if (end > this.next) this.next = end
            }
          }
        const replies = this.writer.take()
        if (replies !== undefined) this.driver.sink.ingest(replies)
      } catch {
        if (this.stopped || this.driver.isClosed) return
        // The leader may have moved: asked again before the next fetch.
        layout = undefined
        await new Promise((r) => setTimeout(r, RETRY_MS))
      }
    }
  }

  /** The topic's layout; a topic gone (the broker came back without its data) is made again first, or no reply would reach this process again. */
  private layout(): Promise<TopicLayout> {
    return this.driver.layoutRemade(this.topic, async () => {
      // Gone on purpose once this process stopped (its shutdown deletes it): left gone.
      if (this.stopped) return
      this.driver.forgetReplyTopic(this.topic)
      await this.driver.ensureReplyTopic(this.topic)
    })
  }

  stop(): void {
    this.stopped = true
    const client = this.client
    this.client = undefined
    closeClient(client)
  }
}
