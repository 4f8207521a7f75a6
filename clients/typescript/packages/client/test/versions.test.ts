// The packages' versions are tied to the protocol: MAJOR.MINOR of each package is the
// protocol version it speaks, the one the schemas and the reference runtime declare.

import { readFileSync } from "node:fs"
import { resolve } from "node:path"
import { describe, expect, it } from "vitest"
import { PROTOCOL_VERSION } from "../src/index.js"

const ROOT = resolve(import.meta.dirname, "..", "..", "..", "..", "..")
const json = (path: string): { version: string } => JSON.parse(readFileSync(resolve(ROOT, path), "utf8"))

describe("versions", () => {
  it("the reference runtime speaks the protocol version the client declares", () => {
    const runtime = readFileSync(resolve(ROOT, "reference/durable_workflows/__init__.py"), "utf8")
    const declared = /PROTOCOL_VERSIONS = \(([^)]*)\)/.exec(runtime)?.[1] ?? ""
    expect(declared.split(",").map((v) => v.trim().replace(/"/g, "")).filter(Boolean)).toContain(PROTOCOL_VERSION)
  })

  for (const pkg of ["client", "react"]) {
    it(`@durable-workflows/${pkg} is version ${PROTOCOL_VERSION}.x`, () => {
      const { version } = json(`clients/typescript/packages/${pkg}/package.json`)
      expect(version.split(".").slice(0, 2).join(".")).toBe(PROTOCOL_VERSION)
    })
  }
})
