// Adapter for tests/compat/node/worker.mjs: the ONLY per-version Node code.
// iii-sdk 0.9.0: Logger is exported by 'iii-sdk'; registerFunction takes an object ({ id }).
// scripts/install-compat.sh copies this file into .compat/node-0.9/ so 'iii-sdk' resolves there.
import { readFileSync } from 'node:fs'
export { registerWorker, Logger } from 'iii-sdk'

export const sdkVersion = JSON.parse(
  readFileSync(new URL('./node_modules/iii-sdk/package.json', import.meta.url), 'utf8'),
).version

export const registerFunction = (iii, id, handler) => iii.registerFunction({ id }, handler)
