import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { promisify } from 'node:util';
import puppeteer, { type Browser } from 'puppeteer-core';

const execFileAsync = promisify(execFile);
const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser'];

async function findChromium(): Promise<string | undefined> {
  const fromEnv = process.env['PUSHLINE_CHROMIUM'];
  for (const path of fromEnv ? [fromEnv, ...CANDIDATES] : CANDIDATES) {
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // next
    }
  }
  return undefined;
}

/**
 * Debian's Chromium, installed with apt-get when missing and we are root (as redis-server is):
 * the browser tests drive a real browser, and nothing is downloaded but Debian's package.
 */
async function ensureChromium(): Promise<string> {
  const found = await findChromium();
  if (found) return found;
  if (process.getuid?.() !== 0) {
    throw new Error(
      'chromium was not found: install it (Debian: apt-get install -y chromium) or set PUSHLINE_CHROMIUM',
    );
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await execFileAsync('apt-get', ['update', '-qq'], { env, maxBuffer: 32 * 1024 * 1024 });
  await execFileAsync('apt-get', ['install', '-y', '-qq', 'chromium'], { env, maxBuffer: 64 * 1024 * 1024 });
  const installed = await findChromium();
  if (!installed) throw new Error('apt-get installed chromium, but it is not at /usr/bin/chromium');
  return installed;
}

/** Headless Chromium through puppeteer-core (no browser download), sandbox off as tests run as root. */
export async function launchBrowser(): Promise<Browser> {
  return puppeteer.launch({
    executablePath: await ensureChromium(),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
    defaultViewport: { width: 1400, height: 1000 },
  });
}
