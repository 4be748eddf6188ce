import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { SignJWT } from 'jose';
import type { Browser, Page } from 'puppeteer-core';
import { consoleEnv, parseEnv } from '@pushline/config';
import { assembleConsole, type AssembledConsole } from '@pushline/console';
import { silentLogger } from '@pushline/telemetry';
import { testKafkaClient, testSecret, waitUntil } from '@pushline/testkit';
import { launchBrowser } from '../support/browser.ts';
import { startPlatform, type Platform } from '../support/platform.ts';

/**
 * The console and the demo device in real headless Chromium, against the real platform: the demo
 * page (built on @pushline/client) connects and acks a push sent from the console, the console
 * shows the device, the delivery event and a dead-lettered record it then replays, and it lets
 * nobody in without an admin key. PUSHLINE_SCREENSHOTS_DIR=docs/images saves the screenshots
 * the README shows.
 */

let platform: Platform;
let consoleService: AssembledConsole;
let browser: Browser;
const pushOnlyKey = `push-only-${testSecret()}`;
const shots = process.env['PUSHLINE_SCREENSHOTS_DIR'];

before(async () => {
  platform = await startPlatform('console', { servers: 1, processor: true });
  const processorUrl = platform.processor?.opsUrl ?? '';
  consoleService = assembleConsole(
    parseEnv(consoleEnv, {
      ...platform.serviceEnv,
      PUSHLINE_CONSOLE_HOST: '127.0.0.1',
      PUSHLINE_CONSOLE_PORT: '0',
      PUSHLINE_CONSOLE_API_URL: platform.api.url,
      PUSHLINE_CONSOLE_SCRAPE_URLS: `push-api=${platform.api.url},message-processor=${processorUrl}`,
      PUSHLINE_CONSOLE_JAEGER_URL: 'http://jaeger.example:16686',
      PUSHLINE_API_KEYS: `${platform.apiKey}:admin,${pushOnlyKey}:push`,
    }),
    { logger: silentLogger(), kafka: testKafkaClient(`${platform.prefix}-console`) },
  );
  await consoleService.start();
  await waitUntil(() => consoleService.ready, { timeoutMs: 30_000, what: 'console feeds reading' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await consoleService?.close();
  await platform?.close();
});

const text = (page: Page, selector: string) => page.$eval(selector, (el) => el.textContent ?? '');
/** Waits until the element's text matches (the test program has no DOM types: the check is a string). */
const waitText = (page: Page, selector: string, expected: string | RegExp) => {
  const pattern =
    typeof expected === 'string' ? expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') : expected.source;
  return page.waitForFunction(
    `new RegExp(${JSON.stringify(pattern)}).test(document.querySelector(${JSON.stringify(selector)})?.textContent ?? '')`,
    { timeout: 20_000 },
  );
};
/** A textarea, as seen from the test program (which has no DOM types). */
interface TextArea {
  value: string;
  dataset: Record<string, string | undefined>;
  dispatchEvent(event: unknown): boolean;
}

async function signIn(page: Page, key: string): Promise<void> {
  await page.waitForSelector('[data-testid=login-key]');
  await page.type('[data-testid=login-key]', key);
  await page.click('[data-testid=login] button[type=submit]');
}

test('the console refuses access without an admin key and its pages carry no secret', async () => {
  const page = await browser.newPage();
  await page.goto(`${consoleService.url}/console`);
  const status = await page.evaluate(async () => (await fetch('/console/api/overview')).status);
  assert.equal(status, 401);
  await signIn(page, 'not-a-key-at-all-0000');
  await waitText(page, '[data-testid=login-error]', 'not valid');
  await signIn(page, pushOnlyKey);
  await waitText(page, '[data-testid=login-error]', 'admin scope');
  assert.equal(await page.$('[data-testid=servers]'), null, 'nothing of the platform is shown');
  const bodies = await page.evaluate(async () =>
    Promise.all(
      ['/console', '/demo', '/assets/console.js', '/assets/demo.js'].map(async (p) =>
        (await fetch(p)).text(),
      ),
    ),
  );
  const secrets = [platform.apiKey, platform.jwtSecret, platform.serviceEnv['PUSHLINE_INTERNAL_TOKEN'] ?? ''];
  for (const body of bodies)
    for (const secret of secrets) assert.ok(!body.includes(secret), 'no secret in a page or script');
  await page.close();
});

test('demo device connects, gets a console push, acks it; the console shows it online, the event, and replays a DLQ record', async () => {
  const deviceId = 'demo-browser-1';
  const token = await new SignJWT({ uid: 'demo-user' })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(deviceId)
    .setExpirationTime('10m')
    .sign(new TextEncoder().encode(platform.jwtSecret));
  const demo = await browser.newPage();
  await demo.goto(`${consoleService.url}/demo#token=${token}&url=${platform.servers[0]?.deviceUrl}`);
  await waitText(demo, '[data-testid=state]', 'connected');
  assert.ok(!demo.url().includes(token), 'the token is taken out of the address bar');

  const page = await browser.newPage();
  await page.goto(`${consoleService.url}/console`);
  await signIn(page, platform.apiKey);
  await waitText(page, '[data-testid=devices-online]', /^1$/);
  assert.match(await text(page, '[data-testid=servers]'), new RegExp(platform.servers[0]?.serverId ?? '-'));
  assert.match(await text(page, '[data-testid=servers]'), /ready/);

  // Presence lookup.
  await page.type('[data-testid=presence-id]', deviceId);
  await page.click('[data-testid=presence-id] + button');
  await waitText(page, '[data-testid=presence-result]', `online on ${platform.servers[0]?.serverId}`);

  // A direct push from the console: the demo page acks it, the answer says delivered, with a trace.
  await page.select('[data-testid=push-mode]', 'direct');
  await page.type('[data-testid=push-target]', deviceId);
  await page.click('[data-testid=push-send]');
  await waitText(page, '[data-testid=push-outcome]', /^delivered$/);
  const traceId = await text(page, '[data-testid=push-trace]');
  assert.match(traceId, /^[0-9a-f]{32}$/);
  const traceHref = await page.$eval('[data-testid=push-result] a', (a) => a.getAttribute('href'));
  assert.equal(traceHref, `http://jaeger.example:16686/trace/${traceId}`);
  await demo.waitForSelector('[data-testid=acked]', { timeout: 10_000 });
  assert.match(await text(demo, '[data-testid=messages]'), /Hello from the console/);

  // An async publish: its delivery event, from the processor through Kafka, shows in the console.
  await page.select('[data-testid=push-mode]', 'publish');
  await page.click('[data-testid=push-send]');
  await waitText(page, '[data-testid=push-outcome]', 'accepted');
  await waitText(page, '[data-testid=delivery-events]', new RegExp(`${deviceId}\\s*delivered`));
  await waitText(page, '[data-testid=identities]', 'holds');

  // A record the processor dead-letters (no createdAt); the operator fixes it and replays it.
  const producer = platform.kafka.producer();
  await producer.start();
  const bad = {
    v: 1,
    id: 'dlq-replay-1',
    target: { type: 'device', id: deviceId },
    payload: { from: 'the DLQ' },
  };
  await producer.send(platform.topics.pushRequests, [
    { key: `device:${deviceId}`, value: JSON.stringify(bad) },
  ]);
  await producer.close();
  await waitText(page, '[data-testid=dlq]', 'schema_invalid');
  const editor = await page.waitForSelector('[data-testid=dlq] textarea');
  assert.ok(editor);
  const ref = await editor.evaluate((el) => (el as unknown as TextArea).dataset['ref'] ?? '');
  assert.match(await editor.evaluate((el) => (el as unknown as TextArea).value), /dlq-replay-1/);
  // The fix: add the missing createdAt.
  await editor.evaluate((el, now) => {
    const area = el as unknown as TextArea;
    area.value = area.value.replace(/}\s*$/, `,"createdAt":${now}}`);
    area.dispatchEvent(new Event('input'));
  }, Date.now());
  await page.click(`[data-testid="dlq-replay-${ref}"]`);
  await waitText(page, `[data-testid="dlq-result-${ref}"]`, 'replayed as dlq-replay-1');
  await demo.waitForSelector('[data-testid="message-dlq-replay-1"] [data-testid=acked]', { timeout: 20_000 });

  if (shots) {
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: join(shots, 'console.png'), fullPage: true });
    await demo.screenshot({ path: join(shots, 'demo.png') });
  }
  await page.close();
  await demo.close();
});
