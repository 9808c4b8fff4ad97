// Version-agnostic compat worker for the official Node iii-sdk (0.9.0 and 0.22.1).
//
//   III_URL=ws://127.0.0.1:PORT III_NODE_SDK=.compat/node-0.9 node tests/compat/node/worker.mjs ROLE [ARGS]
//
// III_NODE_SDK points at an install made by scripts/install-compat.sh; its sdk.mjs is the
// only per-version code (Logger location, registerFunction form). Roles:
//   serve-add PREFIX                 PREFIX::add -> {c: a+b}, PREFIX::fail throws Error('boom'),
//                                    PREFIX::slow sleeps data.ms (default 60000) -> {slept: ms}; runs until killed
//   call FUNCTION_ID [JSON] [MS]     one trigger; prints {"result":..} or {"error":{code,message,class}}
//   log [MESSAGE]                    Logger().info(MESSAGE ?? 'hello from node', {userId: 'u1'})
//   increment SCOPE KEY N [PATH]     N concurrent state::update increments of PATH (default "count");
//                                    with III_START_AT_MS they start at that epoch ms (output gets late_ms)
//   state-trigger FUNCTION_ID SCOPE [KEY]   'state' trigger; prints {"event":..} per event; runs until killed
//   serve-channels PREFIX            PREFIX::consume {reader, slow_ms?} reads a channel -> {bytes, sha256, texts};
//                                    PREFIX::produce {writer, size, texts?} writes texts then `size` pattern bytes
//                                    and ends -> {bytes, sha256}; runs until killed
//   channel-send FUNCTION_ID SIZE [BUFFER_SIZE] [TEXTS_JSON] [EXTRA_JSON]     createChannel, trigger
//                                    FUNCTION_ID with {...EXTRA, reader: readerRef} while writing the texts and
//                                    SIZE pattern bytes; prints {"result":..,"sent":{bytes,sha256}}
//   channel-receive FUNCTION_ID SIZE [BUFFER_SIZE] [TEXTS_JSON] [EXTRA_JSON]  createChannel, trigger
//                                    FUNCTION_ID with {...EXTRA, writer: writerRef, size, texts} while reading;
//                                    prints {"result":..,"received":{bytes,sha256,texts}}
//   pubsub-subscribe FUNCTION_ID TOPIC   'subscribe' trigger; prints {"message":..} per message; runs until killed
//   pubsub-publish TOPIC [JSON] [void]  trigger('publish', {topic, data}) (as a Void action with 'void');
//                                    prints {"result":..} or {"error":..}
//   cron FUNCTION_ID EXPRESSION      'cron' trigger; prints {"event":..} per run; runs until killed
//   subscribe FUNCTION_ID TOPIC [TYPE]       durable subscription (TYPE durable:subscriber, or 'queue' for
//                                    the older name); prints {"message":..} per delivery, throws
//                                    Error('boom') for data.fail; runs until killed
//   publish TOPIC COUNT              COUNT concurrent iii::durable::publish {topic, data: {n}}; prints
//                                    {"published":n,"failed":n,"errors":[..]}
//   enqueue FUNCTION_ID QUEUE [JSON] one trigger with the enqueue action; prints {"result":..} or {"error":..}
//   serve-http FUNCTION_ID INVOCATION_JSON [WAIT_MS]   registerFunction(FUNCTION_ID, INVOCATION) (0.22+): served
//                                    by the engine calling INVOCATION.url; prints {"ready":true,"listed":bool} once
//                                    engine::functions::list shows it (or after WAIT_MS, default 3000); on SIGTERM unregisters
//                                    it, prints {"unregistered":..} and exits
// stdout carries ONLY one JSON object per line; SDK chatter is redirected to stderr.
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { format } from 'node:util'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

for (const k of ['log', 'info', 'debug', 'warn']) {
  console[k] = (...a) => process.stderr.write(`${format(...a)}\n`)
}
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const fail = (msg) => { emit({ fatal: msg }); process.exit(2) }

