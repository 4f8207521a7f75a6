// Generates packages/client/src/generated/rows.ts from the protocol's JSON Schemas
// (schemas/v1), with json-schema-to-typescript, offline. Run by `npm run build` and
// `npm run typecheck`; the output is git-ignored, so the row types always follow the
// schemas of the checkout.
//
// A row is what StreamDB stores for one entity: the entity's value, plus the message
// `key` under the primary key field `key` (spec/model.md, "Materialising history in a
// browser"). The schemas say `additionalProperties: true` on entity values, because a
// receiver must accept fields that a later minor version adds; the row types close
// them (no index signature) so that a misspelt field is a compile error. Fields that
// hold any JSON value are `unknown`; an input's `schema` is `InputSchema`, a JSON
// Schema object (the JSONSchema7 type form libraries take) or a boolean schema.
//
// The schemas are resolved here, by file and JSON pointer, never through their
// absolute `$id`s: nothing is fetched.

import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { compile } from "json-schema-to-typescript"

const HERE = dirname(fileURLToPath(import.meta.url))
const SCHEMAS = resolve(process.env.DWF_SCHEMAS ?? join(HERE, "..", "..", "..", "schemas", "v1"))
const OUT = join(HERE, "..", "packages", "client", "src", "generated", "rows.ts")

const ANNOTATIONS = new Set(["title", "description", "$comment", "examples", "default"])
const DROP = new Set(["$id", "$schema", "$defs", "title", "examples", "$comment", "format"])

/** Definitions that become one named type each (file#pointer -> type name or tsType). */
const NAMED = {
  "defs/common.json#/$defs/error": { title: "WorkflowError" },
  "defs/common.json#/$defs/waiting-for": { title: "WaitingFor" },
  "defs/common.json#/$defs/json-schema": { tsType: "InputSchema" },
}

/** Extra names for fields of a row: row file#pointer -> title or tsType. */
const FIELD_NAMES = {
  "defs/run.json#/properties/status": { title: "RunStatus" },
  "defs/step.json#/properties/status": { title: "StepStatus" },
  "defs/sleep.json#/properties/status": { title: "SleepStatus" },
  "defs/input.json#/properties/status": { title: "InputStatus" },
  "input-rejected.json#/properties/value/properties/reason": { title: "RejectionReason" },
  "run-status.json#/properties/value/properties/status": { tsType: "RunStatus" },
  "run-status.json#/properties/value/properties/inputs/items": { title: "PendingInputSummary" },
  "value-recorded.json#/properties/value/properties/value": { tsType: "string | number" },
  "defs/common.json#/$defs/error/properties/details": { tsType: "{ [name: string]: unknown } | null" },
}

/** The rows: collection entity type -> [type name, file#pointer of the value schema]. */
const ROWS = [
  ["run", "RunRow", "defs/run.json#"],
  ["step", "StepRow", "defs/step.json#"],
  ["sleep", "SleepRow", "defs/sleep.json#"],
  ["input", "InputRow", "defs/input.json#"],
  ["submission", "SubmissionRow", "input-rejected.json#/properties/value"],
  ["record", "RecordRow", "value-recorded.json#/properties/value"],
  ["patch", "PatchRow", "patch-recorded.json#/properties/value"],
  ["run-status", "RunStatusRow", "run-status.json#/properties/value"],
]

const KEY_DESCRIPTION = {
  run: "The message key: the run id (equals `run_id`).",
  step: "The message key: the step's entity key (`name`, or `name#N` for the Nth step of that name).",
  sleep: "The message key: the sleep's entity key (`name`, or `name#N`).",
  input: "The message key: the request id (`name`, or `name#N`); a submission names it in `request`.",
  submission: "The message key: the inbox id of the refused message (equals `submission_id`).",
  record: "The message key: the record's entity key (`name`, or `name#N`).",
  patch: "The message key: the patch id (equals `name`).",
  "run-status": "The message key: the run id (equals `run_id`).",
}

const files = new Map()
function load(file) {
  if (!files.has(file)) {
    const path = join(SCHEMAS, file)
    if (!existsSync(path)) throw new Error(`codegen: ${path} is missing`)
    files.set(file, JSON.parse(readFileSync(path, "utf8")))
  }
  return files.get(file)
}

function pointer(document, fragment) {
  let node = document
  for (const raw of fragment.split("/").filter(Boolean)) {
    const part = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~")
    node = node?.[part]
    if (node === undefined) throw new Error(`codegen: no ${fragment}`)
  }
  return node
}

