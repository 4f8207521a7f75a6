// Untrusted text made safe to show (SEC-007): React and text nodes already keep markup
// out, but Unicode's directional controls still act inside a text node. A prompt with
// U+202E (right-to-left override) shows its words in reverse order, and can make
// "approve" read as what it is not; visible markers keep what is shown what was sent.

/** The bidirectional controls: embeddings, overrides, isolates and marks. */
const BIDI_CONTROLS = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g

/**
 * `text` with every bidirectional control character replaced by a visible marker such
 * as `[U+202E]`, so that it cannot reorder what is displayed around or after it.
 */
export function visibleText(text: string): string {
  return text.replace(BIDI_CONTROLS, (c) => `[U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}]`)
}
