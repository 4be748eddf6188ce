import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { nextFetchWait } from '@pushline/testkit';
import { World } from './harness.ts';

let world: World;
before(async () => {
  world = new World();
  await world.start();
});
after(async () => {
  await world.close();
});

// Decision 0027: idle consumers wait 500 ms per fetch; the push-request consumer, which pauses
// partitions for backpressure, keeps 100 ms.
test('the push-request consumer fetches with a 100 ms wait, the connection-event consumer with 500 ms', async () => {
  const pushRequests = nextFetchWait(world.topics.pushRequests);
  const connectionEvents = nextFetchWait(world.topics.connectionEvents);
  await world.startProcessor();
  assert.equal(await pushRequests, 100);
  assert.equal(await connectionEvents, 500);
});
