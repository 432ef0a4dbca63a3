/**
 * The state-store suite: Orrery's store on both engines against a versioned JS Map in memory,
 * and, for durable writes, against lmdb and better-sqlite3 with the same durability (every
 * commit synced before the write is acknowledged) and redb alone (the engine under Orrery's
 * durable store, benches/rust-clients: its ceiling), each contender in a process of its own
 * (benches/lib/runner.mjs); writes benches/results/store.json (same shape as bus.json:
 * `msgs_per_sec` counts operations).
 *   node --expose-gc benches/store.mjs    (or: npm run bench -- store)
 *   node --expose-gc benches/store.mjs get durable-put    (some scenarios; prints, writes no file)
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { open as openLmdb } from 'lmdb'
import { Orrery } from 'orrery'
import { Latencies, timeBoxed } from './lib/rounds.mjs'
import { runSuite, scaled } from './lib/runner.mjs'

const Sqlite = createRequire(import.meta.url)('better-sqlite3')
const run = promisify(execFile)
/** benches/rust-clients, built by scripts/bench.sh: here its redb-put and redb-count. */
const RUST_BASELINES = fileURLToPath(new URL('rust-clients/target/release/orrery-client-bench', import.meta.url))

const KEYS = 10_000
const VALUE = new Uint8Array(64).fill(7)
const STEP = 1024
const ROUND_MS = scaled(300, 100)
const ROUNDS = 5
const WATCHERS = 100
// Durable rounds: batches of this many puts, each batch awaited (one commit or a few).
const DURABLE_BATCH = 1000
const DURABLE_ROUND_MS = scaled(1000, 250)
const ENGINES = ['native', 'wasm']
const names = Array.from({ length: KEYS }, (_, i) => `agent/${String(i).padStart(6, '0')}`)
const dir = mkdtempSync(join(tmpdir(), 'orrery-store-bench-'))
process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
let files = 0

/** A JS Map with versions: the in-memory baseline (values stored by reference, as JS would). */
class VersionedMap {
  map = new Map()
  revision = 0
  get(key) {
    return this.map.get(key)
  }
  put(key, value, ifVersion) {
    const current = this.map.get(key)
    if (ifVersion !== undefined && (current?.version ?? 0) !== ifVersion) throw new Error('conflict')
    const version = ++this.revision
    this.map.set(key, { key, value, version })
    return version
  }
  txn(writes) {
    for (const [key, , ifVersion] of writes) if ((this.map.get(key)?.version ?? 0) !== ifVersion) throw new Error('conflict')
    const version = ++this.revision
    for (const [key, value] of writes) this.map.set(key, { key, value, version })
    return version
  }
}

async function orreryStore(engine) {
  const store = await Orrery.openStore({ engine })
  const ns = store.namespace('bench', { codec: 'raw' })
  const versions = names.map((key) => ns.put(key, VALUE))
  return { store, ns, versions }
}

function jsMap() {
  const map = new VersionedMap()
  const versions = names.map((key) => map.put(key, VALUE))
  return { map, versions }
}

const get = {
  orrery: (engine) => async () => {
    const { store, ns } = await orreryStore(engine)
    let i = 0
    let bytes = 0
    return {
      round: timeBoxed(() => {
        for (let n = 0; n < STEP; n++) bytes += ns.get(names[i++ % KEYS]).value.length
        return STEP
      }, ROUND_MS),
      close(total) {
        store.close()
        if (bytes !== total * VALUE.length) throw new Error(`get: read ${bytes} bytes of ${total * VALUE.length}`)
      },
    }
  },
  js: () => async () => {
    const { map } = jsMap()
    let i = 0
    let bytes = 0
    return {
      round: timeBoxed(() => {
        for (let n = 0; n < STEP; n++) bytes += map.get(names[i++ % KEYS]).value.length
        return STEP
      }, ROUND_MS),
      close(total) {
        if (bytes !== total * VALUE.length) throw new Error('js-map get: lost reads')
      },
    }
  },
}

