import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ConfigError,
  connectionServerEnv,
  describeEnv,
  messageProcessorEnv,
  parseEnv,
  pushApiEnv,
  topicNames,
} from '@pushline/config';

const base = { PUSHLINE_INTERNAL_TOKEN: 'x'.repeat(32) };

test('defaults apply when variables are unset or empty', () => {
  const config = parseEnv(messageProcessorEnv, { ...base, PUSHLINE_TOPIC_PREFIX: '' });
  assert.equal(config.PUSHLINE_TOPIC_PREFIX, 'pushline.');
  assert.equal(config.PUSHLINE_KAFKA_PARTITIONS, 12);
});

test('a bad value fails with the variable name in the message', () => {
  assert.throws(
    () =>
      parseEnv(pushApiEnv, {
        ...base,
        PUSHLINE_API_KEYS: 'k'.repeat(20) + ':admin',
        PUSHLINE_API_PORT: 'eighty',
      }),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.variables.includes('PUSHLINE_API_PORT') &&
      err.message.includes('PUSHLINE_API_PORT'),
  );
});

test('every bad variable is named at once, including missing required ones', () => {
  assert.throws(
    () => parseEnv(connectionServerEnv, { PUSHLINE_REDIS_URL: 'http://not-redis', PUSHLINE_PORT: '-1' }),
    (err: unknown) =>
      err instanceof ConfigError &&
      ['PUSHLINE_REDIS_URL', 'PUSHLINE_PORT', 'PUSHLINE_INTERNAL_TOKEN'].every((v) =>
        err.variables.includes(v),
      ),
  );
});

test('csv variables split and trim', () => {
  const config = parseEnv(messageProcessorEnv, { ...base, PUSHLINE_KAFKA_BROKERS: ' a:1 , b:2,' });
  assert.deepEqual(config.PUSHLINE_KAFKA_BROKERS, ['a:1', 'b:2']);
});

test('describeEnv reports defaults and required variables', () => {
  const docs = describeEnv(pushApiEnv);
  const port = docs.find((d) => d.name === 'PUSHLINE_API_PORT');
  assert.equal(port?.default, '8080');
  assert.equal(docs.find((d) => d.name === 'PUSHLINE_INTERNAL_TOKEN')?.required, true);
  assert.ok(
    docs.every((d) => d.description.length > 0),
    'every variable is documented',
  );
});

test('topic names derive from the prefix', () => {
  assert.deepEqual(topicNames('t1.'), {
    connectionEvents: 't1.connection-events',
    pushRequests: 't1.push-requests',
    pushRequestsDlq: 't1.push-requests.dlq',
    deliveryEvents: 't1.delivery-events',
  });
});
