// Shared by run-guide.mjs (iii-sdk 0.9.0) and latest/run-guide.mjs (0.22.1): imports the
// guide's three files from `dir`, in the guide's order, WITHOUT changing them.
//
// The guide's snippets use names they never declare; this runner provides them as globals,
// the way the guide implies they exist:
//   - state-writer.ts ends with `logger.info('Created user', ...)` but declares `logger` only
//     inside its handler (a bug in the guide): a global `logger` exists before it runs.
//   - state-reader.ts and state-update.ts are fragments that use `iii`, `Logger` and `logger`:
//     the writer's `iii` is private to its module, so the runner connects a second worker
//     and makes it the global `iii` (with its own telemetry off: the SDK keeps telemetry in
//     process-wide singletons that a second worker would replace, losing the writer's logs).
// stdout: one JSON object per line ({"step"}, {"users"}, {"ready"}); SDK chatter goes to stderr.
// --serve keeps users::create, users::get and users::record-login served until SIGTERM.
import { format } from 'node:util'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const FILES = ['state-writer.ts', 'state-reader.ts', 'state-update.ts']
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

export async function runGuide({ registerWorker, Logger, dir, label }) {
  for (const k of ['log', 'info', 'debug', 'warn']) {
    console[k] = (...a) => process.stderr.write(`${format(...a)}\n`)
  }
  const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`)
  const url = process.env.III_URL ?? 'ws://localhost:49134'
  let iii = null

  async function exit(code) {
    // shutdown() flushes the process's log records (the writer's too) and closes the socket;
    // the writer's own worker has no handle out of its module, so exit explicitly, once the
    // closing handshakes are done.
    if (iii) await Promise.race([iii.shutdown(), sleep(5000)])
    await sleep(300)
    process.exit(code)
  }

  globalThis.Logger = Logger
  globalThis.logger = new Logger()
  for (const file of FILES) {
    if (file !== FILES[0] && !iii) {
      iii = registerWorker(url, { workerName: 'seed-guide-fragments', otel: { enabled: false } })
      globalThis.iii = iii
    }
    try {
      await import(pathToFileURL(join(dir, file)).href)
      emit({ step: file, ok: true, sdk: label })
    } catch (e) {
      emit({ step: file, ok: false, error: String(e?.stack ?? e) })
      await exit(1)
    }
  }
  const users = await iii.trigger({ function_id: 'state::list', payload: { scope: 'users' } })
  emit({ users })

  if (process.argv.includes('--serve')) {
    emit({ ready: true })
    await new Promise((r) => {
      process.on('SIGTERM', r)
      process.on('SIGINT', r)
    })
  }
  await exit(0)
}