/** Unconditional puts (`cas: false`) or puts conditional on the version last written (`cas: true`). */
function puts(cas) {
  return {
    orrery: (engine) => async () => {
      const { store, ns, versions } = await orreryStore(engine)
      const start = store.revision
      let i = 0
      return {
        round: timeBoxed(() => {
          for (let n = 0; n < STEP; n++) {
            const k = i++ % KEYS
            versions[k] = cas ? ns.put(names[k], VALUE, { ifVersion: versions[k] }) : ns.put(names[k], VALUE)
          }
          return STEP
        }, ROUND_MS),
        close(total) {
          if (store.revision - start !== total) throw new Error(`put: ${store.revision - start} writes of ${total}`)
          store.close()
        },
      }
    },
    js: () => async () => {
      const { map, versions } = jsMap()
      const start = map.revision
      let i = 0
      return {
        round: timeBoxed(() => {
          for (let n = 0; n < STEP; n++) {
            const k = i++ % KEYS
            versions[k] = map.put(names[k], VALUE, cas ? versions[k] : undefined)
          }
          return STEP
        }, ROUND_MS),
        close(total) {
          if (map.revision - start !== total) throw new Error('js-map put: lost writes')
        },
      }
    },
  }
}

const txn4 = {
  orrery: (engine) => async () => {
    const { store, ns, versions } = await orreryStore(engine)
    const start = store.revision
    let i = 0
    return {
      round: timeBoxed(() => {
        for (let n = 0; n < STEP / 4; n++) {
          const txn = store.transaction()
          const keys = [i++ % KEYS, i++ % KEYS, i++ % KEYS, i++ % KEYS]
          for (const k of keys) txn.put(ns, names[k], VALUE, { ifVersion: versions[k] })
          const version = txn.commit()
          for (const k of keys) versions[k] = version
        }
        return STEP / 4
      }, ROUND_MS),
      close(total) {
        if (store.revision - start !== total) throw new Error('txn-4: lost transactions')
        store.close()
      },
    }
  },
  js: () => async () => {
    const { map, versions } = jsMap()
    const start = map.revision
    let i = 0
    return {
      round: timeBoxed(() => {
        for (let n = 0; n < STEP / 4; n++) {
          const keys = [i++ % KEYS, i++ % KEYS, i++ % KEYS, i++ % KEYS]
          const version = map.txn(keys.map((k) => [names[k], VALUE, versions[k]]))
          for (const k of keys) versions[k] = version
        }
        return STEP / 4
      }, ROUND_MS),
      close(total) {
        if (map.revision - start !== total) throw new Error('js-map txn: lost transactions')
      },
    }
  },
}

/** One write to a key that 100 watchers watch; a round's unit is one write delivered to all. */
const watchFanout = {
  orrery: (engine) => async () => {
    const { store, ns } = await orreryStore(engine)
    let seen = 0
    const subs = Array.from({ length: WATCHERS }, () => ns.watch('hot').subscribe(() => seen++))
    return {
      round: timeBoxed(() => {
        for (let n = 0; n < 64; n++) {
          ns.put('hot', VALUE)
          store.flush()
        }
        return 64
      }, ROUND_MS),
      close(total) {
        for (const sub of subs) sub.unsubscribe()
        store.close()
        if (seen !== total * WATCHERS) throw new Error(`watch-fanout: ${seen} deliveries of ${total * WATCHERS}`)
      },
    }
  },
  js: () => async () => {
    const { map } = jsMap()
    const listeners = []
    let seen = 0
    for (let w = 0; w < WATCHERS; w++) listeners.push(() => seen++)
    return {
      round: timeBoxed(() => {
        for (let n = 0; n < 64; n++) {
          const version = map.put('hot', VALUE)
          const change = { type: 'put', key: 'hot', version, value: VALUE }
          for (const listener of listeners) listener(change)
        }
        return 64
      }, ROUND_MS),
      close(total) {
        if (seen !== total * WATCHERS) throw new Error('js-map watch: lost deliveries')
      },
    }
  },
}

/** Batches of DURABLE_BATCH puts to fresh keys, each batch acknowledged from disk. */
function durable(id, open) {
  return async () => {
    const db = await open(join(dir, `${id}-${files++}.db`))
    const latencies = new Latencies()
    let next = 0
    return {
      round: timeBoxed(
        async () => {
          const t0 = performance.now()
          await db.batch(next, DURABLE_BATCH)
          latencies.record((performance.now() - t0) * 1e6)
          next += DURABLE_BATCH
          return DURABLE_BATCH
        },
        DURABLE_ROUND_MS,
        latencies,
      ),
      async close(total) {
        const count = await db.count()
        await db.close()
        if (count !== total) throw new Error(`${id}: ${count} keys on disk of ${total}`)
        return { batch: DURABLE_BATCH }
      },
    }
  }
}

