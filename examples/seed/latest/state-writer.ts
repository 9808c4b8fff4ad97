import { registerWorker } from 'iii-sdk'
import { Logger } from '@iii-dev/helpers/observability'

const iii = registerWorker(process.env.III_URL ?? 'ws://localhost:49134')

iii.registerFunction('users::create', async (input) => {
  const logger = new Logger()
  const userId = crypto.randomUUID()
  const user = { id: userId, name: input.name, email: input.email }

  await iii.trigger({
    function_id: 'state::set',
    payload: { scope: 'users', key: userId, value: user },
  })

  logger.info('User saved to state', { userId })
  return { userId }
})

// Then call from another function or worker
const { userId } = await iii.trigger({
  function_id: 'users::create',
  payload: { name: 'Alice', email: 'alice@example.com' },
})
logger.info('Created user', { userId })
