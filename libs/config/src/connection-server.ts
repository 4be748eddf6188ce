import { z } from 'zod';
import { commonEnvShape, internalChannelClientEnvShape } from './common.ts';
import { bool, hmacKeySet, nonNegativeInt, port, positiveInt } from './fields.ts';

export const connectionServerEnv = z.object({
  ...commonEnvShape,
  ...internalChannelClientEnvShape,
  PUSHLINE_SERVER_ID: z
    .string()
    .regex(/^[a-zA-Z0-9._-]+$/, 'may only hold letters, digits, ".", "_" and "-"')
    .optional()
    .describe(
      'Stable id of this connection server. A server restarting with the same id clears its stale registry entries. Default: hostname-port.',
    ),
  PUSHLINE_HOST: z.string().default('0.0.0.0').describe('Interface the device (socket.io) port binds to.'),
  PUSHLINE_PORT: port(7070).describe('Device (socket.io) port. 0 picks a free port.'),
  PUSHLINE_INTERNAL_HOST: z
    .string()
    .default('127.0.0.1')
    .describe('Interface of the internal port (the internal channel, health, metrics).'),
  PUSHLINE_INTERNAL_PORT: port(7071).describe(
    'Internal port: the internal channel (/internal/v1/channel), /healthz, /readyz, /metrics. 0 picks a free port.',
  ),
  PUSHLINE_INTERNAL_TLS_CERT: z
    .string()
    .min(1)
    .optional()
    .describe(
      'Path of a PEM certificate (chain): the internal port serves TLS with it (channel, health and metrics alike) and its default URL becomes https. Set with PUSHLINE_INTERNAL_TLS_KEY; callers trust it through PUSHLINE_INTERNAL_TLS_CA.',
    ),
  PUSHLINE_INTERNAL_TLS_KEY: z
    .string()
    .min(1)
    .optional()
    .describe('Path of the PEM private key of PUSHLINE_INTERNAL_TLS_CERT.'),
  PUSHLINE_INTERNAL_URL: z
    .url()
    .optional()
    .describe(
      'URL other services use to reach the internal port. Default: http://<internal host>:<internal port> (https with PUSHLINE_INTERNAL_TLS_CERT).',
    ),
  PUSHLINE_PUBLIC_URL: z
    .url()
    .optional()
    .describe(
      'URL devices use to reach this server, advertised in its load report. Default: http://<host>:<port>.',
    ),
  PUSHLINE_SOCKETIO_ADAPTER: z
    .enum(['sharded', 'classic'])
    .default('sharded')
    .describe(
      'socket.io Redis adapter: sharded (Redis 7 sharded pub/sub, SPUBLISH) or classic (PUBLISH to every node).',
    ),
  PUSHLINE_SOCKETIO_SUBSCRIPTION_MODE: z
    .enum(['static', 'dynamic'])
    .default('dynamic')
    .describe(
      'Sharded adapter only: dynamic gives each topic room its own channel (a server only receives broadcasts for rooms it holds); static uses one channel per namespace.',
    ),
  PUSHLINE_MAX_PAYLOAD_BYTES: positiveInt(4096).describe(
    'Largest payload a device may send to another device (JSON bytes).',
  ),
  PUSHLINE_MAX_FRAME_BYTES: positiveInt(65536).describe(
    'Largest socket.io frame a device may send; bigger frames close the connection.',
  ),
  PUSHLINE_DEDUPE_WINDOW: positiveInt(256).describe(
    'Message ids remembered per connection so a repeated delivery of the same id is not sent twice.',
  ),
  PUSHLINE_DEVICE_JWT_CLOCK_TOLERANCE_S: nonNegativeInt(5).describe(
    'Clock skew tolerated when checking `exp`/`nbf` of device tokens.',
  ),
  PUSHLINE_ALLOW_POLLING: bool(false).describe('Also accept HTTP long-polling (WebSocket only by default).'),
  PUSHLINE_DEVICE_JWT_ALG: z
    .enum(['HS256', 'RS256', 'ES256'])
    .default('HS256')
    .describe('Algorithm of device tokens.'),
  PUSHLINE_DEVICE_JWT_SECRET: z
    .string()
    .min(32, 'must be at least 32 characters')
    .optional()
    .describe('HS256 secret for device tokens.'),
  PUSHLINE_DEVICE_JWT_PUBLIC_KEY: z
    .string()
    .optional()
    .describe('PEM public key (SPKI) for RS256/ES256 device tokens.'),
  PUSHLINE_DEVICE_JWT_JWKS_URL: z
    .url()
    .optional()
    .describe('JWKS URL for RS256/ES256 device tokens (instead of a PEM key).'),
  PUSHLINE_DEVICE_JWT_ISSUER: z.string().optional().describe('Required `iss` of device tokens, if set.'),
  PUSHLINE_DEVICE_JWT_AUDIENCE: z.string().optional().describe('Required `aud` of device tokens, if set.'),
  PUSHLINE_HANDSHAKE_TIMEOUT_MS: positiveInt(8000).describe(
    'An unauthenticated connection is closed after this long.',
  ),
  PUSHLINE_PING_INTERVAL_MS: positiveInt(25000).describe('socket.io ping interval.'),
  PUSHLINE_PING_TIMEOUT_MS: positiveInt(20000).describe('socket.io ping timeout.'),
  PUSHLINE_REGISTRY_TTL_S: positiveInt(1800).describe(
    'TTL of a registry entry; liveness refreshes it, and connections are recycled before it expires.',
  ),
  PUSHLINE_REGISTRY_REFRESH_S: positiveInt(600).describe(
    'How often the refresh loop runs. It rewrites (in one pipeline per server) only entries that would expire before their connection is recycled, so with lifetime < TTL it writes nothing. Must be below the TTL.',
  ),
  PUSHLINE_REGISTRY_RESTORE_RATE_PER_S: positiveInt(10000).describe(
    "When Redis has lost this server's registry entries (a restart without persistence), the server writes those of its live connections again at most this many per second, so servers restoring at once do not swamp the Redis that just came back.",
  ),
  PUSHLINE_MAX_CONNECTION_LIFETIME_S: positiveInt(1500).describe(
    'Connections are recycled (reconnect hint, then close) after this long, minus jitter. Must be below the registry TTL.',
  ),
  PUSHLINE_LIFETIME_JITTER_S: nonNegativeInt(180).describe(
    'Random amount subtracted from each connection lifetime, to spread reconnects.',
  ),
  PUSHLINE_IDLE_TIMEOUT_S: nonNegativeInt(0).describe(
    'Close connections with no application traffic for this long. 0 disables.',
  ),
  PUSHLINE_DELIVERY_TIMEOUT_MS: positiveInt(5000).describe(
    'Default time a device has to ack a delivered message.',
  ),
  PUSHLINE_DRAIN_WINDOW_MS: nonNegativeInt(10000).describe(
    'On SIGTERM, devices are told to reconnect after a random delay within this window.',
  ),
  PUSHLINE_CLOSE_GRACE_MS: nonNegativeInt(4000).describe(
    'Time between a reconnect hint and the server closing the socket.',
  ),
  PUSHLINE_D2D_POLICY: z
    .enum(['same-user', 'same-tenant', 'any', 'none'])
    .default('same-user')
    .describe('Which device may message which: same-user, same-tenant, any or none.'),
  PUSHLINE_D2D_RATE_PER_S: positiveInt(10).describe(
    'Device-to-device messages each device may send per second.',
  ),
  PUSHLINE_D2D_BURST: positiveInt(20).describe('Burst size of the device-to-device rate limit.'),
  PUSHLINE_LOAD_REPORT_MS: positiveInt(5000).describe(
    'How often the server writes its load report to Redis.',
  ),
  PUSHLINE_MAX_TOPICS_PER_DEVICE: positiveInt(64).describe('Topic subscriptions a device may hold.'),
  PUSHLINE_DEVICE_REQUEST_RATE_PER_S: positiveInt(5).describe(
    'subscribe, unsubscribe and refresh_token requests each device may make per second (device-to-device sends have their own limit).',
  ),
  PUSHLINE_DEVICE_REQUEST_BURST: positiveInt(80).describe(
    'Burst size of the subscribe/unsubscribe/refresh_token rate limit; at least PUSHLINE_MAX_TOPICS_PER_DEVICE, so a reconnecting device can restore its subscriptions at once.',
  ),
  PUSHLINE_CONNECT_PACKET_TIMEOUT_MS: positiveInt(2000).describe(
    'A transport that has not sent its socket.io CONNECT packet this long after opening is closed; it holds no handshake slot meanwhile.',
  ),
  PUSHLINE_MAX_PENDING_PER_ADDRESS: nonNegativeInt(256).describe(
    'Handshakes (transports opened, device not yet authenticated) one client address may have at once (an IPv6 /64 counts as one address); past it new ones get HTTP 400 before the upgrade. Behind a proxy that does not preserve client addresses, raise it or set 0 (off).',
  ),
  PUSHLINE_MAX_HEADER_BYTES: positiveInt(8192).describe(
    'Largest HTTP request head (request line and headers) the device port reads; larger ones get 431.',
  ),
  PUSHLINE_DEVICE_JWT_KEYS: hmacKeySet.describe(
    'HS256 key set for rotation: `kid1:secret1,kid2:secret2` (kid of [A-Za-z0-9._-], secrets of at least 32 characters without commas). A token with a `kid` header is verified with that key only; a token without `kid` with PUSHLINE_DEVICE_JWT_SECRET.',
  ),
  PUSHLINE_TOKEN_REFRESH_LEAD_S: positiveInt(60).describe(
    'A device gets `token_expiring` this long before its token expires, and is disconnected with `token_expired` once it has (plus the clock tolerance) unless it sent a fresh token.',
  ),
  PUSHLINE_AGENT_PORT: z.coerce
    .number()
    .int()
    .min(0)
    .max(65535)
    .optional()
    .describe(
      'Port of the load-balancer agent (HAProxy agent-check), on PUSHLINE_INTERNAL_HOST. Each check reads one line: `up ready NN%` (weight from spare capacity), `drain` from the start of a drain, `down #reason` when not ready. Unset: no agent. 0 picks a free port.',
    ),
  PUSHLINE_MAX_CONNECTIONS: positiveInt(19000).describe(
    "Connections this server is sized for. The agent's weight falls as connections approach it and is 0% (no new devices from the balancer) at it; the process's open-file limit stays the hard ceiling.",
  ),
  PUSHLINE_MAX_EVENT_LOOP_LAG_MS: positiveInt(500).describe(
    "p99 event-loop delay at which the agent's weight bottoms out (1%): a server that is slow to run its callbacks gets fewer new devices.",
  ),
});
export type ConnectionServerConfig = z.infer<typeof connectionServerEnv>;
