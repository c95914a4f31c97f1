/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The admin API serves the build from src/sagakit/api/static at "/". Relative asset URLs
// keep it working wherever that is mounted. `npm run dev` proxies /api to a running
// admin API (SAGAKIT_ADMIN_URL, default http://127.0.0.1:8000).
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: {
    outDir: "../src/sagakit/api/static",
    emptyOutDir: true,
    // ECharts is most of the main chunk; the admin API serves it from the same host.
    chunkSizeWarningLimit: 1400,
  },
  server: {
    proxy: { "/api": process.env.SAGAKIT_ADMIN_URL ?? "http://127.0.0.1:8000" },
  },
  test: {
    environment: "jsdom",
    globals: true,
    setupFiles: ["./test/setup.ts"],
    include: ["test/**/*.test.{ts,tsx}"],
    restoreMocks: true,
    // jsdom renders slowly on a busy two-core machine; a stuck test still fails.
    testTimeout: 20_000,
  },
});
