// Plain fetch helpers: credentials, bounded backoff, errors.

/** A bearer token, or a function that returns the current one (called for every
 * request, so a page can refresh a short-lived token). `null`: send no credential. */
export type TokenSource = string | null | (() => string | null | Promise<string | null>)

/** Where the namespace is and how to reach it. */
export interface Connection {
  /** The namespace URL, e.g. `https://app.example/v1/stream/workflows`. A relative URL
   * (`/v1/stream/workflows`, as `/ui/session.json` gives it) is resolved against the
   * page's location. */
  namespace: string | URL
  /** The client token (SEC-025, SEC-026). */
  token?: TokenSource
  /** A fetch to use instead of `globalThis.fetch`. */
  fetch?: typeof globalThis.fetch
}

/** The stream server refused the credential (401) or the right (403). Not retried. */
export class AccessError extends Error {
  override readonly name = "AccessError"
  constructor(
    readonly status: number,
    readonly url: string,
    readonly body: string,
  ) {
    super(`${status} ${status === 401 ? "Unauthorized" : "Forbidden"} for ${url}${body ? `: ${body}` : ""}`)
  }
}

/** An HTTP answer the client cannot act on (400, 413, a 409 without Stream-Closed...). */
export class HttpError extends Error {
  override readonly name = "HttpError"
  constructor(
    readonly status: number,
    readonly url: string,
    readonly body: string,
  ) {
    super(`HTTP ${status} for ${url}${body ? `: ${body}` : ""}`)
  }
}

/** Nothing came within the time the caller allowed. Safe to retry with the same id. */
export class TimeoutError extends Error {
  override readonly name = "TimeoutError"
}

/** The namespace URL without a trailing slash, resolved against the page's location. */
export function namespaceUrl(namespace: string | URL): string {
  let base: string | undefined
  try {
    // Deno throws on `location` when started without --location
    base = (globalThis as { location?: { href?: string } }).location?.href
  } catch {
    base = undefined
  }
  const url = base === undefined ? new URL(namespace) : new URL(namespace, base)
  return url.href.replace(/\/+$/, "")
}

/** The URL of a stream of the namespace: `{ns}/runs/{id}/history`, `{ns}/status`... */
export function streamUrl(namespace: string | URL, ...segments: string[]): string {
  return [namespaceUrl(namespace), ...segments.map(encodeURIComponent)].join("/")
}

export async function resolveToken(token: TokenSource | undefined): Promise<string | null> {
  if (token === undefined || token === null) return null
  return typeof token === "function" ? await token() : token
}

export async function authHeaders(token: TokenSource | undefined): Promise<Record<string, string>> {
  const value = await resolveToken(token)
  return value ? { Authorization: `Bearer ${value}` } : {}
}

/** Headers for a StreamDB stream: a function, so that every read presents the current token. */
export function streamHeaders(token: TokenSource | undefined): Record<string, string | (() => Promise<string>)> {
  if (token === undefined || token === null) return {}
  if (typeof token === "string") return { Authorization: `Bearer ${token}` }
  return { Authorization: async () => `Bearer ${(await token()) ?? ""}` }
}

export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError")
}

/** Waits `ms`, or rejects when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal))
      return
    }
    const done = (): void => {
      signal?.removeEventListener("abort", onAbort)
      resolve()
    }
    const timer = setTimeout(done, ms)
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(abortReason(signal as AbortSignal))
    }
    signal?.addEventListener("abort", onAbort, { once: true })
  })
}

/** Delays of a bounded exponential backoff: 50 ms, doubling, at most 1 s. */
export function backoff(attempt: number): number {
  return Math.min(1000, 50 * 2 ** attempt)
}

export function deadlineFrom(timeoutMs: number): number {
  return Date.now() + timeoutMs
}

export function remaining(deadline: number): number {
  return Math.max(0, deadline - Date.now())
}

export async function bodyText(response: Response): Promise<string> {
  try {
    return (await response.text()).slice(0, 500)
  } catch {
    return ""
  }
}

export function fetcher(connection: Pick<Connection, "fetch">): typeof globalThis.fetch {
  return connection.fetch ?? globalThis.fetch.bind(globalThis)
}

export function isStreamClosed(response: Response): boolean {
  return response.headers.get("Stream-Closed")?.toLowerCase() === "true"
}

/** Network failures and answers worth trying again with the same message. */
export function retryable(status: number): boolean {
  return status === 404 || status === 408 || status === 425 || status === 429 || status >= 500
}
