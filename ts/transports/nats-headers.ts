/** The headers Orrery writes on NATS messages, read by the stream readers and the core requests alike. */

import type { MsgHdrs } from '@nats-io/nats-core'
import { type Route, routeOf } from './records.js'

/** A request's reply address and timeout (ms). */
export const REPLY_TO = 'Orrery-Reply-To'
export const TIMEOUT = 'Orrery-Timeout'
/** The id JetStream's dedup window checks (nats.js's msgID option sets the same header). */
export const MSG_ID = 'Nats-Msg-Id'
/** The header of a signed message's signature. */
export const SIGNATURE = 'Orrery-Sig'
/** How many times a core request was delivered to a group before this (absent: never). */
export const DELIVERED = 'Orrery-Delivered'

/** A request's route, from its headers; undefined for a plain message. */
export function routeOfMsg(m: { readonly headers?: MsgHdrs | undefined }): Route | undefined {
  const h = m.headers
  return h === undefined ? undefined : routeOf(h.get(REPLY_TO) || undefined, h.get(TIMEOUT) || undefined)
}
