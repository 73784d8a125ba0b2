// The shared test helpers, by concern. Not named *.test.ts, so tap does not run these files.
export * from './wait.js'
export * from './frames.js'
export * from './raw-client.js'
export * from './app.js'
export * from './memory.js'
export * from './process.js'
export * from './receiver-host.js'
