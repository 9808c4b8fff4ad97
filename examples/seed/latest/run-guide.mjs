// Runs the guide's flows adapted for npm iii-sdk@0.22.1 (this directory's state-*.ts):
//   III_URL=ws://127.0.0.1:49134 node_modules/.bin/tsx run-guide.mjs [--serve]
import { registerWorker } from 'iii-sdk'
import { Logger } from '@iii-dev/helpers/observability'
import { runGuide } from '../guide-runner.mjs'

await runGuide({ registerWorker, Logger, dir: import.meta.dirname, label: 'iii-sdk@0.22.1 (latest)' })