const url = process.env.III_URL
const sdkDir = process.env.III_NODE_SDK
if (!url) fail('III_URL is not set')
if (!sdkDir) fail('III_NODE_SDK is not set (e.g. .compat/node-0.9)')
const sdk = await import(pathToFileURL(resolve(sdkDir, 'sdk.mjs')).href)
const [role, ...args] = process.argv.slice(2)
const ROLES = [
  'serve-add', 'call', 'log', 'increment', 'state-trigger', 'serve-channels', 'channel-send', 'channel-receive',
  'pubsub-subscribe', 'pubsub-publish', 'cron', 'subscribe', 'publish', 'enqueue', 'serve-http',
  'stream-trigger', 'stream-custom', 'calls',
]
if (!ROLES.includes(role)) fail(`unknown role '${role}' (expected: ${ROLES.join(', ')})`)

// 0.9.0 rejects with the raw wire ErrorBody (a plain object); 0.22.1 with InvocationError,
// whose .message is "<code>: <message>". Report what user code sees.
const errorJson = (e) => ({
  code: e?.code ?? null,
  message: e?.message ?? String(e),
  class: e?.constructor?.name ?? typeof e,
})

// III_HEADERS (a JSON object) adds upgrade headers, e.g. {"Authorization":"Bearer <token>"} (0.22+; 0.9 ignores it).
const headers = process.env.III_HEADERS ? JSON.parse(process.env.III_HEADERS) : undefined
const iii = sdk.registerWorker(url, {
  workerName: process.env.III_WORKER_NAME ?? `compat-node-${role}-${process.pid}`,
  ...(headers ? { headers } : {}),
})

let stopping = false
async function stop(code = 0) {
  if (stopping) return
  stopping = true
  // 0.9.0's shutdown() can hang ~30 s flushing spans when the engine is gone: cap it.
  const shutdown = iii.shutdown().catch((e) => process.stderr.write(`shutdown: ${e}\n`))
  await Promise.race([shutdown, sleep(5000)])
  process.exit(code)
}
let beforeStop = async () => {}
process.on('SIGTERM', () => beforeStop().then(() => stop(0)))
process.on('SIGINT', () => beforeStop().then(() => stop(0)))

// Registrations carry no ack: a round trip through the engine to one of our own functions
// proves the engine has processed everything sent before it on this socket.
async function waitRoutable(functionId, payload, deadlineMs = 15000) {
  const until = Date.now() + deadlineMs
  for (;;) {
    try { return await iii.trigger({ function_id: functionId, payload, timeoutMs: 2000 }) } catch (e) {
      if (Date.now() > until) fail(`not routable: ${functionId}: ${JSON.stringify(errorJson(e))}`)
      await sleep(200)
    }
  }
}

async function serveAdd(prefix = 'compat') {
  sdk.registerFunction(iii, `${prefix}::add`, async (data) => {
    if (!data?.__ready) emit({ invoked: `${prefix}::add`, data })
    return { c: data.a + data.b }
  })
  sdk.registerFunction(iii, `${prefix}::fail`, async (data) => {
    emit({ invoked: `${prefix}::fail`, data })
    throw new Error('boom')
  })
  sdk.registerFunction(iii, `${prefix}::slow`, async (data) => {
    const ms = Number(data?.ms ?? 60000)
    emit({ invoked: `${prefix}::slow`, data })
    await sleep(ms)
    return { slept: ms }
  })
  await waitRoutable(`${prefix}::add`, { a: 0, b: 0, __ready: true })
  emit({ ready: true, sdk: sdk.sdkVersion })
}

async function call(functionId, json = 'null', timeoutMs) {
  const request = { function_id: functionId, payload: JSON.parse(json) }
  if (timeoutMs) request.timeoutMs = Number(timeoutMs)
  try {
    const result = await iii.trigger(request)
    emit({ result: result ?? null })
  } catch (e) {
    emit({ error: errorJson(e) })
  }
  await stop(0)
}

