import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests open real sockets and processes; two workers fit this 2-core machine.
    pool: 'forks',
    maxWorkers: 2,
  },
});