function locate(ref, baseFile) {
  const [filePart, fragment = ""] = ref.split("#")
  if (/^[a-z]+:/i.test(filePart)) throw new Error(`codegen: remote $ref ${ref} refused`)
  const file = filePart ? join(dirname(baseFile), filePart).replace(/\\/g, "/") : baseFile
  return { file, fragment, id: `${file}#${fragment}` }
}

const named = new Map()

/** A copy of `node` (at `where`, in `file`) with every $ref inlined and closed objects. */
function expand(node, file, where) {
  if (Array.isArray(node)) return node.map((item, i) => expand(item, file, `${where}/${i}`))
  if (node === null || typeof node !== "object") return node
  const id = `${file}#${where}`
  if (NAMED[id]) {
    if (!named.has(id)) {
      const extra = NAMED[id]
      named.set(id, extra.tsType ? { tsType: extra.tsType } : {
        ...expandPlain(node, file, where), title: extra.title,
      })
    }
    return named.get(id)
  }
  const out = expandPlain(node, file, where)
  const field = FIELD_NAMES[id]
  if (field?.tsType) return { tsType: field.tsType, description: out.description }
  if (field?.title) out.title = field.title
  return out
}

function expandPlain(node, file, where) {
  let out = {}
  if (typeof node.$ref === "string") {
    const target = locate(node.$ref, file)
    out = expand(pointer(load(target.file), target.fragment), target.file, target.fragment)
    if (out.tsType || out.title) {
      // a named type: keep the reference's own description only
      return node.description ? { ...out, description: node.description } : out
    }
    out = { ...out }
  }
  for (const [name, value] of Object.entries(node)) {
    if (name === "$ref" || DROP.has(name)) continue
    if (name === "allOf" || name === "if" || name === "then" || name === "else") continue
    if (name === "oneOf" && node.properties) continue // the record kinds: kept as a union of fields
    if (name === "properties") {
      out.properties = Object.fromEntries(
        Object.entries(value).map(([k, v]) => [k, expand(v, file, `${where}/properties/${k}`)]),
      )
    } else if (name === "items" || name === "additionalProperties" || name === "not") {
      out[name] = typeof value === "object" ? expand(value, file, `${where}/${name}`) : value
    } else if (name === "oneOf" || name === "anyOf") {
      out[name] = value.map((item, i) => expand(item, file, `${where}/${name}/${i}`))
    } else {
      out[name] = value
    }
  }
  const keys = Object.keys(node).filter((k) => !ANNOTATIONS.has(k))
  if (keys.length === 0) out.tsType = "unknown" // an "any JSON value" field
  if (out.properties) out.additionalProperties = false
  return out
}

const root = {
  title: "RowTypes",
  description:
    "The row type of each entity type, by the entity `type` of its change messages: what a StreamDB collection of that type holds.",
  type: "object",
  additionalProperties: false,
  required: ROWS.map(([type]) => type),
  properties: {},
}
for (const [type, name, ref] of ROWS) {
  const { file, fragment } = locate(ref, "")
  const source = pointer(load(file), fragment)
  const value = expand(source, file, fragment)
  const description = (source.description ?? load(file).description ?? "").trim()
  root.properties[type] = {
    ...value,
    title: name,
    description: `A row of the \`${type}\` collection. ${description}`.trim(),
    properties: { key: { type: "string", description: KEY_DESCRIPTION[type] }, ...value.properties },
    required: ["key", ...(value.required ?? [])],
    additionalProperties: false,
  }
}

const banner = `/* Generated by scripts/codegen.mjs from schemas/v1 with json-schema-to-typescript.
 * Do not edit: run \`npm run codegen\` in clients/typescript. */

import type { JSONSchema7 } from "json-schema"

/** The JSON Schema (2020-12) an answer must satisfy: an object, or a boolean schema
 * (\`true\` accepts any value, \`false\` none). Turn it into a form schema with
 * \`formSchema()\`, which also removes remote \`$ref\`s (SEC-008). */
export type InputSchema = JSONSchema7 | boolean
`

const ts = await compile(root, "RowTypes", {
  bannerComment: banner,
  additionalProperties: false,
  unknownAny: true,
  strictIndexSignatures: true,
  declareExternallyReferenced: true,
  format: true,
  style: { semi: false, printWidth: 100 },
})

mkdirSync(dirname(OUT), { recursive: true })
writeFileSync(OUT, ts)
console.log(`codegen: wrote ${OUT.replace(`${resolve(HERE, "..")}/`, "")}`)