async function log(message = 'hello from node') {
  new sdk.Logger().info(message, { userId: 'u1' })
  emit({ logged: message, sdk: sdk.sdkVersion })
  await sleep(1000) // batch flush is 100 ms; give the telemetry socket time to connect and send
  await stop(0)
}

async function increment(scope, key, n = '10', path = 'count') {
  const ops = [{ type: 'increment', path, by: 1 }]
  // III_START_AT_MS (epoch ms): connect first, then fire at that moment (lines up several workers)
  const startAt = Number(process.env.III_START_AT_MS ?? 0)
  let lateMs = 0
  if (startAt) {
    await iii.trigger({ function_id: 'state::get', payload: { scope, key } })
    lateMs = Math.max(0, Date.now() - startAt)
    await sleep(Math.max(0, startAt - Date.now()))
  }
  const outcomes = await Promise.allSettled(
    Array.from({ length: Number(n) }, () =>
      iii.trigger({ function_id: 'state::update', payload: { scope, key, ops } })),
  )
  const errors = outcomes.filter((o) => o.status === 'rejected').map((o) => errorJson(o.reason))
  const final = await iii.trigger({ function_id: 'state::get', payload: { scope, key } }).catch((e) => ({ error: errorJson(e) }))
  const out = { ok: outcomes.length - errors.length, failed: errors.length, errors: errors.slice(0, 5), final: final ?? null }
  if (startAt) out.late_ms = lateMs
  emit(out)
  await stop(0)
}

async function stateTrigger(functionId, scope, key) {
  sdk.registerFunction(iii, functionId, async (data) => {
    if (data?.__ready) return { pong: true }
    emit({ event: data })
    return {}
  })
  const config = key === undefined ? { scope } : { scope, key }
  iii.registerTrigger({ type: 'state', function_id: functionId, config })
  await waitRoutable(functionId, { __ready: true })
  emit({ ready: true, sdk: sdk.sdkVersion })
}

// -- channels ------------------------------------------------------------------------------
// 0.9 has iii.createChannel(n); 0.22 moved it to the 'iii-sdk/helpers' free function createChannel(iii, n).
async function createChannel(bufferSize) {
  if (typeof iii.createChannel === 'function') return iii.createChannel(bufferSize)
  const helpers = resolve(sdkDir, 'node_modules/iii-sdk/dist/helpers.mjs')
  if (!existsSync(helpers)) fail(`no createChannel in ${sdkDir}`)
  return (await import(pathToFileURL(helpers).href)).createChannel(iii, bufferSize)
}

// The same bytes in every language: byte i is i % 251.
const pattern = (size) => {
  const buf = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i++) buf[i] = i % 251
  return buf
}
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex')

async function readChannel(reader, slowMs = 0) {
  const texts = []
  reader.onMessage((msg) => texts.push(msg))
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of reader.stream) {
    hash.update(chunk)
    bytes += chunk.length
    if (slowMs) await sleep(slowMs)
  }
  return { bytes, sha256: hash.digest('hex'), texts }
}

async function writeChannel(writer, size, texts = []) {
  for (const text of texts) writer.sendMessage(text)
  const data = pattern(size)
  await new Promise((resolveWrite, reject) => {
    writer.stream.once('error', reject)
    let offset = 0
    const next = () => {
      while (offset < data.length) {
        const end = Math.min(offset + 256 * 1024, data.length)
        const more = writer.stream.write(data.subarray(offset, end))
        offset = end
        if (!more) return writer.stream.once('drain', next)
      }
      writer.stream.end((err) => (err ? reject(err) : resolveWrite()))
    }
    next()
  })
  return { bytes: size, sha256: sha256(data) }
}

async function serveChannels(prefix = 'compat') {
  sdk.registerFunction(iii, `${prefix}::consume`, async (data) => {
    if (data?.__ready) return { pong: true }
    return readChannel(data.reader, Number(data.slow_ms ?? 0))
  })
  sdk.registerFunction(iii, `${prefix}::produce`, async (data) =>
    writeChannel(data.writer, Number(data.size), data.texts ?? []))
  await waitRoutable(`${prefix}::consume`, { __ready: true })
  emit({ ready: true, sdk: sdk.sdkVersion })
}

