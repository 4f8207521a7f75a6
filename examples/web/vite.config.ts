import { defineConfig } from "vite"
import react from "@vitejs/plugin-react"

// `npm run build` writes dist/, which `dwf serve --ui examples/web/dist` serves at `/`.
// In development (`npm run dev`), /ui/session.json and /v1 go to a `dwf serve` on
// 127.0.0.1:4437 (`make run`).
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 2000 },
  server: {
    proxy: {
      "/ui": "http://127.0.0.1:4437",
      "/v1": "http://127.0.0.1:4437",
    },
  },
})
