// An input's schema made safe to build a form from (SEC-008).

import type { JSONSchema7 } from "json-schema"
import type { InputSchema } from "./generated/rows.js"
import { visibleText } from "./text.js"

/** What `formSchema` removed, so a page can say the form may be incomplete. */
export interface FormSchemaReport {
  /** `$ref`s to anything outside the schema, removed (never fetched). */
  remoteRefs: string[]
}

const SKIP = new Set(["$id", "$schema", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor"])

function clean(node: unknown, report: FormSchemaReport): unknown {
  if (Array.isArray(node)) return node.map((item) => clean(item, report))
  if (node === null || typeof node !== "object") return node
  const out: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(node as Record<string, unknown>)) {
    if (SKIP.has(name) || name.startsWith("ui:")) continue
    if (name === "$ref") {
      if (typeof value === "string" && value.startsWith("#")) out[name] = value
      else report.remoteRefs.push(String(value))
      continue
    }
    if ((name === "title" || name === "description") && typeof value === "string") {
      out[name] = visibleText(value) // shown as labels: no directional tricks (SEC-007)
      continue
    }
    if (name === "const" || name === "enum" || name === "default" || name === "examples") {
      out[name] = value // data, not schemas
      continue
    }
    out[name] = clean(value, report)
  }
  return out
}

/**
 * The JSON Schema object to build a form from, for an input's recorded `schema`:
 * a boolean schema becomes `{}` (any value) or `{"not": {}}` (none); every `$ref` that
 * is not local (`#...`) is removed and listed in `report`, so that nothing the schema
 * names is ever fetched; `$id`, `$schema` and `ui:*` keys are dropped, so the schema
 * cannot re-base local references or configure the form's rendering. The engine still
 * validates the answer against the schema it recorded.
 */
export function formSchema(schema: InputSchema, report: FormSchemaReport = { remoteRefs: [] }): JSONSchema7 {
  if (schema === true) return {}
  if (schema === false) return { not: {} }
  return clean(schema, report) as JSONSchema7
}
