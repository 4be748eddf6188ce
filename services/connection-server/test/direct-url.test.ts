import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { directDeviceUrl } from '../src/server.ts';

describe('directDeviceUrl: the device port as other hosts reach this server', () => {
  it("takes the internal URL's host and the device port's scheme and port", () => {
    assert.equal(directDeviceUrl('http://10.1.2.3:7071', 'http://127.0.0.1:7070'), 'http://10.1.2.3:7070');
    // TLS on the internal channel says nothing about the device port.
    assert.equal(
      directDeviceUrl('https://cs-1.internal:7071', 'http://127.0.0.1:7070'),
      'http://cs-1.internal:7070',
    );
  });

  it('keeps an IPv6 host bracketed', () => {
    assert.equal(directDeviceUrl('http://[fd00::1]:7071', 'http://127.0.0.1:7070'), 'http://[fd00::1]:7070');
  });

  it('is the listening URL itself on a single host', () => {
    assert.equal(
      directDeviceUrl('http://127.0.0.1:41001', 'http://127.0.0.1:41000'),
      'http://127.0.0.1:41000',
    );
  });
});
