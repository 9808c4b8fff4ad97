// HTTP routes served by the official Node iii-sdk (0.22.x) and its @iii-dev/helpers/http helper.
//
//   III_URL=ws://127.0.0.1:PORT III_NODE_SDK=.compat/node-0.22 node node_routes.mjs
//
// Prints {"ready":true} once every route is registered, then runs until SIGTERM.
import { format } from 'node:util'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

for (const k of ['log', 'info', 'debug', 'warn']) {
  console[k] = (...a) => process.stderr.write(`${format(...a)}\n`)
}
const sdkDir = process.env.III_NODE_SDK
const load = (p) => import(pathToFileURL(resolve(sdkDir, 'node_modules', p)).href)
const { registerWorker } = await load('iii-sdk/dist/index.mjs')
const { http } = await load('@iii-dev/helpers/dist/http/index.mjs')

const iii = registerWorker(process.env.III_URL, { workerName: 'node-http-routes' })
const route = (id, handler, config) => {
  iii.registerFunction(id, handler)
  iii.registerTrigger({ type: 'http', function_id: id, config })
}

route('node::hello', async () => ({ status_code: 200, body: { message: 'hello', from: 'node' } }), {
  api_path: 'node/hello',
  http_method: 'GET',
})
route(
  'node::items::create',
  async (req) => ({
    status_code: 201,
    headers: { 'x-item': req.path_params.id },
    body: { id: req.path_params.id, got: req.body, q: req.query_params },
  }),
  { api_path: '/node/items/:id', http_method: 'POST' },
)
route('node::fails', async () => { throw new Error('node handler broke') }, {
  api_path: 'node/fails',
  http_method: 'GET',
})
iii.registerFunction('node::mw::token', async (input) =>
  input.request.headers['x-token'] === 'secret'
    ? { action: 'continue' }
    : { action: 'respond', response: { status_code: 401, body: { error: 'token required' } } },
)
route('node::secure', async () => ({ status_code: 200, body: { secret: 42 } }), {
  api_path: 'node/secure',
  http_method: 'GET',
  middleware_function_ids: ['node::mw::token'],
})
iii.registerFunction('node::cond::allow', async (req) => req.query_params.allow === 'yes')
route('node::conditional', async () => ({ status_code: 200, body: { allowed: true } }), {
  api_path: 'node/cond',
  http_method: 'GET',
  condition_function_id: 'node::cond::allow',
})
route(
  'node::stream',
  http(async (req, res) => {
    res.status(206)
    res.headers({ 'content-type': 'text/plain', 'x-streamed': 'yes' })
    for (const part of ['alpha ', 'beta ', 'gamma']) res.stream.write(Buffer.from(part))
    res.stream.end()
  }),
  { api_path: 'node/stream', http_method: 'GET' },
)
route(
  'node::raw',
  http(async (req, res) => {
    const raw = await req.request_body.readAll()
    res.status(200)
    res.headers({ 'content-type': 'application/json' })
    const text = (req.headers['content-type'] ?? '').includes('json') ? raw.toString('utf-8') : null
    res.stream.end(Buffer.from(JSON.stringify({ parsed: req.body, raw: text, size: raw.length, sum: raw.reduce((a, b) => a + b, 0) })))
  }),
  { api_path: 'node/raw', http_method: 'POST' },
)

await new Promise((r) => setTimeout(r, 200))
process.stdout.write(`${JSON.stringify({ ready: true })}\n`)
const stop = async () => {
  await Promise.race([iii.shutdown(), new Promise((r) => setTimeout(r, 3000))])
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
