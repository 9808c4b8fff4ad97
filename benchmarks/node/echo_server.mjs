// The Node ceiling: a bare `ws` echo server speaking just enough iii protocol.
//
//   III_NODE_SDK=.compat/node-0.22 node benchmarks/node/echo_server.mjs PORT
//
// Answers every `invokefunction` that carries an invocation_id with an
// `invocationresult` holding the request's own data: one JSON.parse and one
// JSON.stringify per request, the least any engine can do. Binary frames (the
// SDK's OTel exports on /otel) are ignored. `ws` is the copy iii-sdk itself
// depends on, resolved from the SDK install (scripts/install-compat.sh node-0.22).
import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'

const sdkDir = resolve(process.env.III_NODE_SDK ?? '.compat/node-0.22')
const require = createRequire(resolve(sdkDir, 'package.json'))
const { WebSocketServer } = require('ws')

const port = Number(process.argv[2])
const wss = new WebSocketServer({ host: '127.0.0.1', port })
wss.on('connection', (ws) => {
  ws.send(JSON.stringify({ type: 'workerregistered', worker_id: randomUUID() }))
  ws.on('message', (data, isBinary) => {
    if (isBinary) return
    const msg = JSON.parse(data)
    if (msg.type === 'invokefunction' && typeof msg.invocation_id === 'string') {
      ws.send(JSON.stringify({
        type: 'invocationresult',
        invocation_id: msg.invocation_id,
        function_id: msg.function_id,
        result: msg.data,
      }))
    }
  })
})
wss.on('listening', () => process.stdout.write('node echo ready\n'))
