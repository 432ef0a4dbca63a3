/**
 * Bearer tokens with scopes: `admin` implies `write`, which implies `read`. Tokens are compared
 * in constant time (their SHA-256 digests through `timingSafeEqual`, every configured token each
 * time), so neither a token's content nor its length leaks through timing.
 */
import { createHash, timingSafeEqual } from 'node:crypto'

import { list, oneOf, refuse, refuseSecret } from '../check.js'
import { OrreryError } from '../errors.js'

/** What a token may do. */
export type Scope = 'read' | 'write' | 'admin'
/** What a route needs: a scope, or nothing (health, readiness, the OpenAPI document). */
export type Need = Scope | 'none'

export const SCOPES: readonly Scope[] = ['read', 'write', 'admin']
const RANK: Record<Scope, number> = { read: 1, write: 2, admin: 3 }

/** Checks an `Authorization` header against the tokens given. */
export class Tokens {
  private readonly digests: Array<{ digest: Buffer; rank: number }>

  /** `undefined`: no authentication (`auth: 'none'`), every request is admin. */
  constructor(tokens: Readonly<Record<string, readonly Scope[]>> | undefined) {
    this.digests =
      tokens === undefined ? [] : Object.entries(tokens).map(([token, scopes]) => ({ digest: digest(token), rank: Math.max(0, ...scopes.map((s) => RANK[s])) }))
    this.open = tokens === undefined
  }

  private readonly open: boolean

  /** Throws UNAUTHORIZED (no or unknown token) or FORBIDDEN (a token without the scope) unless the request may go on. */
  check(header: string | undefined, need: Need): void {
    if (need === 'none' || this.open) return
    const match = /^Bearer[ ]+([^\s]+)\s*$/i.exec(header ?? '')
    if (match === null) throw new OrreryError('UNAUTHORIZED', 'a bearer token is required (Authorization: Bearer <token>)')
    const given = digest(match[1]!)
    let rank = 0
    for (const t of this.digests) if (timingSafeEqual(t.digest, given)) rank = Math.max(rank, t.rank)
    if (rank === 0) throw new OrreryError('UNAUTHORIZED', 'the bearer token is not known')
    if (rank < RANK[need]) throw new OrreryError('FORBIDDEN', `this route needs the ${need} scope`, { details: { scope: need } })
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}

/** Checks the `tokens` option: an object of token -> non-empty list of scopes. */
export function checkTokens(value: unknown): Record<string, Scope[]> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) refuse('option', 'tokens', value, 'must be an object { [token]: scopes[] }')
  const out: Record<string, Scope[]> = {}
  const entries = Object.entries(value)
  if (entries.length === 0) refuse('option', 'tokens', value, 'must name at least one token')
  for (const [token, scopes] of entries) {
    // The token itself is never shown in an error.
    if (token.length < 8 || /\s/.test(token)) refuseSecret('tokens', token, 'must each be at least 8 characters, without spaces')
    const checked = list<unknown>(scopes, 'tokens.<token>', 'option').map((s) => oneOf(s, SCOPES, 'tokens.<token> scope'))
    if (checked.length === 0) refuse('option', 'tokens.<token>', scopes, 'must list at least one scope')
    out[token] = checked
  }
  return out
}