const durableContenders = [
  [
    'orrery-native',
    durable('orrery-native', async (path) => {
      const store = await Orrery.openStore({ engine: 'native', path, durability: 'batched' })
      const ns = store.namespace('bench', { codec: 'raw' })
      return {
        batch: (from, n) => {
          let last
          for (let i = 0; i < n; i++) last = ns.put(`key-${from + i}`, VALUE)
          return last
        },
        count: () => ns.keys().length,
        close: () => store.close(),
      }
    }),
  ],
  // lmdb batches every put of one event turn into one transaction and resolves them after its
  // commit is synced (the defaults; noSync/noMetaSync would skip the sync).
  [
    'lmdb',
    durable('lmdb', async (path) => {
      const db = openLmdb({ path, compression: false })
      return {
        batch: (from, n) => {
          let last
          for (let i = 0; i < n; i++) last = db.put(`key-${from + i}`, VALUE)
          return last
        },
        count: () => db.getKeysCount(),
        close: () => db.close(),
      }
    }),
  ],
  // SQLite in WAL mode with synchronous=FULL syncs the WAL on every commit: one per batch.
  [
    'better-sqlite3',
    durable('better-sqlite3', async (path) => {
      const db = new Sqlite(path)
      db.pragma('journal_mode = WAL')
      db.pragma('synchronous = FULL')
      db.exec('CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB, version INTEGER) WITHOUT ROWID')
      const put = db.prepare('INSERT OR REPLACE INTO kv (key, value, version) VALUES (?, ?, ?)')
      let version = 0
      const batch = db.transaction((from, n) => {
        for (let i = 0; i < n; i++) put.run(`key-${from + i}`, VALUE, ++version)
      })
      return {
        batch: (from, n) => batch(from, n),
        count: () => db.prepare('SELECT count(*) AS n FROM kv').get().n,
        close: () => db.close(),
      }
    }),
  ],
]

/**
 * redb alone on the same rounds (fresh `key-<n>` keys, a 64-byte value, a write transaction of
 * DURABLE_BATCH puts committed with redb's default durability, fsync before the commit returns):
 * what a durable store on redb reaches at most, Orrery's included. Its rate and p99 are its own.
 */
function redbAlone() {
  return async () => {
    const path = join(dir, `redb-alone-${files++}.redb`)
    let next = 0
    return {
      async round() {
        const { stdout } = await run(RUST_BASELINES, ['redb-put', path, String(next), String(DURABLE_BATCH), String(DURABLE_ROUND_MS)])
        const { msgs, ms, p99_us } = JSON.parse(stdout)
        next += msgs
        return { msgs, ms, p99_us, extra: { batch: DURABLE_BATCH } }
      },
      async close(total) {
        const { stdout } = await run(RUST_BASELINES, ['redb-count', path])
        if (Number(stdout) !== total) throw new Error(`redb-alone: ${stdout.trim()} keys on disk of ${total}`)
      },
    }
  }
}

const inMemory = (scenario) => [...ENGINES.map((engine) => [`orrery-${engine}`, scenario.orrery(engine)]), ['js-map', scenario.js()]]

const SCENARIOS = [
  { id: 'get', contenders: inMemory(get) },
  { id: 'put', contenders: inMemory(puts(false)) },
  { id: 'cas', contenders: inMemory(puts(true)) },
  { id: 'txn-4', contenders: inMemory(txn4) },
  { id: 'watch-fanout', contenders: inMemory(watchFanout), derive: (r) => ({ deliveries_per_sec: r.msgs_per_sec * WATCHERS }) },
  { id: 'durable-put', rounds: 3, contenders: [...durableContenders, ['redb-alone', redbAlone()]] },
]

await runSuite({ name: 'store', script: import.meta.url, scenarios: SCENARIOS, rounds: ROUNDS, unit: 'ops/s' })
