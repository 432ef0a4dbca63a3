// Errors. Run by test/examples.test.ts on both engines; the region is the code block of
// docs/errors.md.
import assert from 'node:assert/strict'
import { isOrreryError, Orrery, OrreryError } from 'orrery'

// #region errors
const orrery = await Orrery.create()
const store = orrery.openStore()
const counters = store.namespace<number>('counters')
counters.put('hits', 1)

try {
  counters.create('hits', 0)
} catch (err) {
  // isOrreryError narrows to OrreryError and, given a code, checks it.
  if (!isOrreryError(err, 'VERSION_CONFLICT')) throw err
  assert.ok(err instanceof OrreryError && err instanceof Error)
  assert.equal(err.code, 'VERSION_CONFLICT')
  assert.equal(err.details['key'], 'hits')
  assert.equal(err.details['expected'], 0) // 0: absent (create)
  assert.equal(err.details['current'], 1)
}

// Invalid options are refused before anything happens, naming the option.
assert.throws(
  () => orrery.bus.channel('orders', { retention: { maxCount: -1 } }),
  (err) => isOrreryError(err, 'INVALID_OPTION') && err.details['option'] === 'retention.maxCount',
)

// After close, every call fails with CLOSED.
store.close()
orrery.close()
assert.throws(() => counters.get('hits'), (err) => isOrreryError(err, 'CLOSED'))
await assert.rejects(orrery.bus.publish('orders', 1), (err) => isOrreryError(err, 'CLOSED'))
// #endregion
