// Load generator on the OFFICIAL Node iii-sdk: N concurrent loops of iii.trigger().
//
//   III_NODE_SDK=.compat/node-0.22 node benchmarks/node/client.mjs '<spec JSON>'
//
// spec: {targets: [{label, url}], function_id, payload, inflight, seconds, rounds, warmup}
// Connects one SDK worker per target, warms each up, then measures in
// alternating windows (A B, B A, ...) like benchmarks/common.py, so the
// targets share the same background load. stdout, one JSON object per line:
//   {"start": label} / {"end": label}   around every measured window
//   {"result": label, "ops_per_s", "p50_us", "p99_us", "client_cpu"}   at the end
// SDK chatter goes to stderr.
import { format } from 'node:util'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { performance } from 'node:perf_hooks'

for (const k of ['log', 'info', 'debug', 'warn']) {
  console[k] = (...a) => process.stderr.write(`${format(...a)}\n`)
}
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const spec = JSON.parse(process.argv[2])
const sdkDir = resolve(process.env.III_NODE_SDK ?? '.compat/node-0.22')
const sdk = await import(pathToFileURL(resolve(sdkDir, 'sdk.mjs')).href)

const targets = spec.targets.map((t) => ({
  ...t,
  iii: sdk.registerWorker(t.url, { workerName: `bench-node-${t.label}` }),
  latencies: [],
  count: 0,
  elapsed: 0,
  cpu: 0,
}))

// Wait until each target answers (the SDK connects in the background).
for (const t of targets) {
  const until = Date.now() + 15000
  for (;;) {
    try {
      await t.iii.trigger({ function_id: spec.function_id, payload: spec.payload, timeoutMs: 2000 })
      break
    } catch (e) {
      if (Date.now() > until) { emit({ fatal: `${t.label}: ${e?.message ?? e}` }); process.exit(2) }
      await sleep(100)
    }
  }
}

async function window(t, seconds, record) {
  const start = performance.now()
  const stopAt = start + seconds * 1000
  let done = 0
  const request = { function_id: spec.function_id, payload: spec.payload }
  async function loop() {
    for (;;) {
      const now = performance.now()
      if (now >= stopAt) return
      await t.iii.trigger(request)
      done += 1
      if (record) t.latencies.push(performance.now() - now)
    }
  }
  await Promise.all(Array.from({ length: spec.inflight }, loop))
  return [done, (performance.now() - start) / 1000]
}

for (const t of targets) await window(t, spec.warmup, false)
for (let r = 0; r < spec.rounds; r++) {
  const order = r % 2 === 0 ? targets : [...targets].reverse()
  for (const t of order) {
    emit({ start: t.label })
    const cpu0 = process.cpuUsage()
    const [n, elapsed] = await window(t, spec.seconds / spec.rounds, true)
    const cpu = process.cpuUsage(cpu0)
    emit({ end: t.label })
    t.cpu += (cpu.user + cpu.system) / 1e6
    t.count += n
    t.elapsed += elapsed
  }
}
for (const t of targets) {
  const lat = t.latencies.sort((a, b) => a - b)
  const pick = (q) => lat[Math.min(lat.length - 1, Math.floor(lat.length * q))] * 1000
  emit({
    result: t.label,
    ops_per_s: t.count / t.elapsed,
    p50_us: pick(0.5),
    p99_us: pick(0.99),
    client_cpu: t.cpu / t.elapsed,
  })
}
await Promise.race([Promise.all(targets.map((t) => t.iii.shutdown())), sleep(3000)])
process.exit(0)
