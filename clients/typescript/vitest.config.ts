import { defineConfig } from "vitest/config"

// The tests start a real `dwf serve --memory` (test/dwf-server.ts) once for all files.
export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts"],
    globalSetup: ["test/dwf-server.ts"],
    environment: "node",
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
