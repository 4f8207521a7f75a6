// Vitest global setup: a real engine, `dwf serve --memory --port 0` on 127.0.0.1, with
// authentication on (the default) and a `--ui` folder so that /ui/session.json hands
// out a client token. Stopped (SIGTERM to the process this setup started) at the end.

import { spawn, type ChildProcess } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import type { TestProject } from "vitest/node"

declare module "vitest" {
  export interface ProvidedContext {
    dwfUrl: string
  }
}

const REPO = resolve(import.meta.dirname, "..", "..", "..")
const DWF = process.env.DWF_BIN ?? join(REPO, ".venv", "bin", "dwf")

let child: ChildProcess | undefined
let folder: string | undefined

export async function setup(project: TestProject): Promise<void> {
  if (!existsSync(DWF)) throw new Error(`${DWF} is missing: run \`make install\` (or set DWF_BIN)`)
  folder = mkdtempSync(join(tmpdir(), "dwf-ts-ui-"))
  writeFileSync(join(folder, "index.html"), "<!doctype html><title>tests</title>")
  const proc = spawn(
    DWF,
    ["serve", "--memory", "--host", "127.0.0.1", "--port", "0", "--long-poll-timeout", "5", "--ui", folder],
    { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] },
  )
  child = proc
  let stderr = ""
  proc.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const url = await new Promise<string>((ok, fail) => {
    let out = ""
    const timer = setTimeout(() => fail(new Error(`dwf serve did not start in 30 s:\n${stderr}`)), 30_000)
    proc.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      const line = out.split("\n").find((l) => l.startsWith("ready "))
      if (line) {
        clearTimeout(timer)
        ok(line.split(" ")[1] as string)
      }
    })
    proc.on("exit", (code) => {
      clearTimeout(timer)
      fail(new Error(`dwf serve exited with ${code}:\n${stderr}`))
    })
  })
  project.provide("dwfUrl", url)
}

export async function teardown(): Promise<void> {
  const proc = child
  if (proc && proc.exitCode === null) {
    const exited = new Promise((ok) => proc.once("exit", ok))
    proc.kill("SIGTERM")
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000)
    await exited
    clearTimeout(timer)
  }
  if (folder) rmSync(folder, { recursive: true, force: true })
}
