/**
 * The Xvfb test kit: a known image shown on a virtual display comes back
 * through ffmpeg's x11grab (the bundled ffmpeg) as the same pixels.
 *
 * Needs the Debian packages xvfb and xloadimage. Under CI=true their absence
 * fails these tests; elsewhere they are skipped with a loud reason.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grabFrame, showImage, startXvfb, which, SHOW_IMAGE_PACKAGE, XVFB_PACKAGE, type Xvfb } from '../kit/xvfb';

const CI = process.env.CI === 'true';
const missing = [
  which('Xvfb') ? null : `Xvfb (Debian package ${XVFB_PACKAGE})`,
  which('xloadimage') ? null : `xloadimage (Debian package ${SHOW_IMAGE_PACKAGE})`,
].filter((m): m is string => m !== null);
const skip = missing.length > 0 && !CI;
if (skip) {
  console.warn(`\n!!! SKIPPING tests/unit/xvfb_kit.test.ts: missing ${missing.join(', ')}; apt-get install -y ${[XVFB_PACKAGE, SHOW_IMAGE_PACKAGE].join(' ')}\n`);
}

const W = 1280;
const H = 800;

/** Four coloured quadrants with a horizontal gradient in red and a vertical one in blue. */
function testPattern(): Buffer {
  const px = Buffer.alloc(W * H * 3);
  const quadrant = [
    [220, 30, 30],
    [30, 200, 40],
    [40, 60, 230],
    [230, 220, 40],
  ];
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const [r, g, b] = quadrant[(x < W / 2 ? 0 : 1) + (y < H / 2 ? 0 : 2)]!;
      const i = (y * W + x) * 3;
      px[i] = (r! + Math.round((255 * x) / (W - 1))) >> 1;
      px[i + 1] = g!;
      px[i + 2] = (b! + Math.round((255 * y) / (H - 1))) >> 1;
    }
  }
  return px;
}

function meanAbsErrorPerChannel(a: Buffer, b: Buffer): [number, number, number] {
  const sum = [0, 0, 0];
  for (let i = 0; i < a.length; i++) sum[i % 3]! += Math.abs(a[i]! - b[i]!);
  const n = a.length / 3;
  return [sum[0]! / n, sum[1]! / n, sum[2]! / n];
}

describe.skipIf(skip)('xvfb kit', () => {
  let dir = '';
  let pngPath = '';
  let expected: Buffer;
  const displays: Xvfb[] = [];

  beforeAll(async () => {
    if (missing.length) throw new Error(`CI=true and a system part is missing: ${missing.join(', ')}`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvfb-kit-'));
    pngPath = path.join(dir, 'pattern.png');
    expected = testPattern();
    await sharp(expected, { raw: { width: W, height: H, channels: 3 } }).png().toFile(pngPath);
  });

  afterAll(async () => {
    await Promise.all(displays.map((d) => d.close()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('shows a known image that x11grab captures back unchanged', async () => {
    const x = await startXvfb({ width: W, height: H, depth: 24 });
    displays.push(x);
    expect(x.display).toMatch(/^:\d+$/);

    // Before the image is shown the screen is not the pattern: the comparison can tell them apart.
    const blank = await grabFrame(x.display, W, H);
    expect(Math.min(...meanAbsErrorPerChannel(blank, expected))).toBeGreaterThan(40);

    await showImage(x.display, pngPath);
    const frame = await grabFrame(x.display, W, H);
    const mae = meanAbsErrorPerChannel(frame, expected);
    expect(Math.max(...mae)).toBeLessThan(2);
  });

  it('starts displays side by side on distinct numbers and cleans up on close', async () => {
    const [a, b] = await Promise.all([startXvfb({ width: 320, height: 200 }), startXvfb({ width: 320, height: 200 })]);
    displays.push(a, b);
    expect(a.displayNumber).not.toBe(b.displayNumber);
    expect(fs.existsSync(`/tmp/.X11-unix/X${a.displayNumber}`)).toBe(true);
    await a.close();
    await a.close();
    expect(() => process.kill(a.pid, 0)).toThrow();
    expect(fs.existsSync(`/tmp/.X${a.displayNumber}-lock`)).toBe(false);
    // The other display is unaffected.
    expect((await grabFrame(b.display, 320, 200)).length).toBe(320 * 200 * 3);
  });

  it('showImage fails loudly for an unreadable image', async () => {
    const x = await startXvfb({ width: 320, height: 200 });
    displays.push(x);
    const bad = path.join(dir, 'not-an-image.png');
    fs.writeFileSync(bad, 'garbage');
    await expect(showImage(x.display, bad)).rejects.toThrow(/could not show/);
    await expect(showImage(x.display, path.join(dir, 'absent.png'))).rejects.toThrow(/ENOENT/);
  });
});
