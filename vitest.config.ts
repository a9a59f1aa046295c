import { defineConfig } from 'vitest/config';

/**
 * Tests that play and record sound in real time through PulseAudio judge what a
 * listener hears (gaps, correlation): a test file beside them that keeps both cores
 * busy would make the sound card run dry and the test judge the machine, not the
 * code. They run after everything else, one file at a time.
 */
const REALTIME_AUDIO = ['tests/integration/audio_e2e.test.ts', 'tests/integration/cli_audio.test.ts', 'tests/integration/audio_devices.test.ts'];

const shared = {
  testTimeout: 30_000,
  hookTimeout: 30_000,
  pool: 'forks' as const,
};

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          ...shared,
          name: 'main',
          include: ['tests/**/*.test.ts'],
          exclude: REALTIME_AUDIO,
          // Integration tests open real sockets and processes; two workers fit this 2-core machine.
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          ...shared,
          name: 'realtime-audio',
          include: REALTIME_AUDIO,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