async function channelSend(functionId, size, bufferSize, texts = '[]', extra = '{}') {
  const channel = await createChannel(bufferSize ? Number(bufferSize) : undefined)
  try {
    const payload = { ...JSON.parse(extra), reader: channel.readerRef }
    const call = iii.trigger({ function_id: functionId, payload, timeoutMs: 60000 })
    const [sent, result] = await Promise.all([writeChannel(channel.writer, Number(size), JSON.parse(texts)), call])
    emit({ result, sent })
  } catch (e) {
    emit({ error: errorJson(e) })
  }
  await stop(0)
}

async function channelReceive(functionId, size, bufferSize, texts = '[]', extra = '{}') {
  const channel = await createChannel(bufferSize ? Number(bufferSize) : undefined)
  try {
    const payload = { ...JSON.parse(extra), writer: channel.writerRef, size: Number(size), texts: JSON.parse(texts) }
    const call = iii.trigger({ function_id: functionId, payload, timeoutMs: 60000 })
    const [received, result] = await Promise.all([readChannel(channel.reader), call])
    emit({ result, received })
  } catch (e) {
    emit({ error: errorJson(e) })
  }
  await stop(0)
}

// A function bound by a trigger: prints each payload as {KEY: payload}; a {__ready: true} call is the
// readiness probe (it proves the engine has the registrations sent before it).
async function bound(functionId, type, config, key) {
  sdk.registerFunction(iii, functionId, async (data) => {
    if (data?.__ready) return { pong: true }
    emit({ [key]: data })
    return {}
  })
  iii.registerTrigger({ type, function_id: functionId, config })
  await waitRoutable(functionId, { __ready: true })
  emit({ ready: true, sdk: sdk.sdkVersion })
}

const pubsubSubscribe = (functionId, topic) => bound(functionId, 'subscribe', { topic }, 'message')
const cron = (functionId, expression) => bound(functionId, 'cron', { expression }, 'event')

async function pubsubPublish(topic, json = 'null', mode = '') {
  const request = { function_id: 'publish', payload: { topic, data: JSON.parse(json) } }
  if (mode === 'void') request.action = { type: 'void' }
  try {
    const result = await iii.trigger(request)
    emit({ result: result ?? null })
  } catch (e) {
    emit({ error: errorJson(e) })
  }
  await sleep(200) // a void frame has no answer: let it leave before the socket closes
  await stop(0)
}

async function subscribe(functionId, topic, type = 'durable:subscriber') {
  sdk.registerFunction(iii, functionId, async (data) => {
    if (data?.__ready) return { pong: true }
    emit({ message: data })
    if (data?.fail) throw new Error('boom')
    return { ok: true }
  })
  iii.registerTrigger({ type, function_id: functionId, config: { topic } })
  await waitRoutable(functionId, { __ready: true })
  emit({ ready: true, sdk: sdk.sdkVersion })
}

async function publish(topic, count = '1') {
  const outcomes = await Promise.allSettled(
    Array.from({ length: Number(count) }, (_, n) =>
      iii.trigger({ function_id: 'iii::durable::publish', payload: { topic, data: { n } } })),
  )
  const errors = outcomes.filter((o) => o.status === 'rejected').map((o) => errorJson(o.reason))
  emit({ published: outcomes.length - errors.length, failed: errors.length, errors: errors.slice(0, 5) })
  await stop(0)
}

async function enqueue(functionId, queue, json = '{}') {
  // What TriggerAction.Enqueue({ queue }) of 0.22 returns; 0.9 has no such helper.
  const action = sdk.TriggerAction?.Enqueue ? sdk.TriggerAction.Enqueue({ queue }) : { type: 'enqueue', queue }
  try {
    const result = await iii.trigger({ function_id: functionId, payload: JSON.parse(json), action })
    emit({ result: result ?? null })
  } catch (e) {
    emit({ error: errorJson(e) })
  }
  await stop(0)
}

