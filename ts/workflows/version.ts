/**
 * A definition's content version: `sha256:` and the first 16 hex digits of the SHA-256 of the
 * canonical JSON (keys sorted, no spaces) of `{ name, root, output, timeoutMs }`. The same
 * content gives the same version whatever the order its keys were written in, on every engine:
 * the hash is computed synchronously in plain JS (`@noble/hashes`), in Node and in browsers.
 */
import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js'

/**
 * `value` as JSON with every object's keys in sorted order (UTF-16 code unit order, as
 * `Array.prototype.sort` orders strings) and no whitespace; `undefined` members are left out of
 * objects, as `JSON.stringify` leaves them out.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`
  const parts: string[] = []
  for (const key of Object.keys(value).sort()) {
    const v = (value as Record<string, unknown>)[key]
    if (v !== undefined) parts.push(`${JSON.stringify(key)}:${canonicalJson(v)}`)
  }
  return `{${parts.join(',')}}`
}

/** The content version of a definition's `{ name, root, output, timeoutMs }` (checked data: validate first). */
export function contentVersion(content: { name: string; root: unknown; output?: unknown; timeoutMs?: number | undefined }): string {
  const { name, root, output, timeoutMs } = content
  const digest = sha256(utf8ToBytes(canonicalJson({ name, root, output, timeoutMs })))
  return `sha256:${bytesToHex(digest).slice(0, 16)}`
}
