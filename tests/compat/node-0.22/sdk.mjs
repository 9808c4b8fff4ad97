// Adapter for tests/compat/node/worker.mjs: the ONLY per-version Node code.
// iii-sdk 0.22.1: 'iii-sdk' no longer exports Logger (it lives in '@iii-dev/helpers/observability');
// registerFunction takes the id as a string (an object throws "functionId.trim is not a function").
// scripts/install-compat.sh copies this file into .compat/node-0.22/ so 'iii-sdk' resolves there.
import { readFileSync } from 'node:fs'
export { registerWorker } from 'iii-sdk'
export { Logger } from '@iii-dev/helpers/observability'

export const sdkVersion = JSON.parse(
  readFileSync(new URL('./node_modules/iii-sdk/package.json', import.meta.url), 'utf8'),
).version

export const registerFunction = (iii, id, handler) => iii.registerFunction(id, handler)
