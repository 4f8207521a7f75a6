// The client's published build under each runtime it promises (fetch only): Node, Deno
// and Bun, the last two from the npm registry (devDependencies `deno` and `bun`), each
// running test/runtimes/client-smoke.mjs against the real engine of test/dwf-server.ts.

import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { join, resolve } from "node:path"
import { promisify } from "node:util"
import { describe, expect, inject, it } from "vitest"

const ROOT = resolve(import.meta.dirname, "..", "..", "..")
const SCRIPT = join(ROOT, "test", "runtimes", "client-smoke.mjs")
const bin = (name: string): string => join(ROOT, "node_modules", ".bin", name)

const RUNTIMES: Record<string, (url: string) => string[]> = {
  node: (url) => [process.execPath, SCRIPT, url],
  deno: (url) => [bin("deno"), "run", "--allow-net", "--allow-env", "--allow-read", SCRIPT, url],
  bun: (url) => [bin("bun"), SCRIPT, url],
}

describe("the client in every runtime", () => {
  for (const [runtime, argv] of Object.entries(RUNTIMES)) {
    it(`runs an expense approval under ${runtime}`, async () => {
      const [program, ...args] = argv(inject("dwfUrl"))
      if (!program || !existsSync(program)) throw new Error(`${program} is missing: run npm ci in clients/typescript`)
      const { stdout } = await promisify(execFile)(program, args, {
        cwd: ROOT,
        timeout: 90_000,
        env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      })
      expect(stdout).toMatch(new RegExp(`^ok ${runtime} \\S+`, "m"))
    })
  }
})
