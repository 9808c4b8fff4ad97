// RBAC scenarios with the official Node iii-sdk 0.22 (tests/compat/test_rbac_official.py).
//
//   III_URL=ws://127.0.0.1:INTERNAL III_RBAC_URL=ws://127.0.0.1:PUBLIC III_NODE_SDK=.compat/node-0.22 node rbac.mjs
//
// Same steps and output as tests/compat/python/rbac.py: a trusted worker on the internal
// listener serves the auth function, the middleware, the hooks and the functions; clients on
// the RBAC listener (header x-token picks their AuthResult) try calls and registrations.
// Prints ONE JSON object on stdout; SDK chatter goes to stderr.
import { format } from 'node:util'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { randomUUID } from 'node:crypto'

for (const k of ['log', 'info', 'debug', 'warn', 'error']) {
  console[k] = (...a) => process.stderr.write(`${format(...a)}\n`)
}
const sdk = await import(pathToFileURL(resolve(process.env.III_NODE_SDK, 'sdk.mjs')).href)
const { registerWorker } = sdk
const INTERNAL = process.env.III_URL
const PUBLIC = process.env.III_RBAC_URL
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const seen = { auth: [], mw: [], fn: [], trig: [], tt: [] }
const GRANTS = {
  admin: {
    allowed_functions: ['ex::granted'],
    allow_trigger_type_registration: true,
    allowed_trigger_types: ['ex-type', 'adm-type'],
    context: { user: 'u-admin' },
  },
  restricted: { forbidden_functions: ['ex::public::echo'], context: { user: 'u-restricted' } },
  prefixed: { function_registration_prefix: 'tenant', context: { user: 'u-prefixed' } },
}
const noop = { async registerTrigger() {}, async unregisterTrigger() {} }

async function attempt(client, functionId, payload = {}) {
  try {
    const result = await client.trigger({ function_id: functionId, payload, timeoutMs: 5000 })
    return { result: result === undefined ? null : result }
  } catch (e) {
    return { error: { code: e?.code ?? null, message: String(e?.message ?? e) } }
  }
}

const server = registerWorker(INTERNAL, { workerName: 'rbac-server', otel: { enabled: false } })
server.registerFunction('rb::auth', async (data) => {
  seen.auth.push(data)
  const grants = GRANTS[data.headers['x-token']]
  if (!grants) throw new Error('invalid token')
  return grants
})
server.registerFunction('rb::mw', async (data) => {
  seen.mw.push({ function_id: data.function_id, context: data.context })
  const payload = { ...(data.payload ?? {}), via_mw: data.context.user }
  return server.trigger({ function_id: data.function_id, payload })
})
server.registerFunction('rb::on-fn', async (data) => {
  seen.fn.push(data)
  if (data.function_id.startsWith('denied::')) throw new Error('no such registrations')
  if (data.function_id === 'rw::fn') return { description: 'rewritten by the hook', metadata: { hooked: true } }
  return {}
})
server.registerFunction('rb::on-trig', async (data) => {
  seen.trig.push(data)
  if (data.function_id.startsWith('denied::')) throw new Error('no such triggers')
  return {}
})
server.registerFunction('rb::on-tt', async (data) => {
  seen.tt.push(data)
  if (data.trigger_type_id.startsWith('denied-tt')) throw new Error('no such trigger types')
  return {}
})
const strip = (d) => Object.fromEntries(Object.entries(d ?? {}).filter(([k]) => !k.startsWith('_')))
server.registerFunction('ex::public::echo', async (d) => ({ echo: strip(d) }))
server.registerFunction('ex::granted', async () => ({ granted: true }))
server.registerFunction('ex::private', async () => ({ private: true }))
server.registerFunction('ex::meta', async () => ({ meta: true }), { metadata: { public: true } })
server.registerTriggerType({ id: 'ex-type', description: 'RBAC test type' }, noop)
await sleep(500)

