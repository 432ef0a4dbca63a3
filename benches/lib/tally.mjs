/**
 * Counts what subscribers received, so a contender that loses or truncates messages fails the
 * run loudly instead of looking fast.
 */
export class Tally {
  messages = 0
  bytes = 0

  /** Subscribers read each payload, as a real consumer would (for Orrery that decodes it). */
  receive(payload) {
    this.messages++
    this.bytes += payload.byteLength
  }

  /** Throws unless exactly `messages` payloads of `payloadBytes` each arrived. */
  verify(who, messages, payloadBytes) {
    if (this.messages !== messages || this.bytes !== messages * payloadBytes) {
      throw new Error(`${who}: expected ${messages} messages of ${payloadBytes} bytes, got ${this.messages} (${this.bytes} bytes)`)
    }
  }
}
