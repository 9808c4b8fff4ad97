iii.registerFunction('users::record-login', async (input) => {
  const logger = new Logger()

  await iii.trigger({
    function_id: 'state::update',
    payload: {
      scope: 'users',
      key: input.userId,
      ops: [
        { type: 'set', path: 'lastLogin', value: new Date().toISOString() },
        { type: 'increment', path: 'loginCount', by: 1 },
      ],
    },
  })

  logger.info('User login recorded', { userId: input.userId })
  return { updated: true }
})

// Then call from another function or worker
await iii.trigger({
  function_id: 'users::record-login',
  payload: { userId: 'some-user-id' },
})
logger.info('Login recorded')
