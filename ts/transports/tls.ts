/**
 * The `tls` option of the redis, nats and kafka transports: `true` for Node's defaults, or the
 * settings handed as they are to Node's `tls.connect` through each client (a private CA, a client
 * certificate for servers that verify clients, the name to check). Checked before anything
 * connects; a private key or its passphrase never shows in a refusal.
 */
import { keysOf, onlyKeys, options as checkOptions, refuse, refuseSecret, secretOr, text } from '../check.js'
import { OrreryError } from '../errors.js'

/** PEM text, or its bytes (as `readFileSync` gives them). */
export type Pem = string | Uint8Array

/** TLS settings of a transport's connections (Node's `tls.connect` options of the same names). */
export interface TlsOptions {
  /** The certificate authorities to trust, instead of Node's bundled ones: PEM, one or several. */
  ca?: Pem | readonly Pem[]
  /** This client's certificate chain (PEM), for a server that verifies its clients; with `key`. */
  cert?: Pem
  /** The private key of `cert` (PEM). */
  key?: Pem
  /** The passphrase of an encrypted `key`. */
  passphrase?: string
  /** The name the server's certificate must carry (default: the host connected to). */
  servername?: string
  /** Refuse a server whose certificate does not verify (default true). */
  rejectUnauthorized?: boolean
}

/**
 * Checked TLS settings: an object (maybe empty) for TLS; `false` when TLS was turned off; undefined
 * when nothing asked for it (a client may still upgrade: nats.js does when the server offers TLS).
 */
export type CheckedTls = Readonly<TlsOptions> | false | undefined

const KEYS = keysOf<TlsOptions>()(['ca', 'cert', 'key', 'passphrase', 'servername', 'rejectUnauthorized'])
const MUST = 'must be true, false or an object { ca, cert, key, passphrase, servername, rejectUnauthorized }'

/** INVALID_OPTION for a setting that needs another one: the message names both, and shows neither. */
function unpaired(option: string, why: string): never {
  throw new OrreryError('INVALID_OPTION', `${option} ${why}`, { details: { option } })
}

function pem(value: unknown, name: string, secret: boolean): Pem {
  const ok = (typeof value === 'string' && value !== '') || (value instanceof Uint8Array && value.length > 0)
  if (ok) return value
  const must = 'must be PEM text or its bytes (a string or a Uint8Array, not empty)'
  return secret ? refuseSecret(name, value, must) : refuse('option', name, value, must)
}

/**
 * `value` as TLS settings. Left out, a transport uses TLS when its address says so (`implied`:
 * rediss://, tls://); `false` turns it off, `true` takes Node's defaults.
 */
export function checkTls(value: unknown, name: string, implied: boolean): CheckedTls {
  if (value === undefined) return implied ? {} : undefined
  if (value === true) return {}
  if (value === false) return false
  // A key given where the object belongs is not shown.
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) refuseSecret(name, value, MUST)
  const o = checkOptions(value as Record<string, unknown>, name, 'option')
  onlyKeys(o, KEYS, name)
  const checked: TlsOptions = {}
  const ca = o['ca']
  if (ca !== undefined) {
    if (Array.isArray(ca)) {
      if (ca.length === 0) refuse('option', `${name}.ca`, ca, 'must name at least one certificate authority')
      // Array.from visits holes, which map would skip unchecked.
      checked.ca = Array.from(ca as unknown[], (one, i) => pem(one, `${name}.ca[${i}]`, false))
    } else checked.ca = pem(ca, `${name}.ca`, false)
  }
  if (o['cert'] !== undefined) checked.cert = pem(o['cert'], `${name}.cert`, false)
  if (o['key'] !== undefined) checked.key = pem(o['key'], `${name}.key`, true)
  if ((checked.cert === undefined) !== (checked.key === undefined)) {
    const [given, missing] = checked.cert === undefined ? ['key', 'cert'] : ['cert', 'key']
    unpaired(`${name}.${given}`, `is given without ${name}.${missing}: a client certificate is a certificate and its key`)
  }
  const passphrase = secretOr(o['passphrase'], `${name}.passphrase`)
  if (passphrase !== undefined) {
    if (checked.key === undefined) unpaired(`${name}.passphrase`, `is given without ${name}.key, the encrypted key it unlocks`)
    checked.passphrase = passphrase
  }
  if (o['servername'] !== undefined) checked.servername = text(o['servername'], `${name}.servername`, { nonEmpty: true }, 'option')
  if (o['rejectUnauthorized'] !== undefined) {
    if (typeof o['rejectUnauthorized'] !== 'boolean') refuse('option', `${name}.rejectUnauthorized`, o['rejectUnauthorized'], 'must be true or false')
    checked.rejectUnauthorized = o['rejectUnauthorized']
  }
  return Object.freeze(checked)
}
