// The store: namespaces of versioned keys. Run by test/examples.test.ts on both engines; the
// regions are the code blocks of docs/store.md.
import assert from 'node:assert/strict'
import { isOrreryError, Orrery, type Change } from 'orrery'

// #region versions
const store = await Orrery.openStore({ history: 10 }) // in memory; { path } for a file (native)
interface Load {
  load: number
}
const agents = store.namespace<Load>('agents') // values are JSON by default

const v1 = agents.put('a1', { load: 1 }) // a write returns its version: the store's revision
const v2 = agents.put('a1', { load: 2 }, { ifVersion: v1 }) // compare-and-set
assert.ok(v2 > v1)
assert.deepEqual(agents.get('a1')?.value, { load: 2 })
assert.deepEqual(agents.getVersion('a1', v1)?.value, { load: 1 }) // kept by history: 10
assert.deepEqual(agents.history('a1').map((c) => c.version), [v1, v2])
// #endregion

// #region conflict
try {
  agents.put('a1', { load: 3 }, { ifVersion: v1 }) // v1 is stale
  assert.fail('written')
} catch (err) {
  assert.ok(isOrreryError(err, 'VERSION_CONFLICT'))
  assert.equal(err.details['expected'], v1)
  assert.equal(err.details['current'], v2) // the version the key is at now
}

// create() writes only if the key is absent; update() reads, computes and compares-and-sets.
agents.create('lock', { load: 0 }, { ttl: 30_000 }) // expires on the host clock
assert.throws(() => agents.create('lock', { load: 0 }), (err) => isOrreryError(err, 'VERSION_CONFLICT'))
agents.update('a1', (cur) => ({ load: (cur?.load ?? 0) + 1 }))
assert.equal(agents.get('a1')?.value.load, 3)
// #endregion

// #region transaction
// All or nothing, as one revision: every check and condition holds, or nothing is written.
const lock = agents.get('lock')!
const a1 = agents.get('a1')!
const v = store
  .transaction({ writer: 'planner' })
  .check(agents, 'lock', lock.version)
  .put(agents, 'a1', { load: 0 }, { ifVersion: a1.version })
  .put(agents, 'a2', { load: 0 })
  .commit()
assert.equal(agents.get('a1')?.version, v)
assert.equal(agents.get('a2')?.version, v) // one transaction, one version
assert.equal(agents.get('a2')?.stamp.writer, 'planner')
// A stale version anywhere: VERSION_CONFLICT, and nothing was written.
assert.throws(
  () => store.transaction().put(agents, 'a2', { load: 9 }).put(agents, 'a1', { load: 9 }, { ifVersion: a1.version }).commit(),
  (err) => isOrreryError(err, 'VERSION_CONFLICT') && err.details['key'] === 'a1',
)
assert.equal(agents.get('a2')?.value.load, 0)
// #endregion

// #region watch
// A watch is a Stream of changes: from 'now' (default), 'current', or after a version.
const changes: Change<Load>[] = []
for await (const c of agents.watch('a1', { from: v1 })) {
  changes.push(c) // every change after v1, replayed from history
  if (c.version === v) break
}
assert.deepEqual(changes.map((c) => c.type), ['put', 'put', 'put'])
assert.deepEqual(agents.keys(), ['a1', 'a2', 'lock'])
// #endregion

// #region snapshot
const snapshot = store.export() // the whole store at one revision, as bytes
const copy = await Orrery.openStore({ snapshot })
assert.deepEqual(copy.namespace<Load>('agents').get('a2')?.value, { load: 0 })
copy.close()
// #endregion

store.close()
