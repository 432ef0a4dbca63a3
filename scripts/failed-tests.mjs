// Prints the totals of a vitest JSON report and every failed test by file and name, with the first
// line of its error, so the end of a CI log says what failed without a search through the middle.
// Usage: node scripts/failed-tests.mjs target/vitest.json
import { readFileSync } from 'node:fs'
import { relative } from 'node:path'

const file = process.argv[2]
const report = JSON.parse(readFileSync(file, 'utf8'))
console.log(
  `${file}: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${report.numPendingTests} skipped`,
)
for (const suite of report.testResults) {
  const where = relative(process.cwd(), suite.name)
  const failed = suite.assertionResults.filter((t) => t.status === 'failed')
  for (const test of failed) {
    const first = (test.failureMessages[0] ?? '').split('\n')[0]
    console.log(`  FAIL ${where} > ${test.fullName}\n       ${first.slice(0, 300)}`)
  }
  // A file that failed outside any test (an import error, an unhandled rejection) has no failed test.
  if (failed.length === 0 && suite.status === 'failed') {
    console.log(`  FAIL ${where}: ${(suite.message ?? '').split('\n')[0].slice(0, 300)}`)
  }
}
// vitest fails a run whose tests all passed when an error escaped them (an unhandled rejection).
if (!report.success && report.numFailedTests === 0) {
  console.log('  the run failed outside its tests: search the log for "Unhandled"')
}
