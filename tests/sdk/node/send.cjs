// Drives @segment/analytics-node, unchanged, for tests/sdk/test_node_sdk.py.
// Input (argv[2], JSON): {host, writeKey, maxEventsInBatch, flushInterval, calls: [[method, args]]}.
// Output (stdout, JSON): the batches it posted and the answers and errors it saw; exits 1 when
// any request was not answered 2xx or the SDK reported an error.
'use strict'

const { Analytics } = require('@segment/analytics-node')

async function main() {
  const input = JSON.parse(process.argv[2])
  const analytics = new Analytics({
    writeKey: input.writeKey,
    host: input.host,
    path: '/v1/batch',
    maxEventsInBatch: input.maxEventsInBatch,
    flushInterval: input.flushInterval,
    // A rejected call is a test failure to report, not something to retry for minutes.
    maxRetries: 0,
    httpRequestTimeout: 20000,
  })
  const report = { requests: [], responses: [], errors: [] }
  analytics.on('http_request', (request) => {
    report.requests.push({ url: request.url, calls: JSON.parse(request.body).batch.length })
  })
  analytics.on('http_response', (response) => {
    report.responses.push({ url: response.url, status: response.status })
  })
  analytics.on('error', (error) => {
    report.errors.push(String((error && (error.reason || error.code)) || error))
  })
  for (const [method, args] of input.calls) {
    analytics[method](args)
  }
  await analytics.closeAndFlush({ timeout: 30000 })
  process.stdout.write(JSON.stringify(report) + '\n')
  const ok = report.responses.every((r) => r.status >= 200 && r.status < 300)
  process.exitCode = ok && report.errors.length === 0 && report.responses.length > 0 ? 0 : 1
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ crashed: String(error && error.stack) }) + '\n')
  process.exitCode = 2
})