async function listed(functionId) {
  const { functions } = await iii.trigger({ function_id: 'engine::functions::list', payload: {} })
  return functions.some((f) => f.function_id === functionId)
}

async function serveHttp(functionId, invocation, waitMs = '3000') {
  const ref = sdk.registerFunction(iii, functionId, JSON.parse(invocation))
  const until = Date.now() + Number(waitMs)
  let found = false
  while (!(found = await listed(functionId)) && Date.now() < until) await sleep(100)
  emit({ ready: true, listed: found, sdk: sdk.sdkVersion })
  beforeStop = async () => {
    ref.unregister()
    await sleep(300) // let the frame leave before the socket closes
    emit({ unregistered: functionId })
  }
}

// -- streams ---------------------------------------------------------------------------------
// A binding of trigger type TYPE (stream, stream:join, stream:leave) with CONFIG (JSON); each
// event is emitted; a join for group "secret" is refused with {unauthorized: true}.
async function streamTrigger(functionId, type, configJson = '{}') {
  sdk.registerFunction(iii, functionId, async (data) => {
    if (data?.__ready) return { pong: true }
    emit({ event: data })
    return type === 'stream:join' ? { unauthorized: data?.group_id === 'secret' } : {}
  })
  iii.registerTrigger({ type, function_id: functionId, config: JSON.parse(configJson) })
  await waitRoutable(functionId, { __ready: true })
  emit({ ready: true, sdk: sdk.sdkVersion })
}

// Serves stream NAME from a Map through the SDK's createStream (0.9: iii.createStream;
// 0.22: the 'iii-sdk/helpers' free function), emitting each call.
async function streamCustom(streamName) {
  const items = new Map()
  const key = (i) => `${i.group_id}/${i.item_id}`
  const impl = {
    get: async (i) => { emit({ op: 'get', input: i }); return items.get(key(i)) ?? null },
    set: async (i) => {
      emit({ op: 'set', input: i })
      const old = items.get(key(i)) ?? null
      items.set(key(i), i.data)
      return { old_value: old, new_value: i.data }
    },
    delete: async (i) => {
      emit({ op: 'delete', input: i })
      const old = items.get(key(i)) ?? null
      items.delete(key(i))
      return { old_value: old }
    },
    list: async (i) => [...items.entries()].filter(([k]) => k.startsWith(`${i.group_id}/`)).map(([, v]) => v),
    listGroups: async () => [...new Set([...items.keys()].map((k) => k.split('/')[0]))].sort(),
    update: async () => { throw new Error('not implemented') },
  }
  if (typeof iii.createStream === 'function') iii.createStream(streamName, impl)
  else {
    const helpers = resolve(sdkDir, 'node_modules/iii-sdk/dist/helpers.mjs')
    ;(await import(pathToFileURL(helpers).href)).createStream(iii, streamName, impl)
  }
  await waitRoutable(`stream::list_groups(${streamName})`, { stream_name: streamName })
  emit({ ready: true, sdk: sdk.sdkVersion })
}

// Several calls in order, from a JSON array of [function_id, payload]: one {results} line.
async function calls(json) {
  const results = []
  for (const [functionId, payload] of JSON.parse(json)) {
    try {
      results.push({ result: (await iii.trigger({ function_id: functionId, payload })) ?? null })
    } catch (e) {
      results.push({ error: errorJson(e) })
    }
  }
  emit({ results })
  await stop(0)
}

const roles = {
  calls,
  'stream-trigger': streamTrigger,
  'stream-custom': streamCustom,
  'serve-add': serveAdd,
  call,
  log,
  increment,
  'state-trigger': stateTrigger,
  'serve-channels': serveChannels,
  'channel-send': channelSend,
  'channel-receive': channelReceive,
  'pubsub-subscribe': pubsubSubscribe,
  'pubsub-publish': pubsubPublish,
  cron,
  subscribe,
  publish,
  enqueue,
  'serve-http': serveHttp,
}
await roles[role](...args)
