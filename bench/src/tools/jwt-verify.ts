// `node bench/src/tools/jwt-verify.ts [--iterations=200000] [--rounds=5]`: per-verify cost of the
// connection server's HS256 device-token verifier against fast-jwt's synchronous verifier and
// jose's (asynchronous, WebCrypto) jwtVerify, on the same valid token and on a token with a bad
// signature. Prints one line per verifier and case: the median over rounds of CPU µs per verify.
// The numbers behind docs/decisions (HS256 verifier choice).
import { parseArgs } from 'node:util';
import { hs256Verifier } from '@pushline/connection-server';
import { createVerifier } from 'fast-jwt';
import { jwtVerify, SignJWT } from 'jose';

const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '200000' },
    rounds: { type: 'string', default: '5' },
  },
});
const iterations = Number(values.iterations);
const rounds = Number(values.rounds);
const secret = 's'.repeat(48);
const key = new TextEncoder().encode(secret);

const valid = await new SignJWT({ uid: 'user-1', topics: ['news', 'scores.*'] })
  .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
  .setSubject('device-1')
  .setIssuedAt()
  .setExpirationTime('1h')
  .sign(key);
const badSignature = `${valid.slice(0, -4)}${valid.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;

const ours = hs256Verifier({ secret, clockToleranceS: 5 });
const fast = createVerifier({
  key: secret,
  algorithms: ['HS256'],
  clockTolerance: 5000,
  requiredClaims: ['exp', 'sub'],
  cache: false,
});
const fastCached = createVerifier({
  key: secret,
  algorithms: ['HS256'],
  clockTolerance: 5000,
  requiredClaims: ['exp', 'sub'],
  cache: true,
});

function timeSync(verify: (token: string) => unknown, token: string): number {
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const started = process.cpuUsage();
    for (let i = 0; i < iterations; i++) {
      try {
        verify(token);
      } catch {
        // a refused token is the case being measured
      }
    }
    samples.push(cpuMicros(started) / iterations);
  }
  return median(samples);
}

async function timeAsync(verify: (token: string) => Promise<unknown>, token: string): Promise<number> {
  const samples: number[] = [];
  const n = Math.max(1, Math.floor(iterations / 10));
  for (let r = 0; r < rounds; r++) {
    const started = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      try {
        await verify(token);
      } catch {
        // a refused token is the case being measured
      }
    }
    samples.push(cpuMicros(started) / n);
  }
  return median(samples);
}

/**
 * CPU time (user + system, this process's threads) since `since`, in µs: on a shared machine it
 * moves far less than wall time. It includes jose's WebCrypto work on the libuv pool.
 */
function cpuMicros(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return used.user + used.system;
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

const joseVerify = (token: string) => jwtVerify(token, key, { algorithms: ['HS256'], clockTolerance: 5 });
// Warm up every path before measuring.
for (let i = 0; i < 20_000; i++) {
  ours(valid);
  fast(valid);
}
const rows: [string, string, number][] = [];
for (const [name, token] of [
  ['valid', valid],
  ['bad signature', badSignature],
] as const) {
  rows.push(['hs256.ts (pushline)', name, timeSync(ours, token)]);
  rows.push(['fast-jwt (no cache)', name, timeSync(fast, token)]);
  rows.push(['fast-jwt (cache)', name, timeSync(fastCached, token)]);
  rows.push(['jose jwtVerify', name, await timeAsync(joseVerify, token)]);
}
console.log(
  `node ${process.version}, ${iterations} verifies x ${rounds} rounds (jose: a tenth), median CPU µs/verify`,
);
for (const [verifier, token, us] of rows) {
  console.log(`${verifier.padEnd(22)} ${token.padEnd(14)} ${us.toFixed(2).padStart(8)} µs`);
}