const client = (token) =>
  registerWorker(PUBLIC, {
    workerName: `c-${token}-${randomUUID().slice(0, 6)}`,
    headers: { 'x-token': token },
    otel: { enabled: false },
  })
const listed = async (w) =>
  (await w.trigger({ function_id: 'engine::functions::list', payload: {} })).functions.map((f) => f.function_id).sort()
const out = {}

const admin = client('admin')
out.admin_echo = await attempt(admin, 'ex::public::echo', { msg: 'hi' })
out.admin_granted = await attempt(admin, 'ex::granted')
out.admin_meta = await attempt(admin, 'ex::meta')
out.admin_private = await attempt(admin, 'ex::private')
out.admin_missing = await attempt(admin, 'ex::does-not-exist')
out.admin_log = await attempt(admin, 'engine::log::info', { message: 'infrastructure call' })
out.admin_list = await listed(admin)
out.auth_input = seen.auth[seen.auth.length - 1]

admin.registerFunction('denied::blocked', async () => ({ reached: true }))
admin.registerFunction('rw::fn', async () => ({ rw: true }))
admin.registerFunction('own::target', async () => ({ own: true }))
admin.registerTriggerType({ id: 'denied-tt::x', description: 'should be denied' }, noop)
admin.registerTriggerType({ id: 'adm-type', description: 'allowed' }, noop)
admin.registerTrigger({ type: 'not-allowed-type', function_id: 'own::target', config: {} })
admin.registerTrigger({ type: 'ex-type', function_id: 'denied::fn', config: { k: 1 } })
admin.registerTrigger({ type: 'ex-type', function_id: 'ex::private', config: {} })
admin.registerTrigger({ type: 'ex-type', function_id: 'own::target', config: { k: 2 } })
await sleep(1000)
out.blocked_from_internal = await attempt(server, 'denied::blocked')
out.rw_from_internal = await attempt(server, 'rw::fn')
const internalList = (await server.trigger({ function_id: 'engine::functions::list', payload: {} })).functions
out.rw_listed = internalList.find((f) => f.function_id === 'rw::fn') ?? null
let types = await server.trigger({ function_id: 'engine::triggers::list', payload: { include_internal: true } })
out.trigger_types = types.triggers.map((t) => t.id).sort()
const bound = await server.trigger({ function_id: 'engine::registered-triggers::list', payload: {} })
out.bound = bound.registered_triggers.map((t) => `${t.trigger_type}>${t.function_id}`).sort()

const restricted = client('restricted')
out.restricted_echo = await attempt(restricted, 'ex::public::echo')
out.restricted_meta = await attempt(restricted, 'ex::meta')
out.restricted_list = await listed(restricted)
const ttBefore = seen.tt.length
restricted.registerTriggerType({ id: 'restricted-type', description: 'not granted' }, noop)
await sleep(500)
out.restricted_tt_hook_calls = seen.tt.length - ttBefore
types = await server.trigger({ function_id: 'engine::triggers::list', payload: { include_internal: true } })
out.restricted_type_registered = types.triggers.some((t) => t.id === 'restricted-type')

const prefixed = client('prefixed')
const handle = prefixed.registerFunction('mine', async () => ({ from: 'tenant' }))
await sleep(500)
out.prefixed_call = await attempt(server, 'tenant::mine')
handle.unregister()
await sleep(500)
out.prefixed_after_unregister = await attempt(server, 'tenant::mine')

out.hooks = {
  fn: seen.fn.map((d) => [d.function_id, d.context]),
  trig: seen.trig.map((d) => [d.function_id, d.trigger_type, d.context]),
  tt: seen.tt.map((d) => [d.trigger_type_id, d.description, d.context]),
}
out.middleware = seen.mw

for (const w of [prefixed, restricted, admin, server]) await w.shutdown()
process.stdout.write(`${JSON.stringify(out)}\n`)
process.exit(0)
