// Small display pieces. Everything from a history is shown as text (SEC-007): React
// text nodes and <pre> of JSON.stringify, never HTML.

import { useEffect, useState } from "react"
import { visibleText } from "@durable-workflows/client"

export function Status({ status }: { status: string }) {
  return <span className={`status status-${status}`}>{status}</span>
}

/** A timestamp, in the reader's time zone, with the exact value as a tooltip. */
export function When({ at }: { at: string }) {
  const date = new Date(at)
  const text = Number.isNaN(date.getTime()) ? at : date.toLocaleString()
  return (
    <time dateTime={at} title={at}>
      {text}
    </time>
  )
}

export function Json({ value }: { value: unknown }) {
  return <pre className="json">{visibleText(JSON.stringify(value, null, 2))}</pre>
}

/** The current time, updated every `ms`. */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(() => Date.now())
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms)
    return () => clearInterval(timer)
  }, [ms])
  return now
}

export function duration(ms: number): string {
  if (ms <= 0) return "now"
  const s = Math.ceil(ms / 1000)
  if (s < 60) return `${s} s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m} min ${s % 60} s`
  const h = Math.floor(m / 60)
  if (h < 48) return `${h} h ${m % 60} min`
  return `${Math.floor(h / 24)} days ${h % 24} h`
}

/** Time left until `at`, ticking. */
export function TimeLeft({ at }: { at: string }) {
  const now = useNow()
  const left = new Date(at).getTime() - now
  return <span className="time-left">{left > 0 ? `${duration(left)} left` : "due"}</span>
}
