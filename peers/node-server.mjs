// Runs the Durable Streams reference server (Node) for interop tests and benchmarks.
//
//   node peers/node-server.mjs [--host H] [--port P] [--long-poll-timeout-ms MS] [--data-dir DIR]
//
// Each option can also come from the environment: DS_HOST, DS_PORT,
// DS_LONG_POLL_TIMEOUT_MS, DS_DATA_DIR. Port 0 asks the OS for a free port.
// Once listening it prints one line, `ready <base-url>`, on stdout; streams live
// under `<base-url>/v1/stream/<path>`. SIGTERM or SIGINT stops it (exit code 0).

import { parseArgs } from "node:util"
import { DurableStreamTestServer } from "@durable-streams/server"

const { values } = parseArgs({
  options: {
    host: { type: "string" },
    port: { type: "string" },
    "long-poll-timeout-ms": { type: "string" },
    "data-dir": { type: "string" },
  },
})

const host = values.host ?? process.env.DS_HOST ?? "127.0.0.1"
const port = Number(values.port ?? process.env.DS_PORT ?? "4437")
const longPollTimeout = Number(
  values["long-poll-timeout-ms"] ?? process.env.DS_LONG_POLL_TIMEOUT_MS ?? "500",
)
const dataDir = values["data-dir"] ?? process.env.DS_DATA_DIR ?? undefined

if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`node-server: invalid port ${JSON.stringify(port)}`)
  process.exit(2)
}
if (!Number.isFinite(longPollTimeout) || longPollTimeout <= 0) {
  console.error(`node-server: invalid long-poll timeout ${longPollTimeout}`)
  process.exit(2)
}

const server = new DurableStreamTestServer({
  host,
  port,
  longPollTimeout,
  webhooks: true,
  ...(dataDir ? { dataDir } : {}),
})

let stopping = false
async function stop(signal) {
  if (stopping) return
  stopping = true
  // Do not wait forever for lingering connections.
  const force = setTimeout(() => process.exit(0), 3000)
  force.unref()
  try {
    await server.stop()
  } catch (err) {
    console.error(`node-server: error while stopping on ${signal}:`, err)
  }
  process.exit(0)
}
process.on("SIGTERM", () => void stop("SIGTERM"))
process.on("SIGINT", () => void stop("SIGINT"))

try {
  const url = await server.start()
  console.log(`ready ${url}`)
} catch (err) {
  console.error(`node-server: failed to start on ${host}:${port}:`, err)
  process.exit(1)
}
