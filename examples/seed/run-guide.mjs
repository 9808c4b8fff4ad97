// Runs the State guide's TypeScript files exactly as written with npm iii-sdk@0.9.0:
//   III_URL=ws://127.0.0.1:49134 node_modules/.bin/tsx run-guide.mjs [--serve]
// (node_modules: `npm install` here, or a link to .compat/node-0.9/node_modules, see README.md).
import { registerWorker, Logger } from 'iii-sdk'
import { runGuide } from './guide-runner.mjs'

await runGuide({ registerWorker, Logger, dir: import.meta.dirname, label: 'iii-sdk@0.9.0 (guide as written)' })
